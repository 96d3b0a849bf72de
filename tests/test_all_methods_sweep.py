"""Every registered pruning method runs through `tp-sweep launch` on digits and hits its target."""

from __future__ import annotations

import json

import pytest

from core.methods import METHODS
from tests.inprocess import status_json
from tests.sweeputil import tiny_spec, tp, write_spec


@pytest.mark.slow
def test_every_method_through_launch(tmp_path):
    spec = tiny_spec("all_methods")
    # 0.75 at rate 0.5 is trunk level 2 of the iterative methods: one branch-free chain each
    # (branches have their own tests), and every one-shot method prunes straight to it.
    spec["grid"] = {"method": sorted(METHODS), "sparsity": [0.75], "seed": [0]}
    spec["trainer"]["overrides"].update(
        {
            "prune.synflow_rounds": 20,  # the paper's 100 rounds are tested in test_synflow.py
            "prune.rewind_iterations": 2,
        }
    )  # imp_wr: one epoch per level leaves room for k = 2 only
    path = write_spec(tmp_path, spec)
    tp("launch", str(path), cwd=tmp_path, check=True, timeout=900)
    st = status_json("all_methods", tmp_path)
    assert st["counts"] == {"COMPLETED": len(METHODS)}, st
    rows = json.loads(tp("query", "all_methods", "--format", "json", cwd=tmp_path).stdout)
    assert {r["method"] for r in rows} == set(METHODS)
    for r in rows:
        assert abs(r["achieved_sparsity"] - r["sparsity"]) < 1e-3, r
        assert r["test_acc"] > 0.1, r  # above chance after one epoch, whatever the method
