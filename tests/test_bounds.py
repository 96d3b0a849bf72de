"""Bounds everywhere: every number of the executor, retry and supervisor blocks has a strict type
and an upper bound. Bad input is exit 2 before anything is recorded or created."""

from __future__ import annotations

import pytest

from tests.sweeputil import tiny_spec, tp, write_spec

SPEC_BAD = [
    ("backoff_s inf", {"retry": {"backoff_s": float("inf")}}, "retry.backoff_s: Input should be a finite number"),
    ("max_per_job '5'", {"retry": {"max_per_job": "5"}}, "retry.max_per_job: Input should be a valid integer"),
    ("max_per_job true", {"retry": {"max_per_job": True}}, "retry.max_per_job: Input should be a valid integer"),
    (
        "backoff_max_s 1e300",
        {"retry": {"backoff_max_s": 1e300}},
        "retry.backoff_max_s: Input should be less than or equal to 604800",
    ),
    (
        "lease_s inf",
        {"supervisor": {"lease_s": float("inf")}},
        "supervisor.lease_s: Input should be a finite number",
    ),
]


@pytest.mark.parametrize("label,blocks,needle", SPEC_BAD, ids=[b[0] for b in SPEC_BAD])
def test_a_bad_number_or_option_is_exit_2_and_nothing_is_recorded(tmp_path, label, blocks, needle):
    spec = tiny_spec("bounds")
    for block, values in blocks.items():
        spec[block] = {**spec.get(block, {}), **values}
    path = write_spec(tmp_path, spec)
    proc = tp("launch", str(path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{path}: " in proc.stderr and needle in " ".join(proc.stderr.split()), proc.stderr
    assert not (tmp_path / "tp-results.db").exists() and not (tmp_path / "tp-runs").exists()


def test_numbers_at_their_bounds_pass():
    from orchestrator.plan.spec import parse_spec

    spec = tiny_spec("edges")
    spec["retry"] = {"max_per_job": 100, "backoff_s": 30, "backoff_max_s": 604800, "oom_mem_factor": 16}
    spec["supervisor"] = {"poll_s": 3600, "lease_s": 86400, "signal_delay_s": 65535}
    spec["executor"].update(timeout_min=525600, mem_gb=65536, signal_delay_s=65535)
    parsed = parse_spec(spec)
    assert parsed.retry.backoff_s == 30.0 and parsed.supervisor.lease_s == 86400
