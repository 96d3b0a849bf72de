"""Model zoos by name (`torchvision/<arch>`, `timm/<name>`): built with random weights for the data
set's classes and input, prunable, trainable; names and input sizes checked at launch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.models import build_model
from trainer.models.zoo import fits, names
from trainer.pruning.masks import (
    MHA_WEIGHTS,
    PRUNABLE_TYPES,
    MaskEnforcer,
    achieved_sparsity,
    apply_mask,
    full_mask,
    mask_density,
    prunable_names,
)
from trainer.pruning.methods import PruneContext, prune_magnitude

# A sample of timm's families: resnet, efficientnet, convnext, vit/deit, swin, mobilenetv3, regnet.
TIMM_SAMPLE = [
    "resnet18",
    "efficientnet_b0",
    "convnext_atto",
    "vit_tiny_patch16_224",
    "deit_tiny_patch16_224",
    "swin_tiny_patch4_window7_224",
    "mobilenetv3_small_050",
    "regnetx_002",
    "maxvit_tiny_tf_224",
    "levit_128s",
]
ALL = [f"torchvision/{n}" for n in names("torchvision")] + [f"timm/{n}" for n in TIMM_SAMPLE]
SIDES = (16, 28, 32, 56, 64, 112, 128, 224, 299)  # tried in turn: the smallest that fits is used
# Parameters; above it a model is built and stepped on the meta device (shapes, no values): the
# VGGs' 100M+ weights took 30-60 s each on one CPU thread, mostly initialising and ranking them.
BIG = 100_000_000
SKIP = {
    "torchvision/regnet_y_128gf": "644M parameters are too many for a CPU test machine, and RegNet's "
    "builder computes its widths with tensors, so it cannot be built on the meta device either",
}


def _smallest_shape(name: str) -> tuple[int, int, int]:
    for side in SIDES:
        if fits(name, [(3, side, side)]) is None:
            return (3, side, side)
    raise AssertionError(f"{name} fits none of {SIDES} px")


def _meta_params(name: str, shape: tuple[int, int, int]) -> int | None:
    try:
        with torch.device("meta"):
            return sum(p.numel() for p in build_model({"name": name}, 10, shape).parameters())
    except Exception:  # noqa: BLE001 - a builder that computes with tensors: count on the CPU
        return None


def _conv_linear_weights(model: nn.Module) -> set[str]:
    """Every weight that is a convolution or a linear map, found independently of masks.py."""
    out = set()
    for mod_name, m in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(m, PRUNABLE_TYPES):
            out.add(f"{prefix}weight")
        elif isinstance(m, nn.MultiheadAttention):
            out |= {f"{prefix}{w}" for w in MHA_WEIGHTS if getattr(m, w, None) is not None}
    return out & set(dict(model.named_parameters()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_every_zoo_model_prunes_and_trains_one_step(name):
    """One magnitude step at 50 % and one SGD step (2 images, 10 classes, the smallest input the
    model takes) with the mask enforced; models over BIG parameters on the meta device."""
    if name in SKIP:
        pytest.skip(SKIP[name])
    shape = _smallest_shape(name)
    n_params = _meta_params(name, shape)
    device = "meta" if n_params and n_params > BIG else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = build_model({"name": name}, 10, shape)
    names_ = prunable_names(model)
    assert set(names_) == _conv_linear_weights(model) and len(names_) >= 2
    mask = full_mask(model)
    if device == "cpu":
        mask = prune_magnitude(model, mask, 0.5, PruneContext(cfg={}, generator=torch.Generator()))
        assert mask_density(mask) == pytest.approx(0.5, abs=1e-6)
    apply_mask(model, mask)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    x = torch.randn(2, *shape, device=device)
    y = torch.tensor([1, 7], device=device)
    out = model(x)
    assert out.shape == (2, 10)
    nn.functional.cross_entropy(out, y).backward()
    opt.step()
    if device == "cpu":
        MaskEnforcer(model, mask)()
        assert achieved_sparsity(model, list(mask)) == pytest.approx(0.5, abs=1e-6)
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_random_weights_classes_and_input():
    torch.manual_seed(0)
    a = build_model({"name": "torchvision/resnet18"}, 7, (1, 32, 32))
    torch.manual_seed(1)
    b = build_model({"name": "torchvision/resnet18"}, 7, (1, 32, 32))
    assert not torch.equal(a.conv1.weight, b.conv1.weight)  # random, not pretrained
    assert a.conv1.in_channels == 1 and a.conv1.stride == (1, 1) and isinstance(a.maxpool, nn.Identity)
    assert a.fc.out_features == 7
    vit = build_model({"name": "timm/vit_tiny_patch16_224"}, 5, (3, 32, 32))
    assert vit.patch_embed.img_size == (32, 32) and vit.head.out_features == 5
    assert vit(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    mnet = build_model({"name": "torchvision/mobilenet_v3_small"}, 3, (1, 8, 8))
    assert mnet(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_unknown_zoo_name_and_options():
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet19'"):
        build_model({"name": "torchvision/resnet19"}, 10, (3, 32, 32))
    with pytest.raises(ValueError, match="take no options"):
        build_model({"name": "timm/resnet18", "hidden": [3]}, 10, (3, 32, 32))
    with pytest.raises(ValueError, match=r"or torchvision/<arch>, timm/<name>"):
        build_model({"name": "keras/resnet18"}, 10, (3, 32, 32))


def test_fits_refuses_what_cannot_take_the_input():
    assert "cannot run on 32x32 px" in fits("torchvision/alexnet", [(3, 32, 32)])
    assert "indivisible by patch size" in fits("torchvision/vit_h_14", [(3, 32, 32)])
    assert "Kernel size: (16 x 16)" in fits("timm/vit_tiny_patch16_224", [(1, 8, 8)])
    assert fits("torchvision/resnet18", [(1, 8, 8)]) is None  # the CIFAR stem
    assert fits("torchvision/alexnet", [(3, 224, 224)]) is None
    # the test shape first, then the training ones (progressive resizing)
    assert "cannot run on 32x32" in fits("torchvision/alexnet", [(3, 224, 224), (3, 32, 32)])


def test_zoo_cost_or_none():
    from trainer.level_trainer import COST_KEYS, _cost_or_none

    model = build_model({"name": "torchvision/squeezenet1_1"}, 10, (3, 32, 32))
    cost = _cost_or_none(model, (3, 32, 32))
    assert cost["flops_dense"] > 0 and cost["params"] == sum(p.numel() for p in model.parameters())
    assert _cost_or_none(model, (3, 1, 1)) == dict.fromkeys(COST_KEYS)  # cannot run: null, no crash


# ---- at launch --------------------------------------------------------------------------------
def _zoo_spec(name: str, model: str, **data):
    from tests.sweeputil import tiny_spec

    spec = tiny_spec(name)
    over = spec["trainer"]["overrides"]
    del over["model.hidden"]  # the mlp's option; zoo models take none
    over.update({"model": "lenet", "model.name": model, "data": "synthetic", "data.shape": [3, 32, 32]})
    over.update({f"data.{k}": v for k, v in data.items()})
    return spec


def test_dry_run_checks_zoo_names(tmp_path):
    from tests.sweeputil import tp, write_spec

    def dry(name: str, model: str):
        return tp("launch", str(write_spec(tmp_path, _zoo_spec(name, model))), "--dry-run", cwd=tmp_path)

    ok = dry("zok", "torchvision/resnet18")
    assert ok.returncode == 0, ok.stderr
    bad = dry("zbad", "torchvision/resnet19")
    assert bad.returncode == 2
    assert "has no model 'resnet19'; closest: torchvision/resnet18" in " ".join(bad.stderr.split())
    assert not list(tmp_path.glob("tp-*")), "a dry run creates nothing"


def test_preflight_refuses_a_model_that_cannot_take_the_input():
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.preflight import PreflightError, check_plan, input_shapes
    from orchestrator.plan.spec import parse_spec

    with pytest.raises(PreflightError, match=r"'torchvision/alexnet' cannot run on 32x32 px inputs"):
        check_plan(plan_sweep(parse_spec(_zoo_spec("zalex", "torchvision/alexnet"))))
    with pytest.raises(PreflightError, match=r"model.hidden: model 'timm/resnet18' does not take it"):
        spec = _zoo_spec("zopt", "timm/resnet18")
        spec["trainer"]["overrides"]["model.hidden"] = [3]
        check_plan(plan_sweep(parse_spec(spec)))
    check_plan(plan_sweep(parse_spec(_zoo_spec("zfine", "timm/resnet18"))))
    assert input_shapes({"name": "imagenet", "resolution": 192, "min_res": 160, "val_resolution": 256}) == [
        (3, 256, 256),
        (3, 160, 160),
        (3, 192, 192),
    ]
    assert input_shapes({"name": "digits"}) == [(1, 8, 8)]
    assert input_shapes({"name": "beton", "recipe": "cifar"}) is None


@pytest.mark.slow
def test_tiny_zoo_sweep_trains(tmp_path):
    """A real sweep of a timm model on synthetic 32 px data: a dense level, then a pruned one."""
    from tests.sweeputil import tp, write_spec

    spec = _zoo_spec("zreal", "timm/mobilenetv3_small_050", size=64, test_size=32, batch_size=16)
    spec["grid"] = {"method": ["imp"], "sparsity": [0.5], "seed": [0]}
    tp("launch", str(write_spec(tmp_path, spec)), cwd=tmp_path, check=True)
    import json

    rows = json.loads(tp("query", "zreal", "--levels", "--format", "json", cwd=tmp_path, check=True).stdout)
    assert [r["achieved_sparsity"] for r in rows] == [0.0, pytest.approx(0.5, abs=1e-3)]
    assert all(r["flops_dense"] and r["test_acc"] is not None for r in rows)
