"""Bounds everywhere: every number of the executor, retry and supervisor blocks and of a
clusters.yaml profile has a strict type and an upper bound; a profile's bad value is blamed on
the clusters file and the profile; `extra` cannot replace the sbatch options tp-sweep sets; a
full disk says so, with the file it was writing. Bad input is exit 2 before anything is recorded
or created."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from core import atomic
from tests.sweeputil import tiny_spec, tp, write_spec
from trainer import checkpoint as ckpt

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


# ---- a full disk ---------------------------------------------------------------------------------
class _FillsUp:
    """A file whose disk is full after its first 256 bytes."""

    def __init__(self, f: Any) -> None:
        self._f, self._room = f, 256

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if size > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= size
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _FillsUp:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()


def _says_disk_full(info: pytest.ExceptionInfo, path: Path) -> None:
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert f"No space left on device: '{path}'" in str(info.value)
    assert os.listdir(path.parent) == []  # neither the file nor its temporary file


def test_a_disk_that_fills_during_a_checkpoint_says_so(tmp_path, monkeypatch):
    fdopen = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: _FillsUp(fdopen(fd, mode)))
    path = tmp_path / "ckpt" / "checkpoint.pt"
    path.parent.mkdir()
    with pytest.raises(OSError) as info:
        ckpt.save_atomic({"model": {"w": torch.zeros(10_000)}}, path)
    _says_disk_full(info, path)


def test_a_write_error_on_a_full_disk_says_so(tmp_path, monkeypatch):
    # Torch writing by path loses the OSError: then the free space tells.
    def unexpected_pos(obj: Any, f: Any) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 768 vs 662")

    monkeypatch.setattr(ckpt.torch, "save", unexpected_pos)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(1 << 30, 1 << 30, 0))
    path = tmp_path / "final.pt"
    with pytest.raises(OSError) as info:
        ckpt.save_atomic({"model": {}}, path)
    _says_disk_full(info, path)


def test_a_checkpoint_on_a_real_full_disk_says_so(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        path = small / "checkpoint.pt"
        with pytest.raises(OSError) as info:
            ckpt.save_atomic({"model": {"w": torch.zeros(100_000)}}, path)
        _says_disk_full(info, path)
    finally:
        subprocess.run(["umount", str(small)], check=True)
