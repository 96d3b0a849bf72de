"""One executor interface, the scheduler behind it: slurm (sbatch job arrays), local, debug.

The controller hands an executor the runs to start; the executor returns job ids and, later,
what its scheduler says about them. Local and debug jobs belong to this machine, so the
controller drives them to completion itself (`blocking`), keeping `array_parallelism` at a time.
submitit (and the job wrapper) are imported when a job is submitted, not to poll or cancel: `status`
polls on every refresh.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slurm.procs import descendants, pid_alive
from slurm.squeue import GONE, outside_job_env, poll


@dataclass(frozen=True)
class JobRequest:
    job_id: str
    job_file: str  # what the trainer trains (trainer/job.py)
    db_file: str  # a file holding the store URL, readable by its owner alone
    code_dir: str | None = None  # the code snapshot the job imports (core/code.py); None: the environment's
    # Variables the job's processes get on top of this process's environment (resume --reuse:
    # TP_REUSE), so that the submitting process never has to set them in its own.
    env: tuple[tuple[str, str], ...] = ()


def code_env(code_dir: str | None, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the job wrapper (slurm/job.py) of a job whose trainer imports
    `code_dir`: the code that submits it (this checkout, or the installed package) first on the
    import path, and the working directory never on it (PYTHONSAFEPATH). Never the snapshot
    itself: the wrapper checks it with code it does not hold before any process imports from it
    (a sitecustomize.py there would run at the start of any Python with it on its path), then
    starts the trainer with it first on the path."""
    env = dict(os.environ if env is None else env)
    if code_dir:
        from core.code import ROOT  # core.code: only to start a job's process

        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONSAFEPATH"] = "1"
    return env


def code_setup(code_dir: str | None, env: tuple[tuple[str, str], ...] = ()) -> list[str]:
    """The same, as lines of the sbatch script: they run again on every requeue of the job.
    `env`: a JobRequest's own variables, exported after."""
    extra = [f"export {k}={shlex.quote(v)}" for k, v in env]
    if not code_dir:
        return extra
    from core.code import ROOT  # core.code: only to start a job's process

    return [
        f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}",
        "export PYTHONSAFEPATH=1",
        *extra,
    ]


class _InEnv:
    """A debug job's callable, run inside this process with the request's variables set for its
    duration only (the trainer reads them from os.environ), and the environment put back."""

    def __init__(self, fn: Callable[..., Any], env: tuple[tuple[str, str], ...]) -> None:
        self.fn, self.env = fn, env

    def __call__(self, *args: Any) -> Any:
        saved = {k: os.environ.get(k) for k, _ in self.env}
        os.environ.update(dict(self.env))
        try:
            return self.fn(*args)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class Executor(ABC):
    kind: str = ""
    blocking: bool = False

    def __init__(self, params: Any, folder: Path) -> None:
        self.params = params  # orchestrator.plan.spec.ExecutorSpec
        self.folder = Path(folder)

    def _args(self, reqs: list[JobRequest]) -> tuple[list, ...]:
        n = len(reqs)
        return (
            [r.job_file for r in reqs],
            [r.db_file for r in reqs],
            [self.params.procs_per_node] * n,
            [self.params.nodes] * n,
            [r.code_dir for r in reqs],
            [self.params.rendezvous_timeout_s] * n,
        )

    @property
    def pack(self) -> int:
        """Chains per scheduler job (executor.pack): one-process jobs only (the spec refuses it
        for DDP); 1 for the debug executor, which runs jobs inside this process."""
        return max(1, int(getattr(self.params, "pack", 1) or 1))

    def packs(self, reqs: list[JobRequest]) -> list[list[JobRequest]]:
        """`reqs` in scheduler jobs of `pack` chains (the last may hold fewer), never two
        snapshots (or environments) in one job."""
        by_code: dict[tuple[str | None, tuple[tuple[str, str], ...]], list[JobRequest]] = {}
        for r in reqs:
            by_code.setdefault((r.code_dir, r.env), []).append(r)
        k = self.pack
        return [group[i : i + k] for group in by_code.values() for i in range(0, len(group), k)]

    def _packed_args(self, packs: list[list[JobRequest]], cpus_per_chain: int | None) -> tuple[list, ...]:
        """PackedJob's arguments, one entry per scheduler job."""
        n = len(packs)
        return (
            [[r.job_file for r in p] for p in packs],
            [p[0].db_file for p in packs],
            [p[0].code_dir for p in packs],
            [cpus_per_chain] * n,
        )

    @abstractmethod
    def submit(
        self, reqs: list[JobRequest], dependency: str | None = None, overrides: dict[str, Any] | None = None
    ) -> list[Any]:
        """Start (or queue) one job per request, after `dependency` (Slurm's syntax) where the
        scheduler handles waiting; returns submitit Job objects in order. With `pack` > 1, up to
        `pack` requests share one scheduler job, and so one Job object."""

    @abstractmethod
    def poll(self, job_ids: list[str]) -> dict[str, str]:
        """Scheduler state per job id (Slurm's names), GONE when the scheduler has forgotten it."""

    @abstractmethod
    def cancel(self, job_ids: list[str]) -> None: ...


class SlurmExecutor(Executor):
    kind = "slurm"

    def _executor(
        self,
        dependency: str | None = None,
        overrides: dict[str, Any] | None = None,
        code_dir: str | None = None,
        chains: int = 1,
        env: tuple[tuple[str, str], ...] = (),
    ) -> Any:
        """`chains` > 1: a packed job (slurm/job.py PackedJob), which asks for the GPUs of one
        job and `chains` times its CPUs and memory."""
        import submitit  # submitit (0.2 s)

        p = self.params
        over = overrides or {}
        ex = submitit.SlurmExecutor(folder=self.folder / "%j", max_num_timeout=p.max_requeues)
        options = p.sbatch_options() if hasattr(p, "sbatch_options") else dict(p.extra)
        extra = {"open_mode": "append", **options}  # a requeued job appends to its log
        if over.get("exclude"):  # nodes this job's earlier attempts failed on (the supervisor's)
            extra["exclude"] = over["exclude"]
        mem_gb = float(over.get("mem_gb") or p.mem_gb) * chains
        ex.update_parameters(
            job_name="tp",
            partition=p.partition,
            nodes=p.nodes,
            ntasks_per_node=1,
            cpus_per_task=p.cpus_per_task * chains,
            gpus_per_node=p.gpus_per_node or None,
            mem=f"{int(mem_gb * 1024)}M",
            time=p.timeout_min,
            signal_delay_s=p.signal_delay_s,
            array_parallelism=p.array_parallelism,
            additional_parameters=extra,
        )
        if dependency:
            ex.update_parameters(dependency=dependency)
        if code_dir or env:  # the job wrapper imports this code, and starts the trainer on the snapshot
            ex.update_parameters(setup=code_setup(code_dir, env))
        return ex

    def submit(
        self, reqs: list[JobRequest], dependency: str | None = None, overrides: dict[str, Any] | None = None
    ) -> list[Any]:
        """`overrides`: sbatch settings of these jobs on top of the sweep's (mem_gb, exclude).
        One array per snapshot (the controller groups them so already) and, when packed, per
        number of chains in a job: an array's tasks all ask for the same CPUs and memory."""
        from slurm.job import PackedJob, TrainerJob  # submitit: only to submit

        arrays: dict[tuple[str | None, int, tuple[tuple[str, str], ...]], list[list[JobRequest]]] = {}
        for pack in self.packs(reqs):
            arrays.setdefault((pack[0].code_dir, len(pack), pack[0].env), []).append(pack)
        handles = {}
        with outside_job_env():
            for (code_dir, n, env), packs in arrays.items():
                ex = self._executor(dependency, overrides, code_dir, chains=n, env=env)
                if n == 1:
                    jobs = ex.map_array(TrainerJob(), *self._args([p[0] for p in packs]))
                else:
                    jobs = ex.map_array(PackedJob(), *self._packed_args(packs, self.params.cpus_per_task))
                for pack, h in zip(packs, jobs):
                    for r in pack:
                        handles[r.job_id] = h
        return [handles[r.job_id] for r in reqs]

    def limits(self) -> Any:
        """What the cluster allows these jobs (slurm/limits.py): array size, QOS submit limits."""
        from slurm.limits import read_limits  # scontrol and sacctmgr calls: only where a cluster is asked

        p = self.params
        return read_limits(p.sbatch_options() if hasattr(p, "sbatch_options") else dict(p.extra or {}))

    # Up to this many job ids go to squeue by name (-j); more, and it lists the user's jobs instead.
    MAX_IDS_PER_CALL = 2000

    def poll(self, job_ids: list[str]) -> dict[str, str]:
        """One squeue call for all of them, whatever their number (slurm/squeue.py)."""
        return poll(job_ids, self.MAX_IDS_PER_CALL)

    def cancel(self, job_ids: list[str]) -> None:
        if job_ids:
            subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)


class LocalExecutor(Executor):
    """Jobs are processes on this machine (submitit's LocalExecutor); the job id is the pid."""

    kind = "local"
    blocking = True

    def submit(
        self, reqs: list[JobRequest], dependency: str | None = None, overrides: dict[str, Any] | None = None
    ) -> list[Any]:
        import submitit  # submitit (0.2 s)

        from slurm.job import PackedJob, TrainerJob  # submitit: only to submit

        ex = submitit.LocalExecutor(folder=self.folder / "%j", max_num_timeout=self.params.max_requeues)
        ex.update_parameters(
            timeout_min=self.params.timeout_min, tasks_per_node=1, signal_delay_s=self.params.signal_delay_s
        )
        handles = {}
        for pack in self.packs(reqs):
            # submitit starts the job's process now, with this process's environment
            saved = dict(os.environ)
            os.environ.clear()
            os.environ.update({**code_env(pack[0].code_dir, saved), **dict(pack[0].env)})
            try:
                if len(pack) == 1:
                    h = ex.submit(TrainerJob(), *next(zip(*self._args(pack))))
                else:  # each trainer takes the threads it takes alone: this process's affinity
                    h = ex.submit(PackedJob(), *next(zip(*self._packed_args([pack], None))))
            finally:
                os.environ.clear()
                os.environ.update(saved)
            for r in pack:
                handles[r.job_id] = h
        return [handles[r.job_id] for r in reqs]

    def poll(self, job_ids: list[str]) -> dict[str, str]:
        # One listing of /proc, then a read only for the pids that are there (a zombie check).
        try:
            present = set(os.listdir("/proc"))
        except OSError:
            present = None
        return {
            jid: "RUNNING" if (present is None or jid in present) and pid_alive(jid) else GONE for jid in job_ids
        }

    def cancel(self, job_ids: list[str]) -> None:
        """SIGTERM to the job's processes: the trainer saves and stops, as on Slurm (it runs in a
        session of its own, slurm/job.py, where nothing sent to the controller reaches it: a
        cancelled local job used to train on to the end), submitit's task ends with it, and
        submitit's controller ends at once, so it never requeues the job. Not SIGINT, what
        submitit's LocalJob.cancel sends the controller: its KeyboardInterrupt printed a
        traceback on the launch's terminal for every cancelled job, a search's pruned trials
        included."""
        for jid in job_ids:
            try:
                below = descendants(int(jid))
            except ValueError:
                continue
            for pid in below:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                os.kill(int(jid), signal.SIGTERM)
            except ProcessLookupError:
                pass


class DebugExecutor(Executor):
    """Runs each job inside this process when its result is asked for: breakpoints work."""

    kind = "debug"
    blocking = True

    def submit(
        self, reqs: list[JobRequest], dependency: str | None = None, overrides: dict[str, Any] | None = None
    ) -> list[Any]:
        import submitit  # submitit (0.2 s)

        from slurm.job import TrainerJob  # submitit: only to submit

        ex = submitit.DebugExecutor(folder=self.folder / "debug")
        return [ex.submit(_InEnv(TrainerJob(), r.env), *args) for r, args in zip(reqs, zip(*self._args(reqs)))]

    @property
    def pack(self) -> int:
        return 1  # one job at a time, inside this process: breakpoints work

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
