"""core/code.py's snapshots: what a launch freezes for its jobs is true to its name, shared by
launches of the same code, and replaced (never trusted) when edited after the fact."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
from pathlib import Path

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
