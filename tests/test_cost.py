"""Cost per level: multiply-adds of conv and linear layers against hand counts, nonzero
parameters, and the whole-network sparsity beside the prunable one."""

from __future__ import annotations

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
