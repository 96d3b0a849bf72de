"""DeiT (timm), randomly initialised; never downloads weights.

img_size comes from the input shape; inputs of at most 64 px use 4x4 patches (a 32x32 image
gives 64 tokens, as 224/16 gives 196) instead of 16x16 ones, which would leave 4 tokens.
"""

from __future__ import annotations

from torch import nn

from trainer.models import register

SMALL_INPUT_PX = 64


def _builder(timm_name: str):
    def build(num_classes: int, input_shape: tuple[int, int, int], patch_size: int | None = None) -> nn.Module:
        import timm  # lazy: slow to import and only needed here

        c, h, w = input_shape
        if patch_size is None:
            patch_size = 4 if max(h, w) <= SMALL_INPUT_PX else 16
        return timm.create_model(
            timm_name,
            pretrained=False,
            num_classes=num_classes,
            img_size=(h, w),
            patch_size=patch_size,
            in_chans=c,
        )

    return build


register("deit_tiny")(_builder("deit_tiny_patch16_224"))
register("deit_small")(_builder("deit_small_patch16_224"))
