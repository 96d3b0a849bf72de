"""The trainer's whole view of the store (rank 0 only): start an attempt, heartbeat, log an epoch,
finish a level, finish the job.

Writes never block or stop training. They go through a queue to one writer thread, which applies
them in order; when the store is unreachable (PostgreSQL restarting, a network blip, a locked
SQLite file) it keeps them, retries with exponential backoff, and writes them all once the store is
back. At the end of the job `finish_job` waits (up to TP_STORE_FLUSH_S, default 120 s) for the
queue to drain. Whatever still could not be written is not lost: every finished level's metrics are
on disk beside its weights, and launch, status and `db import` bring them into the store.
Every write is idempotent (upserts keyed by job, level and epoch), so a replay after a resume or a
retry after a half-applied write never duplicates a row.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from db.engine import StoreError, display_url, upsert
from db.schema import Attempt, Epoch, Event, Job, Level
from db.store import EPOCH_COLUMNS, Store
from db.tables import utcnow

_STOP = object()


class JobRecorder:
    def __init__(self, url: str, job_id: str, *, max_backoff_s: float = 30.0) -> None:
        self.url, self.job_id, self.max_backoff_s = url, job_id, max_backoff_s
        self.store: Store | None = None
        self.attempt_id: int | None = None
        self.failures = 0  # writes that had to wait for the store
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._writer, name="tp-recorder", daemon=True)
        self._thread.start()

    # ---- the trainer's calls (never raise, never block) ------------------------------------
    def start_attempt(self, sched_id: str | None, world_size: int, resumed_from: str | None) -> None:
        self._put(self._start_attempt, sched_id, world_size, resumed_from)

    def heartbeat(self, level_id: str, epoch: int) -> None:
        self._put(self._heartbeat, level_id, epoch)

    def log_epoch(self, level_id: str, epoch: int, metrics: dict[str, Any]) -> None:
        self._put(self._log_epoch, level_id, epoch, dict(metrics))

    def finish_level(self, level_id: str, result: dict[str, Any]) -> None:
        self._put(self._finish_level, level_id, result)

    def finish_job(self, state: str, message: str | None = None) -> None:
        self._put(self._finish_job, state, message)
        self.flush(float(os.environ.get("TP_STORE_FLUSH_S", "120")))

    def flush(self, timeout: float) -> bool:
        """Wait until every queued write is applied; False if the store stayed away."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._q.unfinished_tasks == 0:
                return True
            time.sleep(0.05)
        n = self._q.unfinished_tasks
        print(
            f"[recorder] {n} writes to {display_url(self.url)} could not be applied; the level "
            f"folders hold the results and the next launch or status imports them",
            file=sys.stderr,
        )
        return False

    def close(self) -> None:
        self._q.put(_STOP)
        self._thread.join(timeout=5)
        if self.store is not None:
            self.store.close()

    # ---- the writer thread -------------------------------------------------------------------
    def _put(self, fn: Callable, *args: Any) -> None:
        self._q.put((fn, args))

    def _writer(self) -> None:
        backoff = 1.0
        while True:
            item = self._q.get()
            if item is _STOP:
                self._q.task_done()
                return
            fn, args = item
            while True:
                try:
                    if self.store is None:
                        self.store = Store(self.url)
                    fn(*args)
                    if backoff > 1.0:
                        print(f"[recorder] store {display_url(self.url)} is back", file=sys.stderr, flush=True)
                    backoff = 1.0
                    break
                except (sa.exc.SQLAlchemyError, StoreError, OSError) as exc:
                    self.failures += 1
                    if backoff == 1.0:
                        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                        print(
                            f"[recorder] store {display_url(self.url)} unreachable ({first}); "
                            "training goes on, writes are kept and retried",
                            file=sys.stderr,
                            flush=True,
                        )
                    time.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                except Exception as exc:  # noqa: BLE001 - a bug in a write must not kill training either
                    print(f"[recorder] dropped a write ({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)
                    break
            self._q.task_done()

    def _session(self):
        assert self.store is not None
        return self.store.session()

    def _start_attempt(self, sched_id: str | None, world_size: int, resumed_from: str | None) -> None:
        with self._session() as s:
            job = s.get(Job, self.job_id)
            if job is None:
                print(
                    f"[recorder] job {self.job_id} is not recorded in {display_url(self.url)}; "
                    "its results stay on disk only",
                    file=sys.stderr,
                )
                return
            job.attempts += 1
            # The node as Slurm names it (what --exclude takes); the host name elsewhere.
            host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
            att = Attempt(
                job_id=self.job_id,
                attempt=job.attempts,
                sched_id=sched_id,
                host=host,
                world_size=world_size,
                resumed_from=resumed_from,
            )
            s.add(att)
            msg = f"attempt {job.attempts}" + (f", resumed from {resumed_from}" if resumed_from else "")
            s.add(
                Event(job_id=self.job_id, state_from=job.state, state_to="RUNNING", sched_id=sched_id, message=msg)
            )
            job.state, job.heartbeat_at, job.message = "RUNNING", utcnow(), None
            if sched_id:
                job.sched_id = sched_id
            s.flush()
            self.attempt_id = att.id

    def _heartbeat(self, level_id: str, epoch: int) -> None:
        with self._session() as s:
            s.execute(
                sa.update(Job).where(Job.job_id == self.job_id).values(level_id=level_id, heartbeat_at=utcnow())
            )

    def _log_epoch(self, level_id: str, epoch: int, metrics: dict[str, Any]) -> None:
        with self._session() as s:
            upsert(
                s.connection(),
                Epoch.__table__,
                [
                    {
                        "level_id": level_id,
                        "epoch": epoch,
                        "at": utcnow(),
                        **{c: metrics.get(c) for c in EPOCH_COLUMNS},
                    }
                ],
                ["level_id", "epoch"],
                list(EPOCH_COLUMNS),
            )
            s.execute(sa.update(Level).where(Level.level_id == level_id).values(epoch=epoch + 1))
            s.execute(
                sa.update(Job).where(Job.job_id == self.job_id).values(level_id=level_id, heartbeat_at=utcnow())
            )

    def _finish_level(self, level_id: str, result: dict[str, Any]) -> None:
        assert self.store is not None
        self.store.import_results({level_id: result})

    def _finish_job(self, state: str, message: str | None) -> None:
        with self._session() as s:
            job = s.get(Job, self.job_id)
            if job is None:
                return
            if job.state == "PRUNED" and state != "COMPLETED":
                # A search's pruner stopped it: its message says when and at what value.
                state, message = "PRUNED", job.message
            elif job.state == "CANCELLED" and state != "COMPLETED":
                # The user cancelled it: the trainer's own stop (scancel sends SIGTERM, which it
                # saves on) must not turn it back into a resumable PREEMPTED job.
                message = f"stopped after cancel ({state}: {message})"
                state = "CANCELLED"
            s.add(
                Event(
                    job_id=self.job_id,
                    state_from=job.state,
                    state_to=state,
                    sched_id=job.sched_id,
                    message=message,
                )
            )
            job.state, job.message, job.heartbeat_at, job.level_id = state, message, utcnow(), None
            if state == "FAILED":  # the trainer raised: a bug or bad data, which a retry repeats
                job.failure = "ERROR"
            if self.attempt_id is not None:
                att = s.get(Attempt, self.attempt_id)
                if att is not None:
                    att.ended_at, att.outcome = utcnow(), state
