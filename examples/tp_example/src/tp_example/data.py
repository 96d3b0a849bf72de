"""A digits-derived map-style data set: scikit-learn's bundled 8x8 digits (no download), a fixed
80/20 split, optionally shifted by up to `shift` pixels at random in training (drawn from torch's
global generator, which turboprune seeds per example, epoch and run seed)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class Digits(Dataset):
    num_classes = 10

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, shift: int = 0) -> None:
        self.images, self.labels, self.shift = images, labels, shift

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.shift:
            dx, dy = (int(v) for v in torch.randint(-self.shift, self.shift + 1, (2,)))
            x = torch.roll(x, shifts=(dy, dx), dims=(1, 2))
        return x, int(self.labels[i])


def digits(shift: int = 0):
    """(train, test): 1,438 and 359 images of shape (1, 8, 8), standardised by the train set."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    test = torch.arange(len(y)) % 5 == 4
    mean, std = x[~test].mean(), x[~test].std()
    x = (x - mean) / std
    return Digits(x[~test], y[~test], shift), Digits(x[test], y[test])
