"""A job's entry point: `torchrun --nproc_per_node=N -m trainer.job JOB_FILE [--db-file F]`.

JOB_FILE (written by the controller) names the levels to train, in order, and the folder they live
in; each level's own LEVEL_DIR/level.json says what it computes. The store's URL comes from a file
only its owner can read (`--db-file`) or from TP_DB_URL, never from the command line, where `ps`
would show its password. Rank 0 reports to the store and, for runs that ask for it, to W&B
(trainer/wandb_recorder.py); every rank trains.
Exit status: 0 completed, 75 stopped by a signal with its checkpoint saved (resume me), 1 failed.
A failure's message is the exception's line and the job log's path (TP_JOB_LOG, set by the job
wrapper), so that `status` says what went wrong and where to read more.

TP_FAULT (tests only) injects faults: `KIND:PREFIX[:TIMES]`, comma-separated, fails a job whose
id, a level id or a run id starts with PREFIX, at most TIMES times (counted in JOB_FILE's folder),
as KIND: `error` raises in the trainer (a bug), `oom` SIGKILLs the trainer (as the kernel's OOM
killer does), `lost` SIGKILLs the job wrapper and the trainer (as a node that dies does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from core.atomic import write_json_atomic
from core.layout import status_path
from trainer.distributed import EXIT_PREEMPTED, StopFlag, init_distributed, shutdown


def job_id_from_env() -> str | None:
    if os.environ.get("TP_JOB_ID"):
        return os.environ["TP_JOB_ID"]
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def read_db_url(db_file: str | None) -> str | None:
    if db_file:
        try:
            return Path(db_file).read_text().strip() or None
        except OSError as exc:  # train anyway: the level folders are the record, imported later
            print(
                f"[trainer] cannot read the store URL from {db_file} ({exc.strerror}); training without the store",
                file=sys.stderr,
                flush=True,
            )
            return None
    return os.environ.get("TP_DB_URL") or None


class Recorders:
    """The trainer's one recorder, fanned out to each of ours (the store's, W&B's). A recorder's
    exception is printed and goes no further: reporting never fails training."""

    def __init__(self, recorders: list) -> None:
        self.recorders = recorders

    def _each(self, name: str, *args) -> None:
        for rec in self.recorders:
            fn = getattr(rec, name, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - a recorder's failure must never stop training
                print(
                    f"[recorder] {type(rec).__name__}.{name} failed ({type(exc).__name__}: {exc}); "
                    "training goes on",
                    file=sys.stderr,
                    flush=True,
                )

    def heartbeat(self, level_id: str, epoch: int) -> None:
        self._each("heartbeat", level_id, epoch)

    def log_epoch(self, level_id: str, epoch: int, metrics: dict) -> None:
        self._each("log_epoch", level_id, epoch, metrics)

    def finish_level(self, level_id: str, result: dict) -> None:
        self._each("finish_level", level_id, result)

    def finish_job(self, state: str, message: str | None) -> None:
        self._each("finish_job", state, message)

    def close(self) -> None:
        self._each("close")


def failure_message(exc: BaseException, log: str | None) -> str:
    """The exception's own line (`ValueError: bad shape`, what a traceback ends with), and where
    the whole traceback is."""
    lines = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
    text = (lines[0] if lines else type(exc).__name__)[:1500]
    return text + (f" (log: {log})" if log else "")


def inject_fault(spec: str, job: dict, job_file: Path, recorder: Recorders | None) -> None:
    """TP_FAULT, for tests (see the module's docstring)."""
    import signal  # only under TP_FAULT, for tests

    ids = [str(job["job_id"]), *map(str, job["levels"]), *map(str, job.get("runs") or {})]
    for item in spec.split(","):
        kind, _, rest = item.strip().partition(":")
        prefix, _, times = rest.partition(":")
        if not prefix or not any(i.startswith(prefix) for i in ids):
            continue
        marker = job_file.with_name(f"{job['job_id']}.fault-{kind}")
        fired = len(marker.read_text().splitlines()) if marker.exists() else 0
        if times and fired >= int(times):
            continue
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        print(f"[trainer] TP_FAULT: injecting {kind} ({item.strip()})", file=sys.stderr, flush=True)
        if recorder is not None:
            for rec in recorder.recorders:  # the attempt (and its node) must reach the store first
                if hasattr(rec, "flush"):
                    rec.flush(30)
        if kind == "error":
            raise RuntimeError(f"injected fault ({item.strip()})")
        if kind == "lost":
            os.kill(os.getppid(), signal.SIGKILL)
        if kind in ("oom", "lost"):
            os.kill(os.getpid(), signal.SIGKILL)
        raise ValueError(f"TP_FAULT: unknown kind {kind!r} (error, oom, lost)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer.job")
    ap.add_argument("job_file", type=Path)
    ap.add_argument("--db-file", help="file holding the results store URL (else TP_DB_URL)")
    args = ap.parse_args(argv)
    try:
        job = json.loads(args.job_file.read_text())
        levels_dir = Path(job["levels_dir"])
        level_ids = [str(x) for x in job["levels"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {args.job_file} is not a job file: {exc}", file=sys.stderr)
        return 2

    from core.code import MANIFEST, ROOT, verify_snapshot  # code identity: hashes the trainer's files (0.1 s cold)

    if (ROOT / MANIFEST).exists() and verify_snapshot(ROOT) != ROOT.name:
        # a snapshot is immutable: one edited after its launch is not the code the levels name
        print(
            f"error: the code snapshot {ROOT} this job imports was edited after its launch; launch again",
            file=sys.stderr,
        )
        return 1

    # Imported after argument checks: torch and the data stack take seconds to import.
    from trainer.level_trainer import LevelTrainer, NullRecorder, Stopped, read_level  # torch (seconds)

    info = init_distributed()
    joined = os.environ.get("TP_JOINED_FILE")  # the job wrapper's rendezvous watch (slurm/job.py)
    if joined and os.environ.get("LOCAL_RANK", "0") == "0":
        Path(joined).touch()
    stop = StopFlag(info)
    recorder = None
    if info.is_main:  # only rank 0 reports
        recorders: list = []
        url = read_db_url(args.db_file)
        if url:
            from db.recorder import JobRecorder  # SQLAlchemy, 0.3 s

            store = JobRecorder(url, job["job_id"])
            resumed = [lid for lid in level_ids if (levels_dir / lid / "checkpoint.pt").exists()]
            store.start_attempt(
                job_id_from_env(), info.world_size, f"{resumed[0]}/checkpoint.pt" if resumed else None
            )
            recorders.append(store)
        from trainer.wandb_recorder import WandbRecorder, wandb_runs  # imports wandb only if used

        if wandb_runs(job):
            try:
                recorders.insert(0, WandbRecorder(job, levels_dir))  # finishes while the store flushes
            except Exception as exc:  # noqa: BLE001 - W&B is optional: any failure turns it off
                print(f"[wandb] off for this job ({type(exc).__name__}: {exc})", file=sys.stderr)
        recorder = Recorders(recorders) if recorders else None
    status, state, message = 0, "COMPLETED", None
    progress: dict = {}
    try:
        if os.environ.get("TP_FAULT") and info.is_main:
            inject_fault(os.environ["TP_FAULT"], job, args.job_file, recorder)
        levels = [read_level(levels_dir, lid) for lid in level_ids]
        reuse = os.environ.get("TP_REUSE") or job.get("reuse") or "any"  # resume --reuse overrides
        trainer = LevelTrainer(levels[0].train, levels_dir, info, recorder or NullRecorder(), stop, reuse)
        trainer.run(levels, job.get("snapshots", {}))
    except Stopped as exc:
        status, state, progress = EXIT_PREEMPTED, "PREEMPTED", exc.progress
        message = f"stopped by {stop.signal_name or 'signal'} at {exc.where}; checkpoint saved"
    except Exception as exc:  # noqa: BLE001 - recorded, then re-raised as exit status 1 with the traceback
        traceback.print_exc()
        status, state = 1, "FAILED"
        message = failure_message(exc, os.environ.get("TP_JOB_LOG"))
    if recorder:
        recorder.finish_job(state, message)
        recorder.close()
    if info.is_main:  # read by the job wrapper (slurm/job.py): torchrun's own exit status is coarser
        write_json_atomic(status_path(args.job_file), {"state": state, "message": message, "progress": progress})
    if message:
        print(f"[trainer] job {job['job_id']} rank {info.rank}: {state}: {message}", file=sys.stderr)
    shutdown(info)
    return status


if __name__ == "__main__":
    sys.exit(main())
