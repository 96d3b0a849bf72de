"""`python -m trainer key=value` (hydra) trains the run a sweep would, under the same run id."""
from __future__ import annotations

import json
import subprocess
import sys

from orchestrator.plan import plan_sweep
from orchestrator.spec import parse_spec
from tests.sweeputil import REPO, tiny_spec


def test_hydra_standalone_matches_the_planned_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", "method=imp", "+sparsities=[0.5,0.75]", "seed=0",
         "schedule.epochs=1", "model.hidden=[32]", "data.batch_size=128", "prune.rate=0.5"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO),
                                                                       "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    spec = tiny_spec("standalone")
    spec["grid"] = {"method": ["imp"], "sparsity": [0.5, 0.75], "seed": [0]}
    planned = plan_sweep(parse_spec(spec)).runs[0]
    run_dir = tmp_path / "tp-runs" / planned.run_id
    assert json.loads((run_dir / "run.json").read_text())["densities"] == planned.densities
    assert json.loads((run_dir / "status.json").read_text())["state"] == "COMPLETED"
    assert (run_dir / "level_2" / "final.pt").exists()
    assert not (tmp_path / "outputs").exists()  # hydra kept out of the way
