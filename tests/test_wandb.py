"""Weights & Biases, offline (no network here): one W&B run per turboprune run, every epoch of the
run in it, the same W&B run continued by a requeued job, nothing imported when it is off, and a
W&B failure that never fails or slows training.

Offline runs are read back from their .wandb files: a LevelDB-style log of wandb's own protobuf
records (wandb 0.31 has no reader of its own for them besides `wandb sync`).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from tests.inprocess import status_json
from tests.sweeputil import (
    REPO,
    TP,
    TRUNK,
    epochs_trained,
    run_progress,
    slow_spec,
    tiny_spec,
    tp,
    wait_for,
    write_spec,
)
from trainer.wandb_recorder import WandbRecorder

OFFLINE = {"project": "tp-test", "mode": "offline"}


# ---- reading offline runs ----------------------------------------------------------------------
def _records(path: Path):
    """The protobuf payloads of a .wandb file: a 7-byte W&B header, then LevelDB log records
    (crc32 4, length 2, type 1; FULL=1, FIRST=2, MIDDLE=3, LAST=4) in 32 KiB blocks."""
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", path
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the tail of a block too short for a header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload, pos = data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind == 1:
            yield payload
        elif kind == 2:
            buf = payload
        elif kind == 3:
            buf += payload
        elif kind == 4:
            yield buf + payload


def read_offline_run(folder: Path) -> dict[str, Any]:
    """run record (id, group, tags, config), history rows in order, and the final summary."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = folder.glob("run-*.wandb")
    out: dict[str, Any] = {"history": [], "summary": {}, "run": None}
    for payload in _records(path):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = {
                "id": rec.run.run_id,
                "group": rec.run.run_group,
                "tags": list(rec.run.tags),
                "name": rec.run.display_name,
                "config": {i.key: json.loads(i.value_json) for i in rec.run.config.update},
            }
        elif kind == "history":
            out["history"].append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            )
        elif kind == "summary":
            for i in rec.summary.update:
                if i.key:
                    out["summary"][i.key] = json.loads(i.value_json)
    return out


def offline_runs(output_dir: Path, run_id: str) -> list[dict[str, Any]]:
    """The offline folders of one turboprune run, oldest first (their names start with the time)."""
    folders = sorted((output_dir / "wandb").glob(f"offline-run-*-tp-{run_id}"))
    return [read_offline_run(f) for f in folders]


def job_runs(output_dir: Path) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    for f in (output_dir / "jobs").glob("*.json"):
        if not f.name.endswith(".status.json"):
            runs.update(json.loads(f.read_text())["runs"])
    return runs


def level_epochs(output_dir: Path, level_id: str) -> list[dict[str, Any]]:
    return json.loads((output_dir / "levels" / level_id / "metrics.json").read_text())["history"]


def assert_every_epoch_once(output_dir: Path, run_id: str, run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's W&B history (all its offline folders) holds each epoch of each of its levels
    exactly once, with the trainer's metrics, at steps that never go back."""
    parts = offline_runs(output_dir, run_id)
    assert parts, f"no offline W&B run for {run_id}"
    assert {p["run"]["id"] for p in parts} == {f"tp-{run_id}"}
    rows = [row for p in parts for row in p["history"]]
    got = [(r["level_id"], r["epoch"]) for r in rows]
    want = [(lid, h["epoch"]) for lid in run["levels"] for h in level_epochs(output_dir, lid)]
    assert sorted(got) == sorted(want) and len(set(got)) == len(got)
    steps = [r["_step"] for r in rows]
    assert steps == sorted(steps) and steps == [r["run_epoch"] for r in rows]
    for r in rows:
        h = level_epochs(output_dir, r["level_id"])[r["epoch"]]
        assert r["train_loss"] == pytest.approx(h["train_loss"]) and r["test_acc"] == pytest.approx(h["test_acc"])
    return parts


def wandb_spec(name: str, spec: dict[str, Any] | None = None, **wandb: Any) -> dict[str, Any]:
    spec = spec or tiny_spec(name)
    spec["trainer"]["overrides"]["logging.wandb"] = {**OFFLINE, **wandb}
    return spec


# ---- through tp-sweep --------------------------------------------------------------------------
@pytest.mark.slow
def test_offline_run_holds_every_epoch_of_each_run(tmp_path):
    """dense and imp share level 0: one job, two W&B runs in one process, level 0 in both."""
    spec = wandb_spec("wb", tags=["digits"])
    spec["trainer"]["overrides"]["schedule.epochs"] = 2
    tp("launch", str(write_spec(tmp_path, spec)), cwd=tmp_path, check=True)
    assert {r["state"] for r in status_json("wb", tmp_path)["runs"]} == {"COMPLETED"}
    out = tmp_path / "tp-runs"
    runs = job_runs(out)
    assert sorted(r["method"] for r in runs.values()) == ["dense", "imp"]
    for rid, run in runs.items():
        (part,) = assert_every_epoch_once(out, rid, run)
        meta = part["run"]
        assert meta["group"] == "wb" and meta["name"].startswith(f"{run['method']}-s0-")
        assert run["method"] in meta["tags"] and "digits" in meta["tags"]
        assert meta["config"]["method"] == run["method"] and meta["config"]["tp_run_id"] == rid
        assert meta["config"]["model"]["hidden"] == [32] and "logging" not in meta["config"]
        for lid, targets in run["serves"].items():
            for s in targets:
                assert f"sparsity={s:g}" in meta["tags"]
                result = json.loads((out / "levels" / lid / "metrics.json").read_text())
                assert part["summary"][f"test_acc@{s:g}"] == pytest.approx(result["test_acc"])
    imp = next(r for r in runs.values() if r["method"] == "imp")
    assert len(imp["levels"]) == 3 and {r["method"] for r in runs.values()} == {"dense", "imp"}
    assert epochs_trained(tmp_path, "wb") == 3 * 2  # wandb left the job log's epoch lines alone


@pytest.mark.slow
def test_requeued_job_continues_the_same_wandb_run(tmp_path):
    """SIGTERM mid-level (what Slurm sends on requeue) still reaches the trainer's stop flag with
    W&B on; the resumed job logs to the same W&B run id, the rest of the epochs, each once."""
    spec = wandb_spec("wbresume", slow_spec("wbresume"))
    launcher = subprocess.Popen(
        [*TP, "launch", str(write_spec(tmp_path, spec))],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)},
    )
    wait_for(lambda: run_progress(tmp_path) >= (TRUNK, 1), 300, "the trunk level to be under way")
    subprocess.run(["pkill", "-TERM", "-f", f"trainer.job {tmp_path}"], check=False)
    out, _ = launcher.communicate(timeout=180)
    st = status_json("wbresume", tmp_path)["runs"][0]
    assert st["state"] == "PREEMPTED" and "checkpoint saved" in (st["message"] or ""), out

    tp("resume", "wbresume", cwd=tmp_path, check=True)
    st = status_json("wbresume", tmp_path)["runs"][0]
    assert st["state"] == "COMPLETED" and st["attempts"] == 2
    output = tmp_path / "tp-runs"
    ((rid, run),) = job_runs(output).items()
    first, second = assert_every_epoch_once(output, rid, run)  # one offline folder per attempt
    assert max(r["_step"] for r in first["history"]) < min(r["_step"] for r in second["history"])
    assert {r["level_id"] for r in second["history"]} >= {run["levels"][TRUNK]}


def test_a_wandb_mode_that_does_not_exist_exits_2_before_anything(tmp_path):
    path = write_spec(tmp_path, wandb_spec("bogus", mode="bogus"))
    proc = tp("launch", str(path), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "logging.wandb.mode" in proc.stderr and "bogus" in proc.stderr
    assert not (tmp_path / "tp-runs").exists() and not (tmp_path / "tp-results.db").exists()


def test_a_dotted_wandb_key_turns_wandb_on_and_keeps_run_ids(tmp_path):
    """`logging.wandb.project: x` (or a grid axis over logging.wandb.mode) fills the rest of
    the section with conf/logging/wandb.yaml's defaults; logging is in no run id."""
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.spec import parse_spec

    plain = tiny_spec("dotted")
    dotted = tiny_spec("dotted")
    dotted["trainer"]["overrides"].update({"logging.wandb.project": "tp-dotted", "logging.wandb.tags": ["a"]})
    dotted["grid"]["logging.wandb.mode"] = ["offline"]
    runs = plan_sweep(parse_spec(dotted)).runs
    assert {r.run_id for r in runs} == {r.run_id for r in plan_sweep(parse_spec(plain)).runs}
    assert runs[0].config["logging"]["wandb"] == {
        "project": "tp-dotted",
        "entity": None,
        "mode": "offline",
        "dir": None,
        "tags": ["a"],
    }
    proc = tp("launch", str(write_spec(tmp_path, dotted)), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = tiny_spec("dotted_bad")
    bad["trainer"]["overrides"]["logging.wandb.projct"] = "x"
    proc = tp("launch", str(write_spec(tmp_path, bad)), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2 and "logging.wandb.projct" in proc.stderr


# ---- one job, run as `python -m trainer.job` ---------------------------------------------------
def _standalone_job(out: Path, wandb: dict[str, Any] | None) -> Path:
    """A one-level dense job, planned as `python -m trainer` plans it."""
    from cli.hydra_app import write_job
    from core.config import resolve

    over = {"method": "dense", "seed": 0, "schedule.epochs": 1, "model.hidden": [32], "data.batch_size": 128}
    if wandb is not None:
        over["logging.wandb"] = wandb
    return write_job(resolve("digits_mlp", over), [0.0], out)


def _run_job(job_file: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "trainer.job", str(job_file)],
        cwd=job_file.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


def _imported_wandb(stderr: str) -> bool:
    return any(re.search(r"\|\s+wandb(\.\S+)?\s*$", line) for line in stderr.splitlines())


@pytest.mark.slow
def test_without_wandb_nothing_imports_it(tmp_path):
    off = _run_job(_standalone_job(tmp_path / "off", None))
    assert off.returncode == 0, off.stderr[-3000:]
    assert not _imported_wandb(off.stderr)
    assert not (tmp_path / "off" / "wandb").exists()
    on = _run_job(_standalone_job(tmp_path / "on", OFFLINE))  # the check sees an import when there is one
    assert on.returncode == 0, on.stderr[-3000:]
    assert _imported_wandb(on.stderr)
    ((rid, run),) = job_runs(tmp_path / "on").items()
    (part,) = assert_every_epoch_once(tmp_path / "on", rid, run)
    assert part["run"]["group"] == ""  # standalone: no sweep, no group


@pytest.mark.slow
def test_a_wandb_failure_does_not_fail_the_job(tmp_path):
    """mode online without credentials: wandb.init itself refuses. The job completes."""
    job = _standalone_job(tmp_path, {"project": "tp-test", "mode": "online"})
    proc = _run_job(
        job,
        {
            "HOME": str(tmp_path),
            "WANDB_CONFIG_DIR": str(tmp_path / ".config"),
            "NETRC": str(tmp_path / "none"),
            "WANDB_API_KEY": "",
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("[wandb]")]
    assert len(warnings) == 1 and "wandb.init failed" in warnings[0] and "training goes on" in warnings[0]
    assert list((tmp_path / "levels").glob("*/metrics.json"))


# ---- in process, with a stand-in wandb module ------------------------------------------------------
class _FakeRun:
    def __init__(self, kw: dict[str, Any], fail_log: bool) -> None:
        self.kw, self.rows, self.summary, self.fail_log = kw, [], {}, fail_log
        self.exit_code: int | None = None
        self.preempting = False

    def define_metric(self, *args: Any, **kw: Any) -> None: ...

    def log(self, row: dict[str, Any], step: int | None = None) -> None:
        if self.fail_log:
            raise ConnectionResetError("Connection lost")
        self.rows.append((step, row))

    def mark_preempting(self) -> None:
        self.preempting = True

    def finish(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code


def _fake_wandb(monkeypatch, *, init_delay: float = 0.0, fail_init: bool = False, fail_log: bool = False):
    fake = types.ModuleType("wandb")
    fake.runs = {}
    fake.Settings = lambda **kw: kw

    def init(**kw: Any) -> _FakeRun:
        time.sleep(init_delay)
        if fail_init:
            raise RuntimeError("cannot reach the server")
        fake.runs[kw["id"]] = run = _FakeRun(kw, fail_log)
        return run

    fake.init, fake.teardown = init, lambda: None
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return fake


def _job(tmp: Path, epochs: int = 2) -> dict[str, Any]:
    """Levels L0 (dense), L1 (trunk), L2 (branch); run A (dense) has L0, run B (imp) L0..L2."""
    kinds = [("L0", 0, "dense", 1.0), ("L1", 1, "trunk", 0.5), ("L2", 2, "branch", 0.3)]
    for lid, depth, kind, density in kinds:
        (tmp / lid).mkdir(parents=True)
        (tmp / lid / "level.json").write_text(
            json.dumps(
                {
                    "level_id": lid,
                    "depth": depth,
                    "kind": kind,
                    "density": density,
                    "train": {"schedule": {"epochs": epochs}},
                }
            )
        )
    logging = {"wandb": {**OFFLINE, "dir": str(tmp)}}
    return {
        "job_id": "j",
        "levels_dir": str(tmp),
        "levels": ["L0", "L1", "L2"],
        "runs": {
            "aaaa": {
                "sweep": "s",
                "method": "dense",
                "seed": 0,
                "axes": {},
                "levels": ["L0"],
                "serves": {"L0": [0.0]},
                "logging": logging,
                "config": {"method": "dense"},
            },
            "bbbb": {
                "sweep": "s",
                "method": "imp",
                "seed": 0,
                "axes": {},
                "levels": ["L0", "L1", "L2"],
                "serves": {"L1": [0.5], "L2": [0.7]},
                "logging": logging,
                "config": {"method": "imp"},
            },
            "cccc": {
                "sweep": "s",
                "method": "random",
                "seed": 0,
                "axes": {},
                "levels": ["L0"],
                "serves": {"L0": [0.0]},
                "logging": {"wandb": None},
            },
        },
    }


def _train(rec, levels=("L0", "L1", "L2"), epochs: int = 2) -> None:
    for lid in levels:
        for e in range(epochs):
            rec.log_epoch(lid, e, {"train_loss": 1.0 / (e + 1), "test_acc": 0.5, "lr": 0.1})
        rec.finish_level(lid, {"test_acc": 0.9, "best_test_acc": 0.95, "achieved_sparsity": 0.5})


def test_one_wandb_run_per_run_with_computed_steps(tmp_path, monkeypatch):
    fake = _fake_wandb(monkeypatch)
    rec = WandbRecorder(_job(tmp_path), tmp_path)
    _train(rec)
    rec.finish_job("PREEMPTED")
    rec.close()
    assert set(fake.runs) == {"tp-aaaa", "tp-bbbb"}  # run cccc has W&B off
    a, b = fake.runs["tp-aaaa"], fake.runs["tp-bbbb"]
    assert b.kw["resume"] == "allow" and b.kw["group"] == "s" and b.kw["mode"] == "offline"
    assert b.kw["tags"] == ["imp", "sparsity=0.5", "sparsity=0.7"]
    assert [s for s, _ in a.rows] == [0, 1]
    assert [s for s, _ in b.rows] == [0, 1, 2, 3, 4, 5]
    assert [(r["level_id"], r["level"], r["level_kind"], r["epoch"]) for _, r in b.rows][2] == (
        "L1",
        1,
        "trunk",
        0,
    )
    assert b.summary["test_acc@0.5"] == 0.9 and b.summary["level_id@0.7"] == "L2"
    assert "test_acc@0.5" not in a.summary and a.summary["test_acc@0"] == 0.9
    assert a.preempting and b.exit_code == 0


def test_a_resumed_level_logs_at_the_steps_it_would_have(tmp_path, monkeypatch):
    fake = _fake_wandb(monkeypatch)
    rec = WandbRecorder(_job(tmp_path, epochs=3), tmp_path)
    rec.log_epoch("L1", 2, {"train_loss": 0.1})  # a requeued job: level 1, its last epoch only
    rec.close()
    assert [s for s, _ in fake.runs["tp-bbbb"].rows] == [1 * 3 + 2]


@pytest.mark.slow
def test_slow_or_failing_wandb_never_slows_or_fails_training(tmp_path, monkeypatch, capsys):
    from trainer.job import Recorders

    _fake_wandb(monkeypatch, init_delay=2.0, fail_init=True)

    class Broken:
        def log_epoch(self, *args: Any) -> None:
            raise RuntimeError("store bug")

    class Keeps:
        epochs = 0

        def log_epoch(self, *args: Any) -> None:
            self.epochs += 1

    keeps = Keeps()
    recs = Recorders([Broken(), WandbRecorder(_job(tmp_path), tmp_path, flush_s=30), keeps])
    t0 = time.monotonic()
    _train(recs)
    assert time.monotonic() - t0 < 1.0  # wandb.init takes 2 s in its thread, not here
    assert keeps.epochs == 6  # one recorder's failure costs the others nothing
    recs.finish_job("COMPLETED", None)
    recs.close()
    err = capsys.readouterr().err
    assert err.count("[wandb] run aaaa: wandb.init failed (RuntimeError: cannot reach the server)") == 1
    assert err.count("[wandb] run bbbb: wandb.init failed") == 1
    assert "Broken.log_epoch failed (RuntimeError: store bug); training goes on" in err


def test_a_failed_log_turns_wandb_off_for_that_run_only(tmp_path, monkeypatch, capsys):
    fake = _fake_wandb(monkeypatch, fail_log=True)
    rec = WandbRecorder(_job(tmp_path), tmp_path)
    _train(rec)
    rec.close()
    err = capsys.readouterr().err
    assert err.count("run bbbb: log failed (ConnectionResetError: Connection lost)") == 1
    assert err.count("run aaaa: log failed") == 1 and set(fake.runs) == {"tp-aaaa", "tp-bbbb"}


def test_auto_mode_is_online_only_with_credentials(tmp_path, monkeypatch):
    from urllib.parse import urlsplit

    import wandb

    from trainer.wandb_recorder import _has_credentials

    netrc = tmp_path / "netrc"
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(netrc))
    assert not _has_credentials(wandb)
    netrc.write_text(
        f"machine {urlsplit(wandb.setup().settings.base_url).netloc}\n  login user\n  password {'a' * 40}\n"
    )
    netrc.chmod(0o600)
    assert _has_credentials(wandb)
    netrc.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    assert _has_credentials(wandb)
    fake = _fake_wandb(monkeypatch)  # and the recorder follows it
    job = _job(tmp_path / "levels")
    job["runs"]["aaaa"]["logging"]["wandb"]["mode"] = "auto"
    job["runs"]["bbbb"]["logging"] = {"wandb": {"project": "p"}}  # mode left out: auto
    rec = WandbRecorder(job, tmp_path / "levels")
    rec.log_epoch("L0", 0, {"train_loss": 1.0})
    rec.close()
    assert fake.runs["tp-aaaa"].kw["mode"] == fake.runs["tp-bbbb"].kw["mode"] == "online"
    assert fake.runs["tp-bbbb"].kw["dir"] == str(tmp_path)  # default: beside levels/, OUTPUT_DIR
