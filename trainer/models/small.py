"""Small models for tests and toy data: an MLP and a LeNet-style conv net."""

from __future__ import annotations

import math

from torch import nn

from trainer.models import register


@register("mlp")
def mlp(
    num_classes: int,
    input_shape: tuple[int, ...],
    hidden: list[int] | tuple[int, ...] = (128, 128),
    batch_norm: bool = False,
) -> nn.Module:
    """Flatten, then Linear(+BatchNorm1d with batch_norm)+ReLU per hidden width, then the
    classifier."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        norm = [nn.BatchNorm1d(int(h))] if batch_norm else []
        layers += [nn.Linear(width, int(h)), *norm, nn.ReLU(inplace=True)]
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register("lenet")
def lenet(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """LeNet-5 shape (conv 6, conv 16, fc 120, fc 84) with 'same' padding so 8x8 digits work:
    8x8 -> 4x4 -> 2x2 and 32x32 -> 16x16 -> 8x8 before the classifier."""
    c, h, w = input_shape
    if h < 4 or w < 4:
        raise ValueError(f"lenet needs inputs of at least 4x4, got {h}x{w}")
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * (h // 4) * (w // 4), 120),
        nn.ReLU(inplace=True),
        nn.Linear(120, 84),
        nn.ReLU(inplace=True),
        nn.Linear(84, num_classes),
    )
