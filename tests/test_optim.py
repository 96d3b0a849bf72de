"""Learning-rate schedules are pure functions of the step (resume needs no scheduler state)."""

from __future__ import annotations

import pytest

from trainer.optim import lr_factor


def test_cosine_onecycle_multistep_shapes():
    cos = {"name": "cosine", "epochs": 4}
    assert lr_factor(0, 10, cos) == 1.0 and lr_factor(20, 10, cos) == pytest.approx(0.5)
    assert lr_factor(39, 10, cos) < 0.01
    one = {"name": "onecycle", "epochs": 4, "peak_epoch": 1}
    assert lr_factor(10, 10, one) == pytest.approx(1.0)
    assert lr_factor(5, 10, one) == pytest.approx(0.5) and lr_factor(25, 10, one) == pytest.approx(0.5)
    ms = {"name": "multistep", "epochs": 4, "milestones": [2, 3], "gamma": 0.1, "warmup_epochs": 1}
    assert lr_factor(0, 10, ms) == pytest.approx(0.1)  # warm-up starts at 1/10
    assert [lr_factor(s, 10, ms) for s in (15, 25, 35)] == pytest.approx([1.0, 0.1, 0.01])


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_factor(0, 10, {"name": "step", "epochs": 1})
