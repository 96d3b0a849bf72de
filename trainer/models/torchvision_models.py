"""torchvision ResNet-18/50 (weights=None), with the CIFAR stem for small inputs.

For inputs of at most 64 px the 7x7 stride-2 stem and the max-pool would shrink a 32x32 image
to 8x8 before the first block, so they are replaced by a 3x3 stride-1 conv and no max-pool.
"""

from __future__ import annotations

from torch import nn

from trainer.models import register

SMALL_INPUT_PX = 64


def _adapt_stem(model: nn.Module, input_shape: tuple[int, int, int]) -> nn.Module:
    c, h, w = input_shape
    if max(h, w) <= SMALL_INPUT_PX:
        model.conv1 = nn.Conv2d(c, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif c != 3:
        model.conv1 = nn.Conv2d(c, 64, 7, 2, 3, bias=False)
    else:
        return model
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
    return model


def _builder(arch: str):
    def build(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
        import torchvision  # lazy: only these two models need it

        model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        return _adapt_stem(model, input_shape)

    return build


for _arch in ("resnet18", "resnet50"):
    register(_arch)(_builder(_arch))
