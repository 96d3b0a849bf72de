"""Cost per level: multiply-adds of conv and linear layers against hand counts, nonzero
parameters, and the whole-network sparsity beside the prunable one."""

from __future__ import annotations

import json

import pytest
import torch

from trainer.models import build_model
from trainer.pruning.cost import level_cost
from trainer.pruning.masks import apply_mask, full_mask


def _mlp_macs(widths):
    return sum(a * b for a, b in zip(widths, widths[1:]))


def test_macs_match_hand_counts_dense_and_sparse():
    torch.manual_seed(0)
    # MLP 64-256-128-10 on 8x8 digits: one MAC per weight.
    mlp = build_model({"name": "mlp", "hidden": [256, 128]}, 10, (1, 8, 8))
    cost = level_cost(mlp, (1, 8, 8))
    assert cost["flops_dense"] == cost["flops"] == _mlp_macs([64, 256, 128, 10]) == 50_432
    assert cost["params"] == 50_432 + 256 + 128 + 10 and cost["network_sparsity"] == 0.0

    # LeNet on 8x8 (same padding): conv 1->6 5x5 at 8x8, conv 6->16 5x5 at 4x4, then 64-120-84-10.
    lenet = build_model({"name": "lenet"}, 10, (1, 8, 8))
    want = 6 * 1 * 25 * 8 * 8 + 16 * 6 * 25 * 4 * 4 + _mlp_macs([64, 120, 84, 10])
    assert level_cost(lenet, (1, 8, 8))["flops_dense"] == want == 66_600

    # ResNet-20 at 32x32: the stem, 6 convs of 16 channels at 32x32, then per stage of 32 and 64
    # channels a stride-2 conv from the previous width and 5 more, and the 64-10 classifier.
    rn = build_model({"name": "resnet20"}, 10, (3, 32, 32))
    want = (
        3 * 16 * 9 * 32 * 32
        + 6 * 16 * 16 * 9 * 32 * 32
        + 16 * 32 * 9 * 16 * 16
        + 5 * 32 * 32 * 9 * 16 * 16
        + 32 * 64 * 9 * 8 * 8
        + 5 * 64 * 64 * 9 * 8 * 8
        + 64 * 10
    )
    cost = level_cost(rn, (3, 32, 32))
    assert cost["flops_dense"] == want == 40_551_040

    # Sparse: prune every other weight of the stem and all of the classifier but one.
    mask = full_mask(rn)
    mask["conv1.weight"].view(-1)[::2] = False
    mask["fc.weight"].zero_()
    mask["fc.weight"].view(-1)[0] = True
    apply_mask(rn, mask)
    sparse = level_cost(rn, (3, 32, 32))
    removed = (3 * 16 * 9 // 2) * 32 * 32 + (64 * 10 - 1)
    assert sparse["flops"] == want - removed and sparse["flops_dense"] == want
    pruned = 3 * 16 * 9 // 2 + 64 * 10 - 1
    assert sparse["nonzero_params"] == cost["nonzero_params"] - pruned


def test_resnet50_at_224_is_about_4_1_gmacs():
    rn50 = build_model({"name": "resnet50"}, 1000, (3, 224, 224))
    assert level_cost(rn50, (3, 224, 224))["flops_dense"] == pytest.approx(4.09e9, rel=0.01)


@pytest.mark.parametrize(("name", "published"), [("deit_tiny", 1.3e9), ("deit_small", 4.6e9)])
def test_deit_counts_its_attention_products_as_timm_publishes(name, published):
    """timm (and fvcore, and the DeiT paper) count QK^T and AV: DeiT-Tiny 1.3 GMACs and
    DeiT-Small 4.6 GMACs at 224 px. Without them DeiT-Tiny would be 1.075 G."""
    torch.manual_seed(0)
    deit = build_model({"name": name}, 1000, (3, 224, 224))
    cost = level_cost(deit, (3, 224, 224))
    # 12 blocks of 197 tokens (196 patches and the class token), 2 x N^2 x width each
    width = {"deit_tiny": 192, "deit_small": 384}[name]
    assert cost["flops_attention"] == 12 * 2 * 197 * 197 * width
    assert cost["flops_dense"] == pytest.approx(published, rel=0.04)


def test_attention_products_cap_the_speedup():
    """Pruning removes weights, not products of activations: at 95 % sparsity of every conv and
    linear weight, a DeiT-Tiny's attention products remain, and cap the speed-up near 5.4x
    (counting only the weights' MACs claimed 20x)."""
    torch.manual_seed(0)
    deit = build_model({"name": "deit_tiny"}, 1000, (3, 224, 224))
    mask = full_mask(deit)
    for m in mask.values():
        m.view(-1)[: int(0.95 * m.numel())] = False
    apply_mask(deit, mask)
    cost = level_cost(deit, (3, 224, 224))
    assert cost["flops_dense"] / cost["flops"] == pytest.approx(5.4, rel=0.03)
    assert cost["flops"] > cost["flops_attention"] > 0


def test_cost_is_counted_at_the_training_resolution(tmp_path):
    """The ImageNet recipe trains at one resolution and tests at another (the preset: 192 px and
    256 px): the cost is the training one's, and the record says which. A ResNet-50 trained at
    224 px and tested at 256 px records 4,089 M MACs at 224, not 5,340 M at 256."""
    from core.atomic import write_json_atomic
    from core.config import resolve
    from core.layout import LevelDir
    from core.levels import plan_levels
    from tests.test_levels import INFO, ListRecorder
    from trainer.data.fixtures import make_image_folder
    from trainer.distributed import StopFlag
    from trainer.level_trainer import LevelTrainer

    make_image_folder(str(tmp_path / "img" / "train"), classes=2, per_class=1, size=(32, 32), seed=0)
    make_image_folder(str(tmp_path / "img" / "val"), classes=2, per_class=1, size=(32, 32), seed=1)
    cfg = resolve(
        "imagenet_rn50",
        {
            "data": "imagefolder",
            "data.root": str(tmp_path / "img"),
            "data.resolution": 224,
            "data.val_resolution": 256,
            "data.batch_size": 2,
            "data.num_workers": 0,
            "schedule.epochs": 1,
            "train.eval_every": 1,
        },
    )
    (level,) = plan_levels("dense", cfg, [0.0]).levels
    write_json_atomic(LevelDir(tmp_path / "levels" / level.level_id).description, level.description())
    rec = ListRecorder()
    LevelTrainer(level.train, tmp_path / "levels", INFO, rec, StopFlag(INFO)).run([level], {})
    result = rec.levels[level.level_id]
    assert result["resolution"] == 224
    assert result["flops_dense"] == pytest.approx(4.089e9, rel=0.002)
    on_disk = json.loads((tmp_path / "levels" / level.level_id / "metrics.json").read_text())
    assert (on_disk["resolution"], on_disk["flops_dense"]) == (224, result["flops_dense"])
