"""What a level costs to run: parameters (all, and nonzero) and multiply-adds per example.

ShrinkBench reports a pruned network by its nonzero parameters, its FLOPs and the theoretical
speed-up; here FLOPs are multiply-adds (MACs) for one example at the resolution the level trains
at: those of the conv and linear layers, the layers pruning acts on, and a transformer's
attention products, which no weight mask removes. Biases, norms, activations and softmax are left
out. This is the convention of fvcore and of timm's published GMACs (DeiT-Tiny 1.3 G, DeiT-Small
4.6 G at 224 px, which the DeiT paper reports too; ResNet-50 4.1 G).

A conv or linear layer spends one multiply-add per weight at every output position it is applied
at (a conv: each pixel of its output map; a linear: each token, once for a plain vector), so its
dense MACs are weight.numel() x positions and its sparse MACs nonzero weights x positions: the
count a sparse kernel that skips zeros would do. Positions are measured with forward hooks on one
example, so strides, padding, pooling and any module applied twice count as they run.

Self-attention over N tokens of width C (heads x head_dim) multiplies queries by keys (QK^T) and
the attention weights by values (AV): N x N x C multiply-adds each, per attention call. They are
products of activations, not of weights, so pruning does not shrink them: they count in `flops`
as in `flops_dense`, and cap the theoretical speed-up (a DeiT-Tiny with every prunable weight
gone still spends its attention products: about 7x at most at 224 px, 5.4x at 95 % sparsity).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer.pruning.masks import PRUNABLE_TYPES


def _is_attention(module: nn.Module) -> bool:
    """timm's self-attention (DeiT, ViT): a qkv projection split into num_heads x head_dim."""
    return (
        isinstance(getattr(module, "num_heads", None), int)
        and isinstance(getattr(module, "head_dim", None), int)
        and isinstance(getattr(module, "qkv", None), nn.Module)
    )


@torch.no_grad()
def forward_counts(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict[str, int], int]:
    """One forward pass of one example: for each conv and linear weight (by parameter name), the
    output positions it is applied at, summed over calls; and the attention products' multiply-
    adds (QK^T and AV, every head and call: 2 x N x N x heads x head_dim for N tokens). The
    model's modes are restored; no state changes (eval mode: batch norm statistics stay)."""
    names = {
        id(m): f"{n}.weight" if n else "weight"
        for n, m in model.named_modules()
        if isinstance(m, PRUNABLE_TYPES) and isinstance(getattr(m, "weight", None), nn.Parameter)
    }
    positions: dict[str, int] = {}
    attention = 0

    def hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        channels = module.out_channels if isinstance(module, nn.modules.conv._ConvNd) else module.out_features
        positions[names[id(module)]] = positions.get(names[id(module)], 0) + out.numel() // channels

    def attention_hook(module: nn.Module, inp: tuple[Any, ...], _out: Any) -> None:
        nonlocal attention
        x = inp[0]  # (1, tokens, channels)
        tokens = int(x.shape[-2])
        attention += 2 * tokens * tokens * int(module.num_heads) * int(module.head_dim)

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook) for m in model.modules() if id(m) in names]
    handles += [m.register_forward_hook(attention_hook) for m in model.modules() if _is_attention(m)]
    try:
        model.eval()
        p = next(model.parameters())
        model(torch.zeros((1, *input_shape), device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return positions, attention


@torch.no_grad()
def level_cost(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """params, nonzero_params (every parameter: weights, biases, norms), network_sparsity (the
    fraction of them at zero), flops_dense / flops (MACs per example: conv and linear layers,
    dense and with zeros skipped, plus the attention products, which no mask removes) and
    flops_attention (those products alone), at `input_shape`: the training resolution."""
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    nonzero = sum(int(torch.count_nonzero(p)) for p in params.values())
    dense = sparse = 0
    positions, attention = forward_counts(model, input_shape)
    for name, n in positions.items():
        w = params[name]
        dense += w.numel() * n
        sparse += int(torch.count_nonzero(w)) * n
    return {
        "params": total,
        "nonzero_params": nonzero,
        "network_sparsity": 1.0 - nonzero / total if total else 0.0,
        "flops_dense": dense + attention,
        "flops": sparse + attention,
        "flops_attention": attention,
    }
