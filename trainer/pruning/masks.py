"""Masks: which weights are prunable, applying a mask, keeping pruned weights at zero, measuring.

A mask is plain state, `{parameter name: bool tensor of the weight's shape}` (True = kept), keyed
by `model.named_parameters()` of the unwrapped model, so it can be saved with `torch.save`.
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

Mask = dict[str, torch.Tensor]

# nn.Linear covers timm's attention (qkv, proj), MLP (fc1, fc2) and head layers, which are plain
# nn.Linear instances; timm's patch embedding is an nn.Conv2d.
PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

# nn.MultiheadAttention (torchvision's ViT and Swin... ) keeps its input projections as bare
# parameters, not Linear modules: the packed q/k/v one, or three when the embed sizes differ. Its
# output projection is an nn.Linear child (out_proj) and counts as one.
MHA_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def layer_names(model: nn.Module) -> list[str]:
    """Names of conv and linear weights, in module order (biases, norms and embeddings excluded):
    those of conv and linear modules, and the input projections of nn.MultiheadAttention (before
    its out_proj)."""
    params = dict(model.named_parameters())
    names = []
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(module, PRUNABLE_TYPES) and isinstance(getattr(module, "weight", None), nn.Parameter):
            found = [f"{prefix}weight"]
        elif isinstance(module, nn.MultiheadAttention):
            found = [f"{prefix}{w}" for w in MHA_WEIGHTS if isinstance(getattr(module, w, None), nn.Parameter)]
        else:
            continue
        # a module registered twice (shared) appears once in named_modules
        names += [n for n in found if n in params]
    return names


FIRST, LAST = "<first>", "<last>"  # in prune.layers_to_ignore: the first and last such layer


def ignored_names(names: list[str], patterns: list[str] | tuple[str, ...]) -> set[str]:
    """The weights `prune.layers_to_ignore` keeps dense: each pattern is a parameter name
    (`fc.weight`), a module name (`fc`), an fnmatch glob of either (`layers.*.conv1`), or `<first>`
    / `<last>`. A pattern that matches no conv or linear weight is an error (a typo would
    otherwise prune what the user meant to keep)."""
    out: set[str] = set()
    for pat in patterns:
        if pat in (FIRST, LAST):
            hit = names[:1] if pat == FIRST else names[-1:]
        else:
            hit = [
                n
                for n in names
                if fnmatch.fnmatchcase(n, pat) or fnmatch.fnmatchcase(n.removesuffix(".weight"), pat)
            ]
        if not hit:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ValueError(
                f"prune.layers_to_ignore: {pat!r} matches no conv or linear weight; "
                f"they are: {shown} (or <first>, <last>)"
            )
        out.update(hit)
    return out


def prunable_names(
    model: nn.Module, keep_first_last_dense: bool = False, layers_to_ignore: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """The weights pruning may touch, in module order: conv and linear weights, less the first and
    last with keep_first_last_dense, less those layers_to_ignore names."""
    names = layer_names(model)
    ignored = ignored_names(names, layers_to_ignore) if layers_to_ignore else set()
    if keep_first_last_dense:
        names = names[1:-1]
    return [n for n in names if n not in ignored]


def full_mask(
    model: nn.Module, keep_first_last_dense: bool = False, layers_to_ignore: list[str] | tuple[str, ...] = ()
) -> Mask:
    params = dict(model.named_parameters())
    return {
        n: torch.ones_like(params[n], dtype=torch.bool)
        for n in prunable_names(model, keep_first_last_dense, layers_to_ignore)
    }


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mask) -> None:
    """Set pruned weights to exactly 0 (masked_fill, not multiply: inf/nan times 0 is not 0)."""
    params = dict(model.named_parameters())
    for name, m in mask.items():
        p = params[name]
        p.masked_fill_(~m.to(p.device), 0)


class MaskEnforcer:
    """Keeps masked weights exactly zero: call it right after every `optimizer.step()`.

    Why re-zeroing after the step rather than the alternatives:
    - a gradient hook (zero the masked gradient) is not enough: SGD momentum buffers carry older
      non-zero gradients, and weight decay / AdamW's decoupled decay and Adam's first moment move
      a weight even when its current gradient is zero, so a pruned weight would drift off zero;
    - a parametrization (weight = raw * mask in forward) is exact in the forward pass but costs a
      multiply and an extra autograd node on every forward, changes the parameter names
      (".parametrizations.weight.original") that masks and checkpoints are keyed by, and leaves the
      raw stored tensor non-zero, so checkpoints and `achieved_sparsity` would lie;
    - one `torch._foreach_mul_` over the masked weights after the step is a single fused launch
      per step (a multi-tensor kernel on GPU), needs no autograd changes and makes the stored
      weights exactly what the mask says whatever the optimizer did. The forward right after is
      therefore exact too. (A masked weight may become -0.0, which compares equal to 0.)
    Float masks are precomputed once per (device, dtype) so the step costs no conversions.
    """

    def __init__(self, model: nn.Module, mask: Mask):
        params = dict(model.named_parameters())
        # Only layers that actually have a pruned weight need work each step.
        self.names = [n for n, m in mask.items() if not bool(m.all())]
        self.params = [params[n] for n in self.names]
        self._bool_masks = [mask[n] for n in self.names]
        self._float_masks: list[torch.Tensor] = []
        self._build()

    def _build(self) -> None:
        self._float_masks = [m.to(device=p.device, dtype=p.dtype) for m, p in zip(self._bool_masks, self.params)]

    @torch.no_grad()
    def __call__(self) -> None:
        if not self.params:
            return
        p0, m0 = self.params[0], self._float_masks[0]
        if p0.device != m0.device or p0.dtype != m0.dtype:  # model moved or cast after construction
            self._build()
        torch._foreach_mul_(self.params, self._float_masks)


def mask_density(mask: Mask) -> float:
    """Fraction of the masked (prunable) weights that are kept."""
    total = sum(m.numel() for m in mask.values())
    return float(sum(int(m.sum()) for m in mask.values()) / total) if total else 1.0


def layer_densities(mask: Mask) -> dict[str, float]:
    return {n: float(m.sum()) / m.numel() for n, m in mask.items()}


@torch.no_grad()
def achieved_sparsity(model: nn.Module, names: list[str]) -> float:
    """Fraction of exactly-zero weights among `names`: what is really in the model."""
    params = dict(model.named_parameters())
    total = sum(params[n].numel() for n in names)
    zeros = sum(int((params[n] == 0).sum()) for n in names)
    return zeros / total if total else 0.0
