"""What a level costs to run: parameters (all, and nonzero) and multiply-adds per example.

ShrinkBench reports a pruned network by its nonzero parameters, its FLOPs and the theoretical
speed-up; here FLOPs are multiply-adds (MACs) of the conv and linear layers, the layers pruning
acts on, for one example at the data set's input size (other operations, biases and the
attention products of a transformer are left out, as in the usual conventions).

A conv or linear layer spends one multiply-add per weight at every output position it is applied
at (a conv: each pixel of its output map; a linear: each token, once for a plain vector), so its
dense MACs are weight.numel() x positions and its sparse MACs nonzero weights x positions: the
count a sparse kernel that skips zeros would do. Positions are measured with forward hooks on one
example, so strides, padding, pooling and any module applied twice count as they run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer.pruning.masks import PRUNABLE_TYPES


@torch.no_grad()
def layer_positions(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """For each conv and linear weight (by parameter name), the output positions per example it is
    applied at, summed over calls. The model's modes are restored; no state changes (eval mode:
    batch norm statistics stay as they are)."""
    names = {
        id(m): f"{n}.weight" if n else "weight"
        for n, m in model.named_modules()
        if isinstance(m, PRUNABLE_TYPES) and isinstance(getattr(m, "weight", None), nn.Parameter)
    }
    positions: dict[str, int] = {}

    def hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        channels = module.out_channels if isinstance(module, nn.modules.conv._ConvNd) else module.out_features
        positions[names[id(module)]] = positions.get(names[id(module)], 0) + out.numel() // channels

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook) for m in model.modules() if id(m) in names]
    try:
        model.eval()
        p = next(model.parameters())
        model(torch.zeros((1, *input_shape), device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return positions


@torch.no_grad()
def level_cost(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """params, nonzero_params (every parameter: weights, biases, norms), network_sparsity (the
    fraction of them at zero), and flops_dense / flops (MACs per example, conv and linear)."""
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    nonzero = sum(int(torch.count_nonzero(p)) for p in params.values())
    dense = sparse = 0
    for name, n in layer_positions(model, input_shape).items():
        w = params[name]
        dense += w.numel() * n
        sparse += int(torch.count_nonzero(w)) * n
    return {
        "params": total,
        "nonzero_params": nonzero,
        "network_sparsity": 1.0 - nonzero / total if total else 0.0,
        "flops_dense": dense,
        "flops": sparse,
    }
