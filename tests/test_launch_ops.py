"""The launch side's operations in-process (orchestrator/operations: launch, dry run, resume,
supervise): what they return, what they refuse, and that they leave the caller's process as it
was (no TP_REUSE in os.environ, signal handlers put back)."""

from __future__ import annotations

import io
import os
import signal
from contextlib import contextmanager

import pytest

from tests.sweeputil import tiny_spec, write_spec


def _spec(tmp, name="ops", **over):
    spec = tiny_spec(name, **over)
    spec["grid"] = {"method": ["dense"], "seed": [0]}
    spec["output_dir"] = str(tmp / "tp-runs")
    return spec


@pytest.mark.slow  # one level of one epoch, trained by a local job
def test_launch_dry_run_and_resume_in_process(tmp_path):
    from orchestrator.operations.launch import LaunchHooks, LaunchRequest, dry_run, launch
    from orchestrator.operations.resume import ResumeRequest, resume

    path = write_spec(tmp_path, _spec(tmp_path))
    db = f"sqlite:///{tmp_path / 'tp-results.db'}"
    before = dict(os.environ)
    dry = dry_run(LaunchRequest(str(path), db=db))
    assert dry.counts["levels_to_train"] == 1 and dry.relaunch is None and dry.exit_code == 0
    assert not (tmp_path / "tp-results.db").exists()  # a dry run creates nothing

    starts, ticks = [], []

    @contextmanager
    def bar(store, sweep):
        assert sweep == "ops"
        yield lambda: ticks.append(1)

    out = launch(LaunchRequest(str(path), db=db), LaunchHooks(on_start=starts.append, local_progress=bar))
    assert [(s.sweep, s.runs, s.level_trainings, s.kind) for s in starts] == [("ops", 1, 1, "local")]
    assert "tp-results.db" in starts[0].store_url and starts[0].relaunch == []
    assert out.result is not None and len(out.result.submitted) == 1 and not out.result.bad, out.result
    assert ticks, "the local jobs' progress reached the hook"
    assert out.launch.stored["name"] == "ops" and out.launch.plan.spec is out.launch.spec

    again = dry_run(LaunchRequest(str(path), db=db))
    assert again.counts["levels_done"] == 1 and again.counts["levels_to_train"] == 0
    res = resume(ResumeRequest("ops", db=db, reuse="any"))
    assert res.result is not None and res.result.submitted == {} and res.local
    assert dict(os.environ) == before  # resume --reuse reaches the jobs, not this process


def test_launch_refuses_before_changing_anything(tmp_path):
    from core.errors import UserError
    from orchestrator.operations.launch import LaunchRequest, check_writable, dry_run, launch

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngrid: {method: [nosuch]}\ntrainer: {config: digits_mlp}\n")
    for op in (dry_run, launch):
        with pytest.raises(UserError) as exc:
            op(LaunchRequest(str(bad), db=f"sqlite:///{tmp_path / 'db.sqlite'}"))
        assert exc.value.exit_code == 2
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot write there"):
        check_writable(str(tmp_path / "file" / "below"))
    assert not (tmp_path / "db.sqlite").exists()


def test_supervised_launch_needs_the_spec_s_executor(tmp_path):
    from orchestrator.operations.launch import LaunchRequest, launch
    from orchestrator.operations.supervise import SupervisorNotStarted

    path = write_spec(tmp_path, _spec(tmp_path))
    with pytest.raises(SupervisorNotStarted, match="set executor.kind: debug"):
        db = f"sqlite:///{tmp_path / 'db.sqlite'}"
        launch(LaunchRequest(str(path), db=db, executor="debug", supervise=True))


def test_a_launch_is_read_once_and_stored_without_its_password(tmp_path, monkeypatch):
    import orchestrator.plan.launch as launch_mod

    spec = _spec(tmp_path)
    spec["db"] = "postgresql://me:secret@host/db"
    path = write_spec(tmp_path, spec)
    reads = []
    real = launch_mod.read_spec_data
    monkeypatch.setattr(launch_mod, "read_spec_data", lambda p: reads.append(p) or real(p))
    run = launch_mod.read_launch(path, executor="debug")
    assert reads == [path]
    assert "secret" not in run.stored["db"] and run.spec.db == spec["db"]
    assert run.kind == "debug" and run.job_env == {} and run.plan.spec is run.spec
    again = launch_mod.stored_launch(run.spec, run.stored, reuse="any")
    assert again.spec.reuse == "any" and again.plan.reuse == "any" and again.job_env == {"TP_REUSE": "any"}
    assert again.kind == "local"


def test_job_env_reaches_the_job_not_this_process(monkeypatch):
    from slurm.executors import _InEnv, code_setup

    assert code_setup(None, (("TP_REUSE", "any"),)) == ["export TP_REUSE=any"]
    assert code_setup("/x", (("TP_REUSE", "a b"),))[-1] == "export TP_REUSE='a b'"
    assert code_setup(None) == []
    monkeypatch.delenv("TP_REUSE", raising=False)
    seen = _InEnv(lambda: os.environ.get("TP_REUSE"), (("TP_REUSE", "same-code"),))()
    assert seen == "same-code" and "TP_REUSE" not in os.environ


def test_supervision_exit_status():
    from orchestrator.operations.supervise import Supervision

    assert Supervision("s", ran=False, finished=False, reason="held elsewhere").exit_code == 0
    assert Supervision("s", ran=True, finished=True, reason="done").exit_code == 0
    assert Supervision("s", ran=True, finished=False, reason="stopped by a signal").exit_code == 0
    assert Supervision("s", ran=True, finished=False, reason="taken over by x").exit_code == 0
    assert Supervision("s", ran=True, finished=False, reason="stuck", once=True).exit_code == 0
    assert Supervision("s", ran=True, finished=False, reason="stuck").exit_code == 1


def test_signal_stop_sets_the_event_and_puts_the_handlers_back():
    from cli.supervise import signal_stop

    before = signal.getsignal(signal.SIGTERM)
    with signal_stop() as stop:
        stop.arm()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.event.wait(5)
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_launch_header_keeps_the_store_url_on_its_line_at_80_columns(monkeypatch):
    """It wrapped at the terminal's width: `store` ended one line, the URL began the next."""
    from rich.console import Console

    import cli.launch
    from orchestrator.operations.launch import LaunchStart

    buf = io.StringIO()
    monkeypatch.setattr(cli.launch, "console", Console(file=buf, width=80, color_system=None))
    url = "sqlite:////home/someone/work/turboprune/tp-results.db"
    cli.launch.say_start(LaunchStart("demo", 6, 34, "local", url, [], None))
    lines = buf.getvalue().splitlines()
    assert lines == [f"sweep demo: 6 runs, 34 level trainings -> local, store {url}"], lines


def test_a_local_job_gets_the_request_s_env_and_this_process_keeps_its_own(tmp_path, monkeypatch):
    """resume --reuse reaches a local job's process (submitit starts it with os.environ as it
    is at submit), and os.environ is as it was after."""
    import submitit

    from orchestrator.plan.spec import ExecutorSpec
    from slurm.executors import JobRequest, LocalExecutor, SlurmExecutor

    seen = []

    class Handle:
        job_id = "1"

    def submit(self, fn, *args):
        seen.append(os.environ.get("TP_REUSE"))
        return Handle()

    monkeypatch.setattr(submitit.LocalExecutor, "submit", submit)
    monkeypatch.delenv("TP_REUSE", raising=False)
    env = (("TP_REUSE", "any"),)
    LocalExecutor(ExecutorSpec(), tmp_path).submit([JobRequest("j", "j.json", "db", None, env)])
    assert seen == ["any"] and "TP_REUSE" not in os.environ
    slurm = SlurmExecutor(ExecutorSpec(kind="slurm"), tmp_path)._executor(env=env)
    assert "export TP_REUSE=any" in slurm.parameters["setup"]


def test_the_stored_spec_names_its_output_folder_whatever_the_folder_read_from(tmp_path, monkeypatch):
    """A spec with a relative output_dir (the default, tp-runs) is stored with the folder it
    resolved to at launch: a resume from another folder plans the same levels in the same place."""
    from orchestrator.plan.launch import read_launch, stored_launch
    from orchestrator.plan.spec import parse_spec

    spec = _spec(tmp_path)
    spec["output_dir"] = "runs"
    path = write_spec(tmp_path, spec)
    monkeypatch.chdir(tmp_path)
    run = read_launch(path)
    levels_dir = run.plan.levels_dir
    assert run.stored["output_dir"] == str(tmp_path / "runs") == run.plan.output_dir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = stored_launch(parse_spec(run.stored, "stored"), run.stored)
    assert again.plan.levels_dir == levels_dir == str(tmp_path / "runs" / "levels")
