"""Submit jobs to an executor, in dependency order.

A job may start once the levels its chain continues from (trained by other jobs) are finished.
For a scheduler (Slurm) the controller hands that wait to the scheduler: jobs that wait for the
same jobs go in one array with `--dependency=afterok:...`, and never hold a GPU while they wait.
Local and debug jobs belong to this machine, so the controller drives them itself, starting a job
when what it waits for is done, `array_parallelism` at a time. A job whose prerequisite failed is
not submitted: it stays PLANNED, says why, and `resume --include-failed` takes both.

Each job is claimed in the store before it is submitted (a compare-and-set), so of two launches
racing for the same job exactly one submits it. The store's URL reaches jobs through a file only
its owner can read, never through a command line, a pickle or a log.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.atomic import write_text_atomic
from core.code import snapshot_problem
from core.errors import Failure
from db.reader import ACTIVE_STATES
from db.schema import Job
from db.store import Store
from orchestrator.control.reconcile import store_level_dirs, sync_from_disk, wrapper_report
from slurm.executors import JobRequest, make_executor

_BLOCKED = ("FAILED", "CANCELLED", "TIMEOUT", "LOST", "PREEMPTED")


class SubmitError(Failure, RuntimeError):
    """The scheduler refused or could not be reached; the jobs stay as they were (PLANNED...)."""


def executor_for(spec: Any, kind: str):
    return make_executor(kind, spec.executor, Path(spec.output_dir).expanduser().resolve() / "_jobs" / spec.name)


def db_url_file(url: str, output_dir: str) -> str:
    """The store URL in OUTPUT/_jobs/secrets/<hash>.url, readable by its owner alone."""
    folder = Path(output_dir).expanduser().resolve() / "_jobs" / "secrets"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    path = folder / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".url")
    if not path.exists() or path.read_text() != url:
        write_text_atomic(path, url)  # owner-only, like the folder
    return str(path)


class _Code:
    """The code snapshot each job imports: named in its job file, checked once per folder."""

    def __init__(self) -> None:
        self.problem: dict[str, str | None] = {}

    def of(self, job: Job) -> tuple[str | None, str | None]:
        """(code_dir, why it cannot be used): a job planned before snapshots has none (it
        imports the environment's code, as it always did)."""
        try:
            code_dir = json.loads(Path(job.job_file).read_text()).get("code_dir")
        except (OSError, ValueError, AttributeError):
            return None, f"its job file {job.job_file} cannot be read"
        if not code_dir:
            return None, None
        if code_dir not in self.problem:
            self.problem[code_dir] = snapshot_problem(code_dir)
        if self.problem[code_dir]:
            return code_dir, (
                f"its code snapshot {code_dir} is not the code its name says ({self.problem[code_dir]}); "
                "launch the sweep again to plan it with the code there is now"
            )
        return code_dir, None


def _prerequisites(store: Store, job: Job) -> dict[str, Job | None]:
    """Jobs in charge of the unfinished levels `job` continues from (None: nobody is). A level
    finished on disk but not yet in the store (its trainer lost the store) counts as finished."""

    parents = store.external_parents(job)
    unfinished = [lid for lid, st in parents.items() if not st.finished]
    if unfinished and sync_from_disk(store, store_level_dirs(store, unfinished)):
        parents = store.external_parents(job)
    waits: dict[str, Job | None] = {}
    owners = []
    for lid, st in parents.items():
        if not st.finished:
            if st.job_id is None:
                waits[f"level {lid}"] = None
            else:
                owners.append(st.job_id)
    for jid, dep in store.jobs(sorted(set(owners))).items():
        waits[jid] = dep
    return waits


class Room:
    """How many more jobs the scheduler takes now (None: no limit), and why; each submitted
    chunk takes its share."""

    def __init__(self, left: int | None = None, why: str = "", array_max: int | None = None) -> None:
        self.left, self.why, self.array_max = left, why, array_max

    @classmethod
    def of(cls, limits: Any) -> Room:
        if limits is None:
            return cls()
        from slurm.limits import room  # squeue: a call per submission pass

        left, why = room(limits)
        return cls(left, why, limits.max_array_size)

    def chunks(self, jobs: list[Job], pack: int = 1) -> list[list[Job]]:
        """Arrays that fit MaxArraySize (tasks 0..MaxArraySize-1), as many jobs as there is room.
        `pack`: chains per scheduler job (executor.pack), so per array task and per unit of room."""
        size = max(1, self.array_max or len(jobs) or 1) * pack
        take = jobs if self.left is None else jobs[: max(0, self.left) * pack]
        return [take[i : i + size] for i in range(0, len(take), size)]

    def took(self, n: int) -> None:
        if self.left is not None:
            self.left = max(0, self.left - n)

    def full(self) -> bool:
        return self.left is not None and self.left <= 0


def submit_jobs(
    store: Store,
    spec: Any,
    todo: list[Job],
    kind: str,
    result: Any,
    on_progress: Callable[[], None] | None = None,
    limits: Any = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Submit `todo` (claimed one by one). For a scheduler, `limits` (slurm/limits.py Limits;
    read here when not given) splits arrays into chunks that fit and keeps within the room the
    QOS and MaxJobCount leave: what does not fit stays PLANNED, with the reason, in
    `result.waiting`. `env`: variables the jobs' processes get on top of this process's
    environment (resume --reuse: TP_REUSE)."""
    if not todo:
        return
    ex = executor_for(spec, kind)
    db_file = db_url_file(store.url, spec.output_dir)
    # Jobs inherit this process's environment (sbatch --export=ALL, local subprocesses): the URL,
    # password and all, must reach them through the file only.
    os.environ.pop("TP_DB_URL", None)
    if ex.blocking:
        driver = LocalDriver(store, spec, ex, db_file, result, env)
        driver.add(todo)
        driver.drive(on_progress)
    else:
        if limits is None and hasattr(ex, "limits"):
            limits = ex.limits()
        _to_scheduler(store, ex, todo, db_file, result, Room.of(limits), _env_items(env))


def _env_items(env: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((env or {}).items()))


def _overrides_key(job: Job) -> str:
    return json.dumps(job.sbatch or {}, sort_keys=True)


def _to_scheduler(
    store: Store,
    ex: Any,
    todo: list[Job],
    db_file: str,
    result: Any,
    room: Room | None = None,
    env: tuple[tuple[str, str], ...] = (),
) -> None:
    room = room or Room()
    why: str | None  # why a job waits (None: it goes now)
    queue = {j.job_id: j for j in todo}
    code = _Code()
    while queue:
        if room.full():
            for job in queue.values():
                why = f"waits for room: {room.why}, all taken; submitted as jobs end"
                result.waiting[job.job_id] = why
                if job.message != why:
                    store.note(job.job_id, why)
            result.limited = room.why
            break
        groups: dict[tuple[Any, ...], list[Job]] = {}
        code_of: dict[str, str | None] = {}
        this_round = set(queue)  # a job grouped earlier in this round is not submitted yet either
        for job in list(queue.values()):
            deps, why = [], None
            code_of[job.job_id], why = code.of(job)
            for ref, dep in _prerequisites(store, job).items():
                if dep is None:
                    why = f"no job trains {ref}"
                elif dep.job_id in this_round:
                    why = "later"  # submitted in a later round, once it has a scheduler id
                elif dep.state in ACTIVE_STATES and dep.sched_id:
                    deps.append(dep.sched_id)
                elif dep.job_id in result.submitted:
                    deps.append(result.submitted[dep.job_id])
                else:
                    why = f"waits for job {dep.job_id} ({dep.state}); resume --include-failed retries it"
                if why:
                    break
            if why == "later":
                continue
            del queue[job.job_id]
            if why:
                result.waiting[job.job_id] = why
                if job.message != why:
                    store.note(job.job_id, why)
                continue
            groups.setdefault((code_of[job.job_id], tuple(sorted(deps)), _overrides_key(job)), []).append(job)
        if not groups:
            for job in queue.values():  # a cycle cannot happen (levels form trees); be safe anyway
                result.waiting[job.job_id] = "waits for a job that could not be submitted"
            break
        for (code_dir, deps, _), group in groups.items():
            chunks = room.chunks(group, ex.pack)
            for job in group[sum(len(c) for c in chunks) :]:
                queue[job.job_id] = job  # no room left for it this round: the loop above says so
            for jobs in chunks:
                refused = _submit_chunk(store, ex, jobs, deps, db_file, result, room, len(queue), code_dir, env)
                if refused:
                    for job in jobs:
                        queue[job.job_id] = job
                    room.left, room.why = 0, refused


def _submit_chunk(
    store: Store,
    ex: Any,
    jobs: list[Job],
    deps: tuple[str, ...],
    db_file: str,
    result: Any,
    room: Room,
    queued: int,
    code_dir: str | None = None,
    env: tuple[tuple[str, str], ...] = (),
) -> str | None:
    """One sbatch array. Returns the limit that refused it (the jobs go back to their state),
    None when it was submitted; raises SubmitError for any other failure."""
    claimed = [(j, j.state) for j in jobs if store.claim(j.job_id, (j.state,))]
    if not claimed:
        return None
    reqs = [JobRequest(j.job_id, j.job_file, db_file, code_dir, env) for j, _ in claimed]
    overrides = claimed[0][0].sbatch or None
    try:
        handles = ex.submit(reqs, dependency=("afterok:" + ":".join(deps)) if deps else None, overrides=overrides)
    except Exception as exc:  # noqa: BLE001 - sbatch missing, slurmctld down, a rejected option, a limit...
        for j, prev in claimed:
            store.unclaim(j.job_id, prev)
        from slurm.limits import limit_refusal  # scontrol and sacctmgr calls: only where a cluster is asked

        limit = limit_refusal(str(exc))
        if limit is not None:
            return f"the scheduler refused more jobs ({limit})"
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        done = (
            f"after {len(result.submitted)} jobs were submitted, the other "
            if result.submitted
            else "nothing was submitted, "
        )
        raise SubmitError(
            f"submission to {ex.kind} failed, {done}{queued + len(reqs)} jobs stay as they were: {detail}"
        ) from None
    room.took(len({str(h.job_id) for h in handles}))  # scheduler jobs: a packed one holds several
    said = None
    if overrides:
        said = f"submitted to {ex.kind} with " + ", ".join(
            f"{'--mem=' + format(float(v), 'g') + 'G' if k == 'mem_gb' else f'--{k}={v}'}"
            for k, v in sorted(overrides.items())
        )
    kept: set[str] = set()
    for (j, prev), h in zip(claimed, handles):
        if store.submitted(j.job_id, prev, str(h.job_id), ex.kind, said):
            result.submitted[j.job_id] = str(h.job_id)
            kept.add(str(h.job_id))
    # Cancelled while being submitted: take the submission back, unless it is a packed job that
    # trains other chains too (it does not start the cancelled one: slurm/job.py PackedJob).
    for h in {str(h.job_id) for h in handles} - kept:
        ex.cancel([h])
    return None


class _Patient:
    """The store as the local driver sees it: an outage (PostgreSQL restarting) makes it wait and
    retry, not die, since the jobs it drives keep training meanwhile."""

    def __init__(self, store: Store, give_up_s: float = 900.0) -> None:
        self.store, self.give_up_s = store, give_up_s

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import sqlalchemy as sa  # SQLAlchemy (0.3 s)

        start, warned = time.monotonic(), False
        while True:
            try:
                return fn(*args, **kwargs)
            except (sa.exc.OperationalError, sa.exc.InterfaceError):
                if time.monotonic() - start > self.give_up_s:
                    raise
                if not warned:
                    print(
                        f"store {self.store.display_url} unreachable; jobs keep training, waiting for it",
                        flush=True,
                    )
                    warned = True
                time.sleep(2.0)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        fn = getattr(self.store, name)
        return lambda *args, **kwargs: self.run(fn, *args, **kwargs)


class LocalDriver:
    """Local and debug jobs, run here: each starts once what it continues from is finished,
    `array_parallelism` at a time. `step()` does one round, so a caller (the Optuna search) can
    interleave its own work; `drive()` runs everything queued to the end."""

    def __init__(
        self, store: Store, spec: Any, ex: Any, db_file: str, result: Any, env: Mapping[str, str] | None = None
    ) -> None:
        self.patient = _Patient(store)
        self.ex, self.db_file, self.result = ex, db_file, result
        self.env = _env_items(env)  # the jobs' own variables (JobRequest.env)
        self.cap = 1 if ex.kind == "debug" else spec.executor.array_parallelism  # scheduler jobs
        self.pack = ex.pack  # chains per job (executor.pack)
        self.queue: list[Job] = []
        self.queued: set[str] = set()
        self.active: list[tuple[Job, Any]] = []
        self.code = _Code()

    @property
    def busy(self) -> bool:
        return bool(self.queue or self.active)

    def add(self, jobs: list[Job]) -> None:
        for j in jobs:
            if j.job_id not in self.queued:
                self.queue.append(j)
                self.queued.add(j.job_id)

    def _running(self) -> int:
        return len({str(h.job_id) for _, h in self.active})

    def _start(self) -> None:
        """Start the queued jobs whose prerequisites are finished, `pack` to a process (slurm/job.py
        PackedJob when more than one), `cap` processes at a time."""
        store = self.patient
        free = self.cap - self._running()
        ready: dict[str | None, list[Job]] = {}  # code snapshot -> jobs claimed this round
        for job in list(self.queue):
            packs = sum(-(-len(js) // self.pack) for js in ready.values())
            if packs >= free and all(len(js) % self.pack == 0 for js in ready.values()):
                break
            start = True
            code_dir, why = self.code.of(job)
            for ref, dep in ({} if why else store.run(_prerequisites, store.store, job)).items():
                if dep is None:
                    why = f"no job trains {ref}"
                elif dep.job_id in self.queued or dep.state in ACTIVE_STATES:
                    start = False  # queued here, running elsewhere, or finishing: wait for it
                else:
                    why = f"waits for job {dep.job_id} ({dep.state}); resume --include-failed retries it"
                if why:
                    break
            if why:
                self.queue.remove(job)
                self.queued.discard(job.job_id)
                self.result.waiting[job.job_id] = why
                store.note(job.job_id, why)
                continue
            if not start:
                continue
            if len(ready.get(code_dir, [])) % self.pack == 0 and packs >= free:
                continue  # it would start one process too many
            self.queue.remove(job)
            if not store.claim(job.job_id, (job.state,)):
                self.queued.discard(job.job_id)
                continue  # another launch took it
            ready.setdefault(code_dir, []).append(job)
        for code_dir, jobs in ready.items():
            for i in range(0, len(jobs), self.pack):
                self._launch(jobs[i : i + self.pack], code_dir)

    def _launch(self, jobs: list[Job], code_dir: str | None) -> None:
        store = self.patient
        reqs = [JobRequest(j.job_id, j.job_file, self.db_file, code_dir, self.env) for j in jobs]
        handles = self.ex.submit(reqs)
        kept = False
        for job, handle in zip(jobs, handles):
            self.active.append((job, handle))  # tracked before anything else can fail
            self.result.submitted[job.job_id] = str(handle.job_id)
            kept |= store.submitted(job.job_id, job.state, str(handle.job_id), self.ex.kind)
        if not kept:  # all cancelled while being started (a packed job skips a cancelled chain)
            self.ex.cancel([str(handles[0].job_id)])

    def step(self) -> None:
        self._start()
        for job, handle in list(self.active):
            if self.ex.kind == "debug" or handle.done():
                exc = handle.exception()
                if exc is not None:
                    self.result.failed[job.job_id] = str(exc).strip().splitlines()[-1][:500]
                # A trainer that died before reporting leaves its job active: say so, with what
                # its wrapper saw (killed: OUT_OF_MEMORY), else as a job that died without a word.
                said = wrapper_report(job)
                self.patient.set_job_state(
                    job.job_id,
                    "FAILED",
                    only_from=ACTIVE_STATES,
                    failure=str(said.get("failure") or "LOST"),
                    message=said.get("message")
                    or f"job {handle.job_id} ended without reporting: "
                    f"{self.result.failed.get(job.job_id, 'no result')}",
                )
                self.active.remove((job, handle))
                self.queued.discard(job.job_id)

    def drive(self, on_progress: Callable[[], None] | None = None) -> None:
        import sqlalchemy as sa  # SQLAlchemy (0.3 s)

        while self.busy:
            self.step()
            if on_progress:
                try:
                    on_progress()
                except (sa.exc.OperationalError, sa.exc.InterfaceError):
                    pass  # the bar waits for the store like everything else
            if self.busy:
                time.sleep(0.5)
