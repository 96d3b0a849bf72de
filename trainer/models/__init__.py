"""Model registry: `build_model(cfg, num_classes, input_shape)` by name.

Builders take `(num_classes, input_shape, **options)` where `input_shape` is (C, H, W) and the
options are the remaining keys of the trainer config's "model" section.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = fn
        return fn

    return deco


def build_model(cfg: dict, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    try:
        return MODELS[name](num_classes=num_classes, input_shape=tuple(input_shape), **cfg)
    except TypeError as exc:  # an option the builder does not take
        raise ValueError(f"bad options for model {name!r}: {exc}") from exc


# Imported for their @register side effects (after MODELS and register exist).
from trainer.models import small, cifar_resnet, torchvision_models, vgg, vit  # noqa: E402,F401,I001
