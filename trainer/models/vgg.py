"""CIFAR VGG with batch norm: the VGG conv stack, global average pooling, one linear classifier.

The 4096-wide ImageNet classifier is dropped (as in the usual CIFAR variants): at 32x32 the conv
stack ends at 1x1x512. A max-pool is skipped once the feature map is 1 px, so small inputs
(e.g. 8x8) also work.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models import register

CONFIGS = {
    "vgg11_bn": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16_bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19_bn": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}


class VGG(nn.Module):
    def __init__(self, layout: list, num_classes: int, input_shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for v in layout:
            if v == "M":
                if min(h, w) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _builder(name: str):
    def build(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
        return VGG(CONFIGS[name], num_classes, input_shape)

    return build


for _name in CONFIGS:
    register(_name)(_builder(_name))
