"""SynFlow: the iterative schedule avoids the layer collapse that one-shot scoring causes."""

from __future__ import annotations

import pytest
import torch

import trainer.pruning.synflow as synflow
from trainer.models import build_model
from trainer.pruning.masks import full_mask, mask_density
from trainer.pruning.methods import PruneContext, prune_magnitude, prune_snip
from trainer.pruning.synflow import prune_synflow

# 12 linear layers, widths 64 with a width-4 bottleneck in the middle.
DEEP_NARROW = [64] * 5 + [4] + [64] * 5
SHAPE = (1, 4, 4)


def ctx_for(rounds: int, batches=None) -> PruneContext:
    return PruneContext(
        cfg={"synflow_rounds": rounds, "input_shape": SHAPE},
        generator=torch.Generator().manual_seed(0),
        batches=batches,
    )


def collapsed(mask) -> list[str]:
    return [n for n, m in mask.items() if not m.any()]


@pytest.fixture(scope="module")
def deep_narrow():
    torch.manual_seed(0)
    return build_model({"name": "mlp", "hidden": DEEP_NARROW}, 10, SHAPE)


@pytest.mark.parametrize("density", [0.01, 0.005])
def test_iterative_synflow_avoids_layer_collapse(deep_narrow, density):
    mask = full_mask(deep_narrow)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(32, *SHAPE, generator=g), torch.randint(0, 10, (32,), generator=g))]
    one_shot = {
        "synflow_1_round": prune_synflow(deep_narrow, mask, density, ctx_for(1)),
        "magnitude": prune_magnitude(deep_narrow, mask, density, ctx_for(1)),
        "snip": prune_snip(deep_narrow, mask, density, ctx_for(1, batches)),
    }
    for name, m in one_shot.items():
        assert collapsed(m), f"{name} was expected to disconnect a layer at density {density}"
    iterative = prune_synflow(deep_narrow, mask, density, ctx_for(100))
    assert collapsed(iterative) == []
    assert sum(int(m.sum()) for m in iterative.values()) == round(density * sum(m.numel() for m in mask.values()))


def test_exponential_schedule(deep_narrow, monkeypatch):
    """Round k keeps start * (density / start)^(k / n) of the weights; the last lands on density."""
    seen = []
    real = synflow.topk_global

    def spy(scores, mask, k):
        seen.append(k)
        return real(scores, mask, k)

    monkeypatch.setattr(synflow, "topk_global", spy)
    mask = full_mask(deep_narrow)
    total = sum(m.numel() for m in mask.values())
    first = next(iter(mask))
    mask[first].view(-1)[: mask[first].numel() // 2] = False  # start below 1
    start = mask_density(mask)
    prune_synflow(deep_narrow, mask, 0.05, ctx_for(10))
    expected = [round(start * (0.05 / start) ** (k / 10) * total) for k in range(1, 11)]
    assert seen == expected


def test_synflow_leaves_model_untouched_and_takes_shape_from_batch():
    torch.manual_seed(0)
    model = build_model({"name": "resnet20"}, 10, (3, 8, 8)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))]
    ctx = PruneContext(cfg={"synflow_rounds": 5}, generator=torch.Generator(), batches=batches)
    new = prune_synflow(model, full_mask(model), 0.1, ctx)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert mask_density(new) == pytest.approx(0.1, abs=1e-5)


def test_synflow_needs_input_shape():
    model = build_model({"name": "mlp", "hidden": [4]}, 2, (1, 2, 2))
    ctx = PruneContext(cfg={}, generator=torch.Generator())
    with pytest.raises(ValueError, match="input shape"):
        prune_synflow(model, full_mask(model), 0.5, ctx)


def test_no_overflow_deep_nets():
    """float32 would overflow here (R > 3e38); the float64 copy stays finite."""
    torch.manual_seed(0)
    net = build_model({"name": "mlp", "hidden": [256] * 49}, 10, (1, 16, 16))  # 50 linear layers
    mask = full_mask(net)
    copy32 = synflow.copy.deepcopy(net)
    synflow._linearize(copy32)
    with torch.no_grad():
        assert not torch.isfinite(copy32(torch.ones(1, 1, 16, 16)).sum())
    new = prune_synflow(
        net,
        mask,
        0.1,
        PruneContext(cfg={"synflow_rounds": 20, "input_shape": (1, 16, 16)}, generator=torch.Generator()),
    )
    assert collapsed(new) == []

    res = build_model({"name": "resnet56"}, 10, (3, 32, 32))
    net64 = synflow.copy.deepcopy(res).double().eval()
    synflow._linearize(net64)
    scores = synflow.synflow_scores(net64, full_mask(res), torch.ones(1, 3, 32, 32, dtype=torch.float64))
    assert all(torch.isfinite(s).all() for s in scores.values())
    assert sum(float(s.sum()) for s in scores.values()) > 0
