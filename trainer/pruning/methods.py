"""Pruners: `pruner(model, mask, density, ctx) -> new mask`.

Shared rules: `density` is the overall fraction of the mask's weights kept after the call;
the new mask is a subset of the old one (selection happens only among currently kept weights;
the one exception is the layerwise random control, which redraws each layer whole);
the model's weights, grads, buffers, hooks and train/eval modes are left as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.density import (
    balanced_densities,
    cap_counts,
    counts_for,
    erk_densities,
    uniform_densities,
)
from trainer.pruning.masks import Mask


@dataclass
class PruneContext:
    cfg: dict  # the trainer config's "prune" section
    generator: torch.Generator  # CPU generator for the random methods, seeded by the caller
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # on the model's device
    loss_fn: Callable | None = None  # defaults to cross-entropy
    # Under DDP, for a criterion that reads data: the mean of a tensor over the ranks (every rank
    # calls the pruner on its part of the same global batches). None: one process.
    average: Callable[[torch.Tensor], torch.Tensor] | None = None


# ---------------------------------------------------------------------------------------------
# helpers


def total_keep(mask: Mask, density: float) -> int:
    """Exact number of weights to keep; never more than the mask keeps now."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    total = sum(m.numel() for m in mask.values())
    kept = sum(int(m.sum()) for m in mask.values())
    return min(kept, round(density * total))


def shapes_of(mask: Mask) -> dict[str, tuple[int, ...]]:
    return {n: tuple(m.shape) for n, m in mask.items()}


def kept_counts(mask: Mask) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in mask.items()}


def topk_global(scores: dict[str, torch.Tensor], mask: Mask, k: int) -> Mask:
    """Keep the k highest-scoring weights among those the mask keeps now (exact count).

    Only currently kept positions are candidates, so the result is a subset whatever the
    scores are (NaN or -inf scores included: NaN is ranked lowest).
    """
    names = list(mask)
    flat_mask = torch.cat([mask[n].reshape(-1) for n in names])
    flat_score = torch.cat([scores[n].detach().reshape(-1).to(flat_mask.device, torch.float64) for n in names])
    flat_score = torch.nan_to_num(flat_score, nan=-float("inf"))
    kept_pos = flat_mask.nonzero().squeeze(1)
    new_flat = torch.zeros_like(flat_mask)
    if k > 0:
        sel = torch.topk(flat_score[kept_pos], k, sorted=False).indices
        new_flat[kept_pos[sel]] = True
    out, start = {}, 0
    for n in names:
        numel = mask[n].numel()
        out[n] = new_flat[start : start + numel].view_as(mask[n])
        start += numel
    return out


def topk_per_layer(scores: dict[str, torch.Tensor], mask: Mask, counts: dict[str, int]) -> Mask:
    return {n: topk_global({n: scores[n]}, {n: mask[n]}, counts[n])[n] for n in mask}


def _uniform_counts(mask: Mask, density: float) -> dict[str, int]:
    """Same density in every layer, integer counts summing exactly to the global keep count."""
    shapes = shapes_of(mask)
    target = counts_for(shapes, uniform_densities(shapes, density), total_keep(mask, density))
    return cap_counts(target, kept_counts(mask))


def _select(scores: dict[str, torch.Tensor], mask: Mask, density: float, cfg: dict) -> Mask:
    scope = cfg.get("scope", "global")
    if scope == "global":
        return topk_global(scores, mask, total_keep(mask, density))
    if scope == "layerwise":
        return topk_per_layer(scores, mask, _uniform_counts(mask, density))
    raise ValueError(f"unknown prune scope {scope!r}; known: global, layerwise")


# ---------------------------------------------------------------------------------------------
# pruners


def prune_dense(model: nn.Module, mask: Mask, density: float, ctx: PruneContext) -> Mask:
    return mask


@torch.no_grad()
def prune_magnitude(model: nn.Module, mask: Mask, density: float, ctx: PruneContext) -> Mask:
    """IMP family: keep the largest |w| among the currently kept weights."""
    params = dict(model.named_parameters())
    scores = {n: params[n].abs() for n in mask}
    return _select(scores, mask, density, ctx.cfg)


def prune_snip(model: nn.Module, mask: Mask, density: float, ctx: PruneContext) -> Mask:
    """SNIP (Lee et al. 2019): score |g * w| at the current masked weights, the gradient summed
    over `snip_batches` batches (the same as one larger batch), then top-k (global by default).
    Under DDP every rank scores its part of each global batch and the gradients are averaged
    (ctx.average) before the top-k: the scores are the global batch's, whatever the rank count.

    Runs through `torch.func.functional_call` on detached copies of the weights and cloned
    buffers, so the model's weights, .grad fields and BN running statistics are untouched. The
    model is put in train mode (BN uses batch statistics, as during training) and restored.
    """
    if ctx.batches is None or len(ctx.batches) == 0:
        raise ValueError("snip needs data batches (ctx.batches is None)")
    loss_fn = ctx.loss_fn or F.cross_entropy
    n_batches = int(ctx.cfg.get("snip_batches", 1))
    params = {n: p.detach() for n, p in model.named_parameters()}
    masked = {n: (params[n] * mask[n].to(params[n].device)).requires_grad_(True) for n in mask}
    params.update(masked)
    grads = {n: torch.zeros_like(w) for n, w in masked.items()}
    modes = {m: m.training for m in model.modules()}
    model.train()
    try:
        for x, y in ctx.batches[:n_batches]:
            buffers = {n: b.clone() for n, b in model.named_buffers()}  # BN stats updates land here
            out = torch.func.functional_call(model, {**params, **buffers}, (x,))
            g = torch.autograd.grad(loss_fn(out, y), list(masked.values()), allow_unused=True)
            for n, gi in zip(masked, g):
                if gi is not None:
                    grads[n] += gi
    finally:
        for m, mode in modes.items():
            m.training = mode
    if ctx.average is not None:  # each rank's gradient is its part's: their mean is the batch's
        flat = ctx.average(torch.cat([grads[n].reshape(-1) for n in masked]))
        grads = dict(zip(masked, flat.split([grads[n].numel() for n in masked])))
        grads = {n: g.view_as(masked[n]) for n, g in grads.items()}
    scores = {n: (grads[n] * masked[n].detach()).abs() for n in masked}
    return _select(scores, mask, density, ctx.cfg)


def _random_prune(mask: Mask, density: float, ctx: PruneContext, densities: dict[str, float]) -> Mask:
    """Keep a uniformly random subset of each layer's kept weights, with exact per-layer counts.

    Counts come from the layer-density distribution; a layer that keeps fewer weights now than
    its new count keeps them all, and `cap_counts` moves the shortfall to other layers.
    """
    shapes = shapes_of(mask)
    target = counts_for(shapes, densities, total_keep(mask, density))
    counts = cap_counts(target, kept_counts(mask))
    new = {}
    for n, m in mask.items():
        kept_pos = m.reshape(-1).nonzero().squeeze(1)
        perm = torch.randperm(kept_pos.numel(), generator=ctx.generator)[: counts[n]]
        flat = torch.zeros(m.numel(), dtype=torch.bool, device=m.device)
        flat[kept_pos[perm.to(m.device)]] = True
        new[n] = flat.view_as(m)
    return new


def prune_random_erk(model: nn.Module, mask: Mask, density: float, ctx: PruneContext) -> Mask:
    shapes = shapes_of(mask)
    power = float(ctx.cfg.get("erk_power_scale", 1.0))
    return _random_prune(mask, density, ctx, erk_densities(shapes, density, power))


def prune_random_balanced(model: nn.Module, mask: Mask, density: float, ctx: PruneContext) -> Mask:
    return _random_prune(mask, density, ctx, balanced_densities(shapes_of(mask), density))


def prune_random_uniform(model: nn.Module, mask: Mask, density: float, ctx: PruneContext) -> Mask:
    return _random_prune(mask, density, ctx, uniform_densities(shapes_of(mask), density))


# ---------------------------------------------------------------------------------------------
# the lottery-ticket controls: below the level serving a target, `mask` is that level's mask


def prune_reinit(model: nn.Module, mask: Mask, density: float, ctx: PruneContext) -> Mask:
    """imp_reinit: the mask stays; the trainer then loads a fresh initialisation (rewind reinit)."""
    return {n: m.clone() for n, m in mask.items()}


def prune_random_layerwise(model: nn.Module, mask: Mask, density: float, ctx: PruneContext) -> Mask:
    """imp_layerwise_random: in each layer, as many weights as `mask` keeps there, drawn uniformly
    among all of the layer's weights (open_lth's layerwise random pruning). The one pruner whose
    result is not a subset of its input: it redistributes within each layer."""
    new = {}
    for n, m in mask.items():
        k = int(m.sum())
        perm = torch.randperm(m.numel(), generator=ctx.generator)[:k]
        flat = torch.zeros(m.numel(), dtype=torch.bool, device=m.device)
        flat[perm.to(m.device)] = True
        new[n] = flat.view_as(m)
    return new
