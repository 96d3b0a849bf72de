"""Model registry: every model builds offline and runs at small inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.models import MODELS, build_model, register
from trainer.pruning.masks import prunable_names

EXPECTED = {
    "mlp", "lenet", "resnet20", "resnet32", "resnet56", "resnet18", "resnet50",
    "vgg11_bn", "vgg16_bn", "vgg19_bn", "deit_tiny", "deit_small",
}  # fmt: skip


def test_registry_has_every_model():
    assert set(MODELS) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8)], ids=["32px", "8px"])
def test_builds_and_forwards(name, shape):
    torch.manual_seed(0)
    model = build_model({"name": name}, 7, shape)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    assert len(prunable_names(model)) >= 2


def test_unknown_model_names_known_ones():
    with pytest.raises(ValueError, match=r"unknown model 'nope'; known: .*resnet20.*deit_small"):
        build_model({"name": "nope"}, 10, (3, 32, 32))
    with pytest.raises(ValueError, match="unknown model"):
        build_model({}, 10, (3, 32, 32))


def test_bad_option_is_value_error():
    with pytest.raises(ValueError, match="resnet20"):
        build_model({"name": "resnet20", "width": 3}, 10, (3, 32, 32))


def test_register_twice_refused():
    with pytest.raises(ValueError, match="twice"):
        register("mlp")(lambda num_classes, input_shape: nn.Identity())


def test_mlp_hidden_option():
    model = build_model({"name": "mlp", "hidden": [5, 6, 7]}, 3, (1, 8, 8))
    widths = [m.out_features for m in model if isinstance(m, nn.Linear)]
    assert widths == [5, 6, 7, 3] and model[1].in_features == 64
    default = build_model({"name": "mlp"}, 3, (1, 8, 8))
    assert [m.out_features for m in default if isinstance(m, nn.Linear)] == [128, 128, 3]


@pytest.mark.parametrize("name,depth", [("resnet20", 20), ("resnet32", 32), ("resnet56", 56)])
def test_cifar_resnet_depth_option_a(name, depth):
    model = build_model({"name": name}, 10, (3, 32, 32))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == depth  # option A: no 1x1 projection convs
    assert model.fc.in_features == 64


def test_torchvision_cifar_stem_only_for_small_inputs():
    small = build_model({"name": "resnet18"}, 10, (3, 32, 32))
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    big = build_model({"name": "resnet50"}, 10, (3, 224, 224))
    assert big.conv1.kernel_size == (7, 7) and isinstance(big.maxpool, nn.MaxPool2d)
    assert big.fc.out_features == 10


def test_deit_patch_and_image_size():
    model = build_model({"name": "deit_tiny"}, 10, (3, 32, 32))
    assert model.patch_embed.proj.kernel_size == (4, 4)
    assert model.patch_embed.num_patches == 64
    assert model.head.out_features == 10
    big = build_model({"name": "deit_small"}, 100, (3, 224, 224))
    assert big.patch_embed.proj.kernel_size == (16, 16) and big.head.out_features == 100


def test_vgg_single_linear_classifier():
    model = build_model({"name": "vgg16_bn"}, 10, (3, 32, 32))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[0].in_features == 512
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
