"""One executor interface, the scheduler behind it: slurm (sbatch job arrays), local, debug.

The controller hands an executor the runs to start; the executor returns job ids and, later,
what its scheduler says about them. Local and debug jobs belong to this machine, so the
controller drives them to completion itself (`blocking`), keeping `array_parallelism` at a time.
submitit (and the job wrapper) are imported when a job is submitted, not to poll or cancel: `status`
polls on every refresh.
"""
from __future__ import annotations

import getpass
import os
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from slurm.procs import pid_alive

GONE = "GONE"  # the scheduler no longer knows the job


@dataclass(frozen=True)
class JobRequest:
    job_id: str
    job_file: str   # what the trainer trains (trainer/job.py)
    db_file: str    # a file holding the store URL, readable by its owner alone
    code_dir: str | None = None  # the code snapshot the job imports (core/code.py); None: the environment's


def code_env(code_dir: str | None, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process that must import the project from `code_dir`: first on the
    import path, and the working directory never on it (PYTHONSAFEPATH: `python -m` in a job
    started from the checkout would otherwise import the checkout)."""
    env = dict(os.environ if env is None else env)
    if code_dir:
        env["PYTHONPATH"] = code_dir + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONSAFEPATH"] = "1"
    return env


def code_setup(code_dir: str | None) -> list[str]:
    """The same, as lines of the sbatch script: they run again on every requeue of the job."""
    if not code_dir:
        return []
    import shlex

    return [f"export PYTHONPATH={shlex.quote(code_dir)}${{PYTHONPATH:+:$PYTHONPATH}}",
            "export PYTHONSAFEPATH=1"]


class Executor(ABC):
    kind: str = ""
    blocking: bool = False

    def __init__(self, params: Any, folder: Path) -> None:
        self.params = params  # orchestrator.plan.spec.ExecutorSpec
        self.folder = Path(folder)

    def _args(self, reqs: list[JobRequest]) -> tuple[list, ...]:
        n = len(reqs)
        return ([r.job_file for r in reqs], [r.db_file for r in reqs],
                [self.params.procs_per_node] * n, [self.params.nodes] * n, [r.code_dir for r in reqs])

    @abstractmethod
    def submit(self, reqs: list[JobRequest], dependency: str | None = None) -> list[Any]:
        """Start (or queue) one job per request, after `dependency` (Slurm's syntax) where the
        scheduler handles waiting; returns submitit Job objects in order."""

    @abstractmethod
    def poll(self, job_ids: list[str]) -> dict[str, str]:
        """Scheduler state per job id (Slurm's names), GONE when the scheduler has forgotten it."""

    @abstractmethod
    def cancel(self, job_ids: list[str]) -> None: ...


class SlurmExecutor(Executor):
    kind = "slurm"

    def _executor(self, dependency: str | None = None, code_dir: str | None = None) -> Any:
        import submitit

        p = self.params
        ex = submitit.SlurmExecutor(folder=self.folder / "%j", max_num_timeout=p.max_requeues)
        extra = {"open_mode": "append", **p.extra}  # a requeued job appends to its log
        ex.update_parameters(
            job_name="tp", partition=p.partition, nodes=p.nodes, ntasks_per_node=1,
            cpus_per_task=p.cpus_per_task, gpus_per_node=p.gpus_per_node or None,
            mem=f"{int(p.mem_gb * 1024)}M", time=p.timeout_min, signal_delay_s=p.signal_delay_s,
            array_parallelism=p.array_parallelism, additional_parameters=extra)
        if dependency:
            ex.update_parameters(dependency=dependency)
        if code_dir:  # the batch script imports the job wrapper and the trainer from the snapshot
            ex.update_parameters(setup=code_setup(code_dir))
        return ex

    def submit(self, reqs: list[JobRequest], dependency: str | None = None) -> list[Any]:
        from slurm.job import TrainerJob  # submitit: only to submit

        by_code: dict[str | None, list[JobRequest]] = {}
        for r in reqs:  # one array per snapshot (the controller groups them so already)
            by_code.setdefault(r.code_dir, []).append(r)
        handles = {}
        for code_dir, group in by_code.items():
            ex = self._executor(dependency, code_dir)
            for r, h in zip(group, ex.map_array(TrainerJob(), *self._args(group))):
                handles[r.job_id] = h
        return [handles[r.job_id] for r in reqs]

    # Up to this many job ids go to squeue by name (-j); more, and it lists the user's jobs instead.
    MAX_IDS_PER_CALL = 2000

    def poll(self, job_ids: list[str]) -> dict[str, str]:
        """One squeue call for all of them, whatever their number. `--states=all` also lists jobs
        that ended but that slurmctld still remembers (MinJobAge), with their end state, which
        a plain squeue leaves out (before: one scontrol call per such job)."""
        if not job_ids:
            return {}
        out: dict[str, str] = {jid: GONE for jid in job_ids}
        masters = sorted({jid.split("_")[0] for jid in job_ids})
        which = (["-j", ",".join(masters)] if len(masters) <= self.MAX_IDS_PER_CALL
                 else ["-u", getpass.getuser()])
        sq = subprocess.run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%r", *which],
                            capture_output=True, text=True, timeout=60)
        for line in sq.stdout.splitlines():
            jid, state, reason = (line.split("|") + ["", ""])[:3]
            if jid in out:
                # A job waiting on one that failed waits forever: report it so the controller
                # can take it back (it stays PLANNED until its prerequisite is retried).
                out[jid] = "DEPENDENCY_FAILED" if reason.strip() == "DependencyNeverSatisfied" else state.strip()
        return out

    def cancel(self, job_ids: list[str]) -> None:
        if job_ids:
            subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)


class LocalExecutor(Executor):
    """Jobs are processes on this machine (submitit's LocalExecutor); the job id is the pid."""
    kind = "local"
    blocking = True

    def submit(self, reqs: list[JobRequest], dependency: str | None = None) -> list[Any]:
        import submitit

        from slurm.job import TrainerJob  # submitit: only to submit

        ex = submitit.LocalExecutor(folder=self.folder / "%j", max_num_timeout=self.params.max_requeues)
        ex.update_parameters(timeout_min=self.params.timeout_min, tasks_per_node=1,
                             signal_delay_s=self.params.signal_delay_s)
        out = []
        for r, args in zip(reqs, zip(*self._args(reqs))):
            # submitit starts the job's process now, with this process's environment
            saved = dict(os.environ)
            os.environ.clear()
            os.environ.update(code_env(r.code_dir, saved))
            try:
                out.append(ex.submit(TrainerJob(), *args))
            finally:
                os.environ.clear()
                os.environ.update(saved)
        return out

    def poll(self, job_ids: list[str]) -> dict[str, str]:
        # One listing of /proc, then a read only for the pids that are there (a zombie check).
        try:
            present = set(os.listdir("/proc"))
        except OSError:
            present = None
        return {jid: "RUNNING" if (present is None or jid in present) and pid_alive(jid) else GONE
                for jid in job_ids}

    def cancel(self, job_ids: list[str]) -> None:
        import signal

        for jid in job_ids:
            try:
                os.kill(int(jid), signal.SIGINT)  # what submitit's LocalJob.cancel sends
            except (ProcessLookupError, ValueError):
                pass


class DebugExecutor(Executor):
    """Runs each job inside this process when its result is asked for: breakpoints work."""
    kind = "debug"
    blocking = True

    def submit(self, reqs: list[JobRequest], dependency: str | None = None) -> list[Any]:
        import submitit

        from slurm.job import TrainerJob  # submitit: only to submit

        ex = submitit.DebugExecutor(folder=self.folder / "debug")
        return [ex.submit(TrainerJob(), *args) for args in zip(*self._args(reqs))]

    def poll(self, job_ids: list[str]) -> dict[str, str]:
        return {jid: GONE for jid in job_ids}

    def cancel(self, job_ids: list[str]) -> None:
        return None


EXECUTORS: dict[str, Callable[[Any, Path], Executor]] = {
    cls.kind: cls for cls in (SlurmExecutor, LocalExecutor, DebugExecutor)
}


def make_executor(kind: str, params: Any, folder: Path) -> Executor:
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}; known: {', '.join(EXECUTORS)}")
    return EXECUTORS[kind](params, folder)
