"""Model registry: `build_model(cfg, num_classes, input_shape)` by name.

Builders take `(num_classes, input_shape, **options)` where `input_shape` is (C, H, W) and the
options are the remaining keys of the trainer config's "model" section. A lab's model is named by
its import path (`model.name: "mylab.models:TinyNet"`) and called the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from core.plugins import PluginError, is_ref, load, source_of, split_ref

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = fn
        return fn

    return deco


def build_model(cfg: dict, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """A built-in model by name, or a zoo's (`torchvision/<arch>`, `timm/<name>`: models/zoo.py)."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if is_ref(name):  # a lab's model: module:callable (core/plugins.py)
        builder: Callable[..., nn.Module] = load(str(name), "model")
        where = source_of(builder, split_ref(str(name))[0])
        try:
            model = builder(num_classes=num_classes, input_shape=tuple(input_shape), **cfg)
        except PluginError:
            raise
        except Exception as exc:  # noqa: BLE001 - the lab's builder failed: one line that says where
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise PluginError(f"model {name!r} ({where}) raised {type(exc).__name__}: {first}") from exc
        if not isinstance(model, nn.Module):
            raise PluginError(f"model {name!r} ({where}) returned a {type(model).__name__}, not a torch.nn.Module")
        return model
    if isinstance(name, str) and zoo.split(name):
        builder = functools.partial(zoo.build, name)
    elif name in MODELS:
        builder = MODELS[name]
    else:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}, or torchvision/<arch>, timm/<name>")
    try:
        return builder(num_classes=num_classes, input_shape=tuple(input_shape), **cfg)
    except TypeError as exc:  # an option the builder does not take
        raise ValueError(f"bad options for model {name!r}: {exc}") from exc


# Imported for their @register side effects (after MODELS and register exist).
from trainer.models import small, cifar_resnet, torchvision_models, vgg, vit, zoo  # noqa: E402,F401,I001
