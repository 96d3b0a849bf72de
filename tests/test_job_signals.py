"""The time-limit warning reaches submitit's answer whatever the job wrapper was doing when it
came (slurm/usr2.py). Each case runs in a process of its own: it installs signal handlers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.sweeputil import REPO

# submitit's USR2 handler, as it ends a job that may not be requeued: it raises from the handler.
# The main code is inside an `except Exception` when the signal lands, as logging's emit is when
# submitit's SIGCONT handler logs, or a packed job's store query.
SCRIPT = """
import os, signal, subprocess, sys, time
from submitit.core.utils import UncompletedJobError
from slurm.usr2 import DeferredUsr2, wait_answering

def submitit_end(signum, frame):
    print("handler ran", flush=True)
    raise UncompletedJobError("Job not requeued because: timed-out too many times.")

signal.signal(signal.SIGUSR2, submitit_end)
usr2 = DeferredUsr2() if sys.argv[1] == "deferred" else None
trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
try:
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.2)
    except Exception as exc:
        print("swallowed", type(exc).__name__, flush=True)
    rc = wait_answering(trainer, usr2) if usr2 else trainer.wait()
    print("ended as if nothing came, exit status", rc, flush=True)
except UncompletedJobError:
    print("the job ends at its warning", flush=True)
    trainer.kill()
"""


def _run(mode: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_warning_inside_a_guarded_block_is_swallowed_without_deferral():
    """The hazard itself: the exception surfaces wherever the main thread is, and is lost there."""
    assert _run("direct").splitlines() == [
        "handler ran",
        "swallowed UncompletedJobError",
        "ended as if nothing came, exit status 0",
    ]


def test_a_deferred_warning_ends_the_job_from_its_wait():
    assert _run("deferred").splitlines() == ["handler ran", "the job ends at its warning"]


def test_without_a_python_handler_usr2_is_left_alone():
    """Outside a submitit job (a test calling a wrapper directly) there is nothing to defer."""
    code = (
        "import signal; from slurm.usr2 import DeferredUsr2; u = DeferredUsr2(); "
        "print(signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL, u.pending); u.answer()"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "False"], out.stderr


def test_a_trainer_that_ignores_the_first_usr2_is_signalled_again(monkeypatch):
    """A trainer starts with USR2 ignored until its handler is in place; a warning that lands in
    between must still stop it, not leave it training until the scheduler kills the job."""
    from slurm.procs import pid_alive
    from slurm.usr2 import stop_and_wait

    late = (
        "import signal, sys, time\n"
        "time.sleep(1.5)\n"  # importing torch, reading the data
        "signal.signal(signal.SIGUSR2, lambda *a: sys.exit(75))\n"
        "time.sleep(60)\n"
    )
    from slurm.job import _ignore_usr2

    monkeypatch.setenv("TP_STOP_GRACE_S", "10")
    proc = subprocess.Popen([sys.executable, "-c", late], start_new_session=True, preexec_fn=_ignore_usr2)
    try:
        stop_and_wait(lambda: [proc.pid], lambda: pid_alive(proc.pid))
        assert proc.wait(timeout=5) == 75
    finally:
        proc.kill()
