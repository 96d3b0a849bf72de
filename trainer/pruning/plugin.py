"""A lab's criterion (core/method_decl.py), run as the built-in ones are.

The step's `plugin` block names the function (`fn`) and what it returns:

- `scores`: `fn(model, ctx) -> {name: tensor}`, one score per prunable weight (the weight's shape);
  the top ones among the weights kept now are kept, to the exact count, globally or per layer
  (`scope`), by the code that selects for magnitude and SNIP (trainer/pruning/methods.py);
- `masks`: `fn(model, ctx) -> {name: bool tensor}`, kept within the current mask and at the
  target count to within one weight per layer.

The function gets a copy of the model (its weights, grads, buffers and modes are its to change)
and a `PluginContext`. Under DDP a criterion that reads data runs on every rank on its part of
the same global batches: `ctx.average` (the mean over the ranks; the identity on one process)
turns a per-rank gradient into the global batch's, as SNIP does. A function that fails, or
returns the wrong names, shapes, NaN or infinite scores, or a mask off its target, raises a
PluginError that names the plugin, its file and the problem: the job fails and is not retried.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from core.plugins import PluginError, load, source_of, split_ref
from trainer.pruning.masks import Mask
from trainer.pruning.methods import PruneContext, _select, total_keep


@dataclass
class PluginContext:
    """What a lab's criterion gets besides the model."""

    mask: Mask  # the weights kept now: {name: bool tensor}; the prunable weights are its names
    density: float  # the fraction of the mask's weights to keep after this step
    params: dict[str, Any]  # the declaration's params
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None  # reads_data: this rank's part
    loss_fn: Callable[..., torch.Tensor]
    generator: torch.Generator  # seeded by the level: for random draws
    input_shape: tuple[int, ...]  # (C, H, W)
    average: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda t: t)  # mean over ranks

    @property
    def keep(self) -> int:
        """The exact number of weights the new mask keeps."""
        return total_keep(self.mask, self.density)


def prune_plugin(model: nn.Module, mask: Mask, density: float, ctx: PruneContext) -> Mask:
    block = ctx.cfg["plugin"]
    ref = str(block["fn"])
    name = str(ctx.cfg.get("criterion"))
    what = f"pruning method {name!r}: {block['returns']} function"
    fn = load(ref, what)
    where = source_of(fn, split_ref(ref)[0])
    pctx = PluginContext(
        mask={n: m.clone() for n, m in mask.items()},
        density=density,
        params=dict(block.get("params") or {}),
        batches=ctx.batches,
        loss_fn=ctx.loss_fn or nn.CrossEntropyLoss(),
        generator=ctx.generator,
        input_shape=tuple(ctx.cfg.get("input_shape") or ()),
        average=ctx.average or (lambda t: t),
    )
    work = copy.deepcopy(model)  # whatever the function does to it stays there
    try:
        out = fn(work, pctx)
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 - the lab's function failed: say so in one line
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise PluginError(f"{what} {ref!r} ({where}) raised {type(exc).__name__}: {first}") from exc
    out = _checked(out, mask, f"{what} {ref!r} ({where})", block["returns"])
    if block["returns"] == "scores":
        return _select(out, mask, density, {"scope": block.get("scope", "global")})
    new = {n: out[n].to(device=mask[n].device, dtype=torch.bool) for n in mask}
    outside = sum(int((new[n] & ~mask[n]).sum()) for n in mask)
    if outside:
        raise PluginError(f"{what} {ref!r} ({where}): its mask keeps {outside} weights the current mask prunes")
    kept, target = sum(int(m.sum()) for m in new.values()), total_keep(mask, density)
    if abs(kept - target) > len(mask):
        raise PluginError(
            f"{what} {ref!r} ({where}): its mask keeps {kept} weights; the target is {target} "
            f"(density {density:g}), to within one weight per layer ({len(mask)})"
        )
    return new


def _checked(out: Any, mask: Mask, who: str, returns: str) -> dict[str, torch.Tensor]:
    if not isinstance(out, dict):
        raise PluginError(f"{who}: returned a {type(out).__name__}, not a dict of {returns} by weight name")
    missing = [n for n in mask if n not in out]
    extra = [str(n) for n in out if n not in mask]
    if missing or extra:
        raise PluginError(
            f"{who}: its {returns} are not one per prunable weight"
            + (f"; missing {', '.join(missing[:3])}" if missing else "")
            + (f"; not prunable: {', '.join(extra[:3])}" if extra else "")
        )
    for n, m in mask.items():
        t = out[n]
        if not isinstance(t, torch.Tensor):
            raise PluginError(f"{who}: {returns} of {n} is a {type(t).__name__}, not a tensor")
        if tuple(t.shape) != tuple(m.shape):
            raise PluginError(f"{who}: {returns} of {n} have shape {tuple(t.shape)}, the weight {tuple(m.shape)}")
        if returns == "scores" and not bool(torch.isfinite(t.detach()).all()):
            bad = "NaN" if bool(torch.isnan(t.detach()).any()) else "infinite"
            raise PluginError(f"{who}: {bad} scores for {n}")
    return out
