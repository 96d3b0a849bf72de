"""A tiny CNN: turboprune builds it as TinyCNN(num_classes=..., input_shape=(C, H, W), **model
options of the spec), and prunes its conv and linear weights."""

from __future__ import annotations

from torch import nn


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], width: int = 8) -> None:
        super().__init__()
        channels = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))
