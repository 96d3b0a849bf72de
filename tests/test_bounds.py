"""Bounds everywhere: every number of the executor, retry and supervisor blocks and of a
clusters.yaml profile has a strict type and an upper bound; a profile's bad value is blamed on
the clusters file and the profile; `extra` cannot replace the sbatch options tp-sweep sets.
Bad input is exit 2 before anything is recorded or created."""

from __future__ import annotations

import pytest
import yaml

from tests.sweeputil import tiny_spec, tp, write_spec

# write_spec sorts the keys, so the messages name them in that order
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
    (
        "extra signal KILL@1",
        {"executor": {"extra": {"signal": "KILL@1"}}},
        "executor.extra: signal: tp-sweep sets this itself; set signal_delay_s instead of signal",
    ),
    (
        "extra logs and array",
        {"executor": {"extra": {"output": "/dev/null", "open_mode": "truncate", "array": "0-9", "wrap": "x"}}},
        "executor.extra: array, open_mode, output, wrap: tp-sweep sets these itself; "
        "set array_parallelism instead of array",
    ),
    (
        "supervisor extra abbreviated",
        {"supervisor": {"extra": {"sig": "KILL@1", "job-name": "x", "requeue": True}}},
        "supervisor.extra: job-name, requeue, sig (read as --signal): tp-sweep sets these itself; "
        "set signal_delay_s instead of sig",
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


def test_numbers_at_their_bounds_and_other_sbatch_options_pass():
    from orchestrator.plan.spec import parse_spec

    spec = tiny_spec("edges")
    spec["retry"] = {"max_per_job": 100, "backoff_s": 30, "backoff_max_s": 604800, "oom_mem_factor": 16}
    spec["supervisor"] = {"poll_s": 3600, "lease_s": 86400, "signal_delay_s": 65535}
    spec["executor"].update(timeout_min=525600, mem_gb=65536, signal_delay_s=65535)
    spec["executor"]["extra"] = {"exclude": "n1", "gpus": 2, "ntasks": 1, "mail-type": "FAIL"}
    parsed = parse_spec(spec)
    assert parsed.retry.backoff_s == 30.0 and parsed.supervisor.lease_s == 86400


PROFILE_BAD = [
    ("timeout_min 1e23", {"timeout_min": 10**23}, "big.timeout_min: Input should be less than or equal to 525600"),
    ("mem_gb inf", {"mem_gb": float("inf")}, "big.mem_gb: Input should be a finite number"),
    ("extra signal", {"extra": {"signal": "KILL@1"}}, "big.extra: signal: tp-sweep sets this itself"),
]


@pytest.mark.parametrize("label,body,needle", PROFILE_BAD, ids=[b[0] for b in PROFILE_BAD])
def test_a_bad_profile_value_is_blamed_on_the_clusters_file(tmp_path, label, body, needle):
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"big": {"kind": "local", **body}}))
    spec = tiny_spec("badprof")
    spec["executor"] = {"profile": "big"}
    env = {"TP_CLUSTERS": str(clusters)}
    proc = tp("launch", str(write_spec(tmp_path, spec)), cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    said = " ".join(proc.stderr.split())
    assert f"{clusters}: {needle}" in said, said
    assert not (tmp_path / "tp-results.db").exists() and not (tmp_path / "tp-runs").exists()
    check = tp("cluster", "check", "big", cwd=tmp_path, env=env)
    assert check.returncode == 2 and f"{clusters}: {needle}" in " ".join(check.stderr.split()), check.stderr
