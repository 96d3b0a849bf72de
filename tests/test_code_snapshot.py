"""core/code.py's snapshots: what a launch freezes for its jobs is true to its name, shared by
launches of the same code, and replaced (never trusted) when edited after the fact."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
from pathlib import Path

import pytest

from core.code import MANIFEST, ROOT, SNAPSHOT_PACKAGES, code_identity, snapshot, verify_snapshot


def _tree(tmp: Path) -> Path:
    """A copy of the project's packages the snapshot takes, to edit freely."""
    src = tmp / "src"
    for pkg in SNAPSHOT_PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return src


def test_a_snapshot_holds_the_bytes_its_name_and_manifest_say(tmp_path):
    src = _tree(tmp_path)
    snap = snapshot(tmp_path / "out", src)
    assert verify_snapshot(snap) == snap.name
    manifest = json.loads((snap / MANIFEST).read_text())
    held = {p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == held - {MANIFEST} and "trainer/loop.py" in held
    for rel in manifest["files"]:
        assert (snap / rel).read_bytes() == (src / rel).read_bytes()
    assert code_identity(snap).files == code_identity(src).files
    assert snapshot(tmp_path / "out", src) == snap  # the same code: the same snapshot, reused
    assert snapshot(tmp_path / "out", snap) == snap  # a job running from it: that one


def test_an_edit_makes_a_new_snapshot_and_leaves_the_old_one(tmp_path):
    src = _tree(tmp_path)
    first = snapshot(tmp_path / "out", src)
    loop = src / "trainer" / "loop.py"
    loop.write_text(loop.read_text() + "\nEDITED = True\n")
    second = snapshot(tmp_path / "out", src)
    assert second != first and verify_snapshot(first) == first.name and verify_snapshot(second) == second.name
    assert "EDITED" not in (first / "trainer" / "loop.py").read_text()
    assert code_identity(second).training != code_identity(first).training


def test_a_snapshot_edited_in_place_is_set_aside_and_rebuilt(tmp_path):
    src = _tree(tmp_path)
    snap = snapshot(tmp_path / "out", src)
    victim = snap / "trainer" / "loop.py"
    victim.write_text("raise SystemExit('tampered')\n")
    assert verify_snapshot(snap) is None
    again = snapshot(tmp_path / "out", src)
    assert again == snap and verify_snapshot(again) == snap.name
    assert victim.read_bytes() == (src / "trainer" / "loop.py").read_bytes()
    aside = [p for p in snap.parent.iterdir() if ".damaged." in p.name]
    assert len(aside) == 1 and "tampered" in (aside[0] / "trainer" / "loop.py").read_text()


def _take(args: tuple[str, str]) -> str:
    return str(snapshot(args[0], args[1]))


def test_launches_racing_for_one_snapshot_share_it(tmp_path):
    src = _tree(tmp_path)
    with mp.get_context("spawn").Pool(4) as pool:
        names = pool.map(_take, [(str(tmp_path / "out"), str(src))] * 4)
    assert len(set(names)) == 1 and verify_snapshot(names[0]) == Path(names[0]).name
    left = sorted(p.name for p in (tmp_path / "out" / "_code").iterdir() if not p.name.endswith(".lock"))
    assert left == [Path(names[0]).name]  # none set aside as damaged, no temporary folder left


def test_snapshot_files_are_writable_by_their_owner_alone_whatever_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o002)
    try:
        snap = snapshot(tmp_path / "out", _tree(tmp_path))
    finally:
        os.umask(old)
    modes = {p.relative_to(snap).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [snap, *snap.rglob("*")]}
    assert not {p: oct(m) for p, m in modes.items() if m & 0o022}
    assert modes[MANIFEST] == 0o644 and modes["trainer/loop.py"] == 0o644 and modes["trainer"] == 0o755


def test_a_snapshot_is_verified_against_its_name_and_every_file_in_it(tmp_path):
    """The manifest alone proves nothing (whoever edits a file can rewrite it): the name is
    recomputed from the files, and a file no snapshot holds is refused."""
    import hashlib

    from core.code import snapshot_problem

    src = _tree(tmp_path)
    snap = snapshot(tmp_path / "out", src)
    assert snapshot_problem(snap) is None
    for extra in ("sitecustomize.py", "trainer/__pycache__/loop.cpython-311.pyc", "core/x.pth"):
        (snap / extra).parent.mkdir(exist_ok=True)
        (snap / extra).write_text("import os\n")
        assert extra in str(snapshot_problem(snap)) and verify_snapshot(snap) is None
        (snap / extra).unlink()
    shutil.rmtree(snap / "trainer" / "__pycache__")
    assert verify_snapshot(snap) == snap.name
    loop = snap / "trainer" / "loop.py"
    loop.write_text(loop.read_text() + "\nEDITED = True\n")
    manifest = json.loads((snap / MANIFEST).read_text())
    manifest["files"]["trainer/loop.py"] = hashlib.sha256(loop.read_bytes()).hexdigest()
    (snap / MANIFEST).write_text(json.dumps(manifest))
    assert "not to its name" in str(snapshot_problem(snap)) and verify_snapshot(snap) is None


# ---- the job wrapper checks a snapshot before anything runs from it -----------------------------
def _job_file(tmp: Path, snap: Path) -> Path:
    """A job file naming `snap` (no level: a trainer that got this far would fail on it anyway)."""
    job = tmp / "jobs" / "j1.json"
    job.parent.mkdir(parents=True)
    job.write_text(json.dumps({"job_id": "j1", "levels_dir": str(tmp), "levels": [], "code_dir": str(snap)}))
    return job


def _set_aside(snap: Path) -> list[Path]:
    return [p for p in snap.parent.iterdir() if p.name.startswith(f"{snap.name}.tampered-")]


def test_a_snapshot_with_an_added_sitecustomize_is_refused_by_the_job_wrapper(tmp_path):
    """Through the local executor, as a launch runs jobs: the wrapper's process never has the
    snapshot on its import path, refuses the file no snapshot holds, and sets the snapshot aside;
    the job fails with failure ERROR (final: the supervisor does not retry it)."""
    from core.layout import status_path
    from orchestrator.plan.spec import ExecutorSpec
    from slurm.executors import JobRequest, LocalExecutor

    snap = snapshot(tmp_path / "out", _tree(tmp_path))
    marker = tmp_path / "ran"
    (snap / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    job = _job_file(tmp_path, snap)
    params = ExecutorSpec(max_requeues=0, timeout_min=5, signal_delay_s=10)
    ex = LocalExecutor(params, tmp_path / "_jobs")
    (handle,) = ex.submit([JobRequest("j1", str(job), str(tmp_path / "db.url"), str(snap))])
    handle.wait()
    assert not marker.exists()  # neither the wrapper nor a trainer ran the snapshot's code
    assert "sitecustomize.py" in str(handle.exception())
    status = json.loads(status_path(job).read_text())
    assert (status["state"], status["failure"]) == ("FAILED", "ERROR")
    assert "sitecustomize.py" in status["message"] and str(snap) in status["message"]
    (aside,) = _set_aside(snap)
    assert not snap.exists() and str(aside) in status["message"] and (aside / "sitecustomize.py").exists()
    assert snapshot(tmp_path / "out", tmp_path / "src") == snap and verify_snapshot(snap) == snap.name  # fresh


def test_an_edited_file_with_a_rewritten_manifest_is_refused_by_its_name(tmp_path):
    """The manifest says nothing the attacker cannot rewrite: the folder's name is recomputed."""
    import hashlib

    from core.layout import status_path
    from slurm.job import TrainerJob

    snap = snapshot(tmp_path / "out", _tree(tmp_path))
    marker = tmp_path / "ran"
    entry = snap / "trainer" / "job.py"  # the first thing the trainer runs
    head, sep, rest = entry.read_text().partition("from __future__ import annotations\n")
    entry.write_text(f"{head}{sep}open({str(marker)!r}, 'w').write('ran')\n{rest}")
    manifest = json.loads((snap / MANIFEST).read_text())
    manifest["files"]["trainer/job.py"] = hashlib.sha256(entry.read_bytes()).hexdigest()
    (snap / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    job = _job_file(tmp_path, snap)
    with pytest.raises(RuntimeError, match="not to its name"):
        TrainerJob()(str(job), str(tmp_path / "db.url"), code_dir=str(snap))
    assert not marker.exists()
    assert json.loads(status_path(job).read_text())["failure"] == "ERROR"
    (aside,) = _set_aside(snap)
    assert "ran" in (aside / "trainer" / "job.py").read_text()


@pytest.mark.slow  # trains through real processes
def test_an_untouched_snapshot_runs_and_stays_as_its_name_says(tmp_path, monkeypatch):
    """A launch on the local executor: the job wrapper passes the snapshot, the trainer imports it
    and trains, and writes no bytecode into it (a __pycache__ there would be refused next time)."""
    from tests.inprocess import status_json
    from tests.sweeputil import tiny_spec, tp, write_spec

    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)  # as a user's shell has it
    spec = tiny_spec("untouched")
    spec["grid"] = {"method": ["dense"], "sparsity": [0.0], "seed": [0]}
    spec["output_dir"] = str(tmp_path / "out")
    tp("launch", str(write_spec(tmp_path, spec)), cwd=tmp_path, check=True)
    assert status_json("untouched", tmp_path)["counts"] == {"COMPLETED": 1}
    (snap,) = (p for p in (tmp_path / "out" / "_code").iterdir() if not p.name.startswith("."))
    assert not list(snap.rglob("__pycache__")) and verify_snapshot(snap) == snap.name
