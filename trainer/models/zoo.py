"""Model zoos by name: `torchvision/<arch>` (every classification model of torchvision) and
`timm/<name>` (every timm model), randomly initialised (never pretrained), with the data set's
number of classes and input channels.

Input sizes, per family (docs/extending.md, "Models by name"):
- torchvision ResNets (resnet*, resnext*, wide_resnet*): the CIFAR stem of the built-in
  resnet18/50 for inputs of at most 64 px (a 3x3 stride-1 conv, no max-pool);
- torchvision ViTs (vit_*) get `image_size`, MaxViT `input_size`: the data set's size (ViTs need
  a square side that their patch divides);
- every other torchvision model, and every timm convnet, runs as built: a stride-32 network ends
  at 1x1 on 32 px inputs; one that cannot take the size at all (AlexNet, Inception v3 on 32 px) is
  refused at launch by `fits`;
- timm models whose pretrained config says `fixed_input_size` (ViT, DeiT, Swin, MaxViT...) get
  `img_size` = the data set's size; their patch size is the one in their name.
Inception v3 and GoogLeNet are built without their auxiliary heads (the trainer's loss takes one
output). torchvision and timm are imported on first use only.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from core.zoo import ZOOS, split


def names(zoo: str) -> list[str]:
    """Every model name the library lists (imports it: torch, seconds; timm, another second)."""
    if zoo == "torchvision":
        import torchvision  # lazy: torch (seconds)

        # module=torchvision.models: classification only (detection, segmentation, video,
        # optical flow and quantized models live in submodules).
        return sorted(torchvision.models.list_models(module=torchvision.models))
    if zoo == "timm":
        import timm  # lazy: torch (seconds)

        return sorted(timm.list_models())
    raise ValueError(f"unknown model zoo {zoo!r}; known: {', '.join(ZOOS)}")


def build(name: str, num_classes: int, input_shape: tuple[int, int, int], **options: Any) -> nn.Module:
    """The zoo model `name` ("torchvision/resnet18", "timm/convnext_atto") for `input_shape`."""
    parts = split(name)
    if parts is None:
        raise ValueError(f"{name!r} is not a zoo model name (torchvision/<arch> or timm/<name>)")
    if options:
        raise TypeError(f"zoo models take no options, got {', '.join(sorted(options))}")
    zoo, arch = parts
    if arch not in names(zoo):
        raise ValueError(f"unknown {zoo} model {arch!r}")
    if zoo == "torchvision":
        return _torchvision(arch, num_classes, tuple(input_shape))
    return _timm(arch, num_classes, tuple(input_shape))


def _torchvision(arch: str, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    import torchvision  # lazy: torch (seconds)

    from trainer.models.torchvision_models import _adapt_stem  # torchvision: only for its models

    c, h, w = input_shape
    kwargs: dict[str, Any] = {}
    if arch.startswith("vit_"):
        if h != w:
            raise ValueError(f"torchvision/{arch} takes square inputs only, got {h}x{w}")
        kwargs["image_size"] = h
    elif arch == "maxvit_t":
        kwargs["input_size"] = (h, w)
    elif arch in ("inception_v3", "googlenet"):
        kwargs.update(aux_logits=False, init_weights=True)  # init_weights: torchvision's own, no warning
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    if isinstance(model, torchvision.models.ResNet):
        return _adapt_stem(model, input_shape)
    if c != 3:
        _set_in_channels(model, c)
    return model


def _set_in_channels(model: nn.Module, channels: int) -> None:
    """Replace the first conv (the stem, in module order) by one that takes `channels`."""
    first = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first[1].groups != 1:
        raise ValueError(f"{type(model).__name__} has no plain stem conv to take {channels} input channels")
    name, conv = first
    parent_name, _, attr = name.rpartition(".")
    new = nn.Conv2d(
        channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def _timm(arch: str, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    import timm  # lazy: torch (seconds)

    c, h, w = input_shape
    kwargs: dict[str, Any] = {}
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is not None and getattr(cfg, "fixed_input_size", False):
        kwargs["img_size"] = (h, w)
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=c, **kwargs)


def fits(name: str, input_shapes: list[tuple[int, int, int]]) -> str | None:
    """Why the zoo model cannot run on inputs of these shapes (the first is the one it is built
    for, the data set's test shape; the others are what training feeds it), or None when it can.
    Built and run on the meta device: no memory, no weights, well under a second. A model whose
    forward has no meta kernel cannot be checked here: None (the job tells)."""
    import torch  # lazy: torch (seconds)

    try:
        with torch.device("meta"):
            model = build(name, 10, input_shapes[0])
    except NotImplementedError:
        return None
    except (ValueError, TypeError, AssertionError, RuntimeError) as exc:
        if "meta" in str(exc):  # its builder computes with tensors (RegNet's widths): not checkable here
            return None
        return f"cannot be built for {_px(input_shapes[0])} inputs: {_first_line(exc)}"
    model.train()  # as in training: batch norm on batch statistics
    for shape in dict.fromkeys(input_shapes):
        try:
            model(torch.empty((2, *shape), device="meta"))
        except NotImplementedError:
            return None  # an op without a meta kernel: not checkable here
        except (RuntimeError, ValueError, AssertionError, TypeError, IndexError) as exc:
            return f"cannot run on {_px(shape)} inputs: {_first_line(exc)}"
    return None


def _px(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[2]} px" + (f" ({shape[0]}-channel)" if shape[0] != 3 else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."
