"""Per-channel normalisation: the data sets' mean and std (0..255 scale, as FFCV's NormalizeImage
takes them), and the normalisation the device-resident loaders apply to uint8 NHWC batches."""

from __future__ import annotations

import torch

CIFAR_MEAN = (125.307, 122.961, 113.8575)
CIFAR_STD = (51.5865, 50.847, 51.255)
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


class Normalise:
    def __init__(self, mean, std, device: torch.device) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, x_nhwc: torch.Tensor) -> torch.Tensor:
        # permute is a view: NCHW indexing over NHWC memory, i.e. channels_last strides, which
        # float() and the in-place ops keep.
        return x_nhwc.permute(0, 3, 1, 2).float().sub_(self.mean).mul_(self.inv_std)
