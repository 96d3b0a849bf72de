"""`python -m trainer key=value` (hydra) trains the run a sweep would, under the same run id."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestrator.plan.grid import plan_sweep
from orchestrator.plan.spec import parse_spec
from tests.sweeputil import REPO, tiny_spec


@pytest.mark.slow
def test_hydra_standalone_matches_the_planned_run(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "method=imp",
            "+sparsities=[0.5,0.75]",
            "seed=0",
            "schedule.epochs=1",
            "model.hidden=[32]",
            "data.batch_size=128",
            "prune.rate=0.5",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    spec = tiny_spec("standalone")
    spec["grid"] = {"method": ["imp"], "sparsity": [0.5, 0.75], "seed": [0]}
    plan = plan_sweep(parse_spec(spec))
    levels = tmp_path / "tp-runs" / "levels"
    for lid, lv in plan.levels.items():  # the very levels a sweep plans, trained and finished
        assert json.loads((levels / lid / "level.json").read_text()) == json.loads(json.dumps(lv.description()))
        assert json.loads((levels / lid / "metrics.json").read_text())["level_id"] == lid
    assert len(plan.levels) == 3
    assert not (tmp_path / "outputs").exists()  # hydra kept out of the way
