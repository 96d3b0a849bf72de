"""Masks: prunable sets, applying, enforcing through optimizer steps, measuring, saving."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from trainer.models import build_model
from trainer.pruning.masks import (
    MaskEnforcer,
    achieved_sparsity,
    apply_mask,
    full_mask,
    layer_densities,
    mask_density,
    prunable_names,
)


def test_prunable_names_conv_linear_only_in_order():
    model = build_model({"name": "resnet20"}, 10, (3, 8, 8))
    names = prunable_names(model)
    assert names[0] == "conv1.weight" and names[-1] == "fc.weight"
    assert len(names) == 20  # 19 convs + fc; option-A shortcuts have no weights
    assert not any("bn" in n or n.endswith("bias") for n in names)
    assert prunable_names(model, keep_first_last_dense=True) == names[1:-1]


def test_prunable_names_vit():
    model = build_model({"name": "deit_tiny"}, 10, (3, 32, 32))
    names = prunable_names(model)
    assert names[0] == "patch_embed.proj.weight" and names[-1] == "head.weight"
    for part in ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"):
        assert f"blocks.0.{part}" in names
    assert not any("norm" in n or "pos_embed" in n or "cls_token" in n for n in names)
    assert len(names) == 2 + 4 * 12


def test_prunable_names_conv1d_conv3d():
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Conv3d(3, 3, 1), nn.LayerNorm(3), nn.Embedding(5, 3))
    assert prunable_names(model) == ["0.weight", "1.weight"]


def test_full_mask_apply_and_measure():
    model = build_model({"name": "mlp", "hidden": [16]}, 4, (1, 2, 2))
    mask = full_mask(model)
    assert list(mask) == ["1.weight", "3.weight"]
    assert all(m.dtype == torch.bool and m.all() for m in mask.values())
    assert mask_density(mask) == 1.0
    mask["1.weight"][:8] = False  # half of the first layer (16x4)
    apply_mask(model, mask)
    w = dict(model.named_parameters())["1.weight"]
    assert (w[:8] == 0).all() and (w[8:] != 0).all()
    assert layer_densities(mask) == {"1.weight": 0.5, "3.weight": 1.0}
    assert mask_density(mask) == pytest.approx(96 / 128)
    assert achieved_sparsity(model, list(mask)) == pytest.approx(32 / 128)


def test_apply_mask_zeroes_non_finite():
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.fill_(float("nan"))
    apply_mask(lin, {"weight": torch.tensor([[True, False], [False, True]])})
    assert lin.weight[0, 1] == 0 and lin.weight[1, 0] == 0


def test_mask_saves_and_loads_by_parameter_name():
    model = build_model({"name": "lenet"}, 10, (1, 8, 8))
    mask = full_mask(model)
    buf = io.BytesIO()
    torch.save(mask, buf)
    buf.seek(0)
    loaded = torch.load(buf)
    assert set(loaded) <= set(dict(model.named_parameters()))
    assert all(torch.equal(loaded[n], mask[n]) for n in mask)


def _train_steps(model, opt, enforcer, steps=6):
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(8, 1, 8, 8, generator=g)
        y = torch.randint(0, 10, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        enforcer()


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05),
    ],
    ids=["sgd_momentum_wd", "adamw"],
)
def test_enforcer_keeps_pruned_weights_exactly_zero(make_opt):
    torch.manual_seed(0)
    model = build_model({"name": "lenet"}, 10, (1, 8, 8))
    opt = make_opt(model.parameters())
    _train_steps(model, opt, lambda: None, steps=3)  # momentum / Adam moments are now non-zero
    mask = {n: torch.rand(m.shape) < 0.3 for n, m in full_mask(model).items()}
    apply_mask(model, mask)
    enforcer = MaskEnforcer(model, mask)
    _train_steps(model, opt, enforcer)
    params = dict(model.named_parameters())
    for n, m in mask.items():
        assert (params[n][~m] == 0).all(), n
        assert (params[n][m] != 0).all(), n  # kept weights still train
    assert achieved_sparsity(model, list(mask)) == pytest.approx(1 - mask_density(mask))


def test_enforcer_without_it_weights_drift():
    """The reason the enforcer exists: momentum moves zeroed weights off zero."""
    torch.manual_seed(0)
    model = build_model({"name": "lenet"}, 10, (1, 8, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    _train_steps(model, opt, lambda: None, steps=2)
    mask = {n: torch.rand(m.shape) < 0.3 for n, m in full_mask(model).items()}
    apply_mask(model, mask)
    _train_steps(model, opt, lambda: None, steps=2)
    assert achieved_sparsity(model, list(mask)) < 0.01


def test_enforcer_follows_dtype_change():
    model = build_model({"name": "mlp", "hidden": [8]}, 3, (1, 2, 2))
    mask = {n: torch.rand(m.shape) < 0.5 for n, m in full_mask(model).items()}
    enforcer = MaskEnforcer(model, mask)
    model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    enforcer()
    params = dict(model.named_parameters())
    assert all((params[n][~m] == 0).all() for n, m in mask.items())


def test_multihead_attention_projections_are_pruned_and_stay_pruned():
    """nn.MultiheadAttention (torchvision's ViT) keeps its input projections as a bare parameter,
    in_proj_weight; its out_proj is a Linear. Both are pruned, and stay pruned through steps."""
    from torchvision.models import VisionTransformer

    from trainer.pruning.methods import PruneContext, prune_magnitude

    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=8, patch_size=4, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16, num_classes=10
    )
    attn = "encoder.layers.encoder_layer_0.self_attention"
    names = prunable_names(model)
    assert names[:3] == ["conv_proj.weight", f"{attn}.in_proj_weight", f"{attn}.out_proj.weight"]
    mask = prune_magnitude(model, full_mask(model), 0.5, PruneContext(cfg={}, generator=torch.Generator()))
    assert not mask[f"{attn}.in_proj_weight"].all()
    apply_mask(model, mask)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    enforcer = MaskEnforcer(model, mask)
    assert f"{attn}.in_proj_weight" in enforcer.names
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        opt.zero_grad()
        x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        enforcer()
    params = dict(model.named_parameters())
    for n in (f"{attn}.in_proj_weight", f"{attn}.out_proj.weight"):
        assert (params[n][~mask[n]] == 0).all() and (params[n][mask[n]] != 0).all(), n
    assert achieved_sparsity(model, list(mask)) == pytest.approx(0.5, abs=1e-3)
