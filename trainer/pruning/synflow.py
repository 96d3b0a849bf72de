"""SynFlow (Tanaka et al. 2020): data-free, iterative synaptic-flow pruning at initialisation.

Each of `synflow_rounds` rounds (default 100) on a float64 deep copy of the model:
  weights <- |theta| * mask, input = all ones, R = sum of outputs,
  score = |theta * dR/dtheta|, keep the global top-k at this round's density,
with the exponential schedule density_k = start * (density / start)^(k / n), k = 1..n, so the
last round lands exactly on `density`. Pruning a little at a time lets scores be recomputed
after each removal, which is what avoids layer collapse.

Biases are set to 0 in the copy (every other parameter becomes |theta|). SynFlow's conservation
law (each layer's scores sum to R) holds for bias-free networks; a positive bias injects flow in
the middle of the network, so early layers starve and collapse anyway. Measured here on a
12-layer MLP with a width-4 bottleneck at 2% density: 100 rounds with |bias| left 5 layers empty,
with zero biases none. (The authors' code takes |bias| instead; this is the deliberate difference.)

Normalisation layers: the copy is in eval mode and every BatchNorm gets running_mean = 0 and
running_var = 1 (|gamma|, and beta = 0 as a bias), i.e. BN becomes a positive per-channel scale.
That keeps the network a positive, bias-free map from a positive input (what the conservation
argument needs), is data-free, and does not depend on whatever statistics the model has
accumulated. LayerNorm (ViTs) is left as is: it has no data-free positive form, and
SynFlow's theory does not cover attention anyway; the method still runs and is exact in count.

Overflow: R is a sum over input-output paths of products of |weights|, so it grows
geometrically with depth (about 1e80 for a ResNet-56 at init, beyond float32's 3e38). The copy is
computed in float64 (max ~1e308). Per-layer rescaling is deliberately not used: in a plain
chain every path crosses every layer once, so scaling layer l by c_l multiplies R and every
score by the same prod(c_l) (ranking unchanged); but residual connections make paths that skip
layers, which such a scaling would weight differently, changing the ranking. A non-finite R
raises instead of silently producing a bad mask.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from trainer.pruning.masks import Mask, mask_density
from trainer.pruning.methods import PruneContext, topk_global

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _input_shape(ctx: PruneContext) -> tuple[int, ...]:
    if ctx.batches:
        return tuple(ctx.batches[0][0].shape[1:])
    shape = ctx.cfg.get("input_shape")
    if shape is None:
        raise ValueError("synflow needs the model's input shape: give a batch or cfg['input_shape']")
    return tuple(shape)


@torch.no_grad()
def _linearize(net: nn.Module) -> None:
    """|theta| everywhere, biases 0, BN running statistics reset so BN is a positive scale."""
    for name, p in net.named_parameters():
        if name.rsplit(".", 1)[-1] == "bias":
            p.zero_()
        else:
            p.abs_()
    for m in net.modules():
        if isinstance(m, _NORMS) and m.track_running_stats and m.running_mean is not None:
            m.running_mean.zero_()
            m.running_var.fill_(1.0)


def synflow_scores(net: nn.Module, mask: Mask, ones: torch.Tensor) -> dict[str, torch.Tensor]:
    """One SynFlow scoring pass on an already linearised float64 copy (modified: mask applied)."""
    params = dict(net.named_parameters())
    with torch.no_grad():
        for n, m in mask.items():
            params[n].mul_(m.to(params[n].device, params[n].dtype))
    for p in net.parameters():
        p.grad = None
    out = net(ones)
    r = out.sum()
    if not torch.isfinite(r):
        raise FloatingPointError(f"SynFlow objective is not finite in float64 ({r.item()}); network too deep")
    r.backward()
    return {n: (params[n].grad * params[n]).abs().detach() for n in mask}


def prune_synflow(model: nn.Module, mask: Mask, density: float, ctx: PruneContext) -> Mask:
    rounds = int(ctx.cfg.get("synflow_rounds", 100))
    if rounds < 1:
        raise ValueError("synflow_rounds must be >= 1")
    start = mask_density(mask)
    if density >= start:
        return {n: m.clone() for n, m in mask.items()}
    total = sum(m.numel() for m in mask.values())
    device = next(model.parameters()).device
    net = copy.deepcopy(model).double().eval()  # the real model is never touched
    net.requires_grad_(True)
    _linearize(net)
    ones = torch.ones((1, *_input_shape(ctx)), dtype=torch.float64, device=device)
    current = {n: m.clone() for n, m in mask.items()}
    for k in range(1, rounds + 1):
        # start * (density / start)^(k / n); density 0 goes straight to 0 on the first round
        d_k = density if (k == rounds or density == 0) else start * (density / start) ** (k / rounds)
        scores = synflow_scores(net, current, ones)
        current = topk_global(
            scores, current, min(round(d_k * total), sum(int(m.sum()) for m in current.values()))
        )
    del net
    return current
