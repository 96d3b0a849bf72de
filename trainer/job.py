"""A job's entry point: `torchrun --nproc_per_node=N -m trainer.job RUN_DIR --db URL`.

The job needs nothing but its run directory (run.json written at plan time, and its checkpoints)
and the store URL. Rank 0 reports to the store; every rank trains.
Exit status: 0 completed, 75 stopped by a signal with its checkpoint saved (resume me), 1 failed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from trainer.distributed import EXIT_PREEMPTED, init_distributed, shutdown, StopFlag


def job_id_from_env() -> str | None:
    if os.environ.get("TP_JOB_ID"):
        return os.environ["TP_JOB_ID"]
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer.job")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--db", default=os.environ.get("TP_DB_URL"), help="results store URL")
    args = ap.parse_args(argv)
    desc_path = args.run_dir / "run.json"
    if not desc_path.is_file():
        print(f"error: {desc_path} not found (a run directory holds run.json)", file=sys.stderr)
        return 2

    # Imported after argument checks: torch and the data stack take seconds to import.
    from trainer.levels import LevelRunner, NullRecorder, RunDesc, Stopped

    desc = RunDesc.from_dict(json.loads(desc_path.read_text()))
    info = init_distributed()
    stop = StopFlag(info)
    recorder = None
    if info.is_main and args.db:
        from db.store import RunRecorder  # only rank 0 talks to the store

        recorder = RunRecorder(args.db, desc.run_id)
    resumed = args.run_dir / "checkpoint.pt"
    if recorder:
        recorder.start_attempt(job_id_from_env(), info.world_size,
                               str(resumed) if resumed.exists() else None)
    status, state, message = 0, "COMPLETED", None
    try:
        LevelRunner(desc, args.run_dir, info, recorder or NullRecorder(), stop).run()
    except Stopped as exc:
        status, state = EXIT_PREEMPTED, "PREEMPTED"
        message = f"stopped by {stop.signal_name or 'signal'} at {exc.where}; checkpoint saved"
    except Exception as exc:  # recorded, then re-raised as exit status 1 with the traceback
        traceback.print_exc()
        status, state = 1, "FAILED"
        message = f"{type(exc).__name__}: {exc}"[:2000]
    if recorder:
        recorder.finish_run(state, message)
        recorder.close()
    if info.is_main:  # read by the job wrapper (slurm/job.py): torchrun's own exit status is coarser
        (args.run_dir / "status.json").write_text(json.dumps({"state": state, "message": message}))
    if message:
        print(f"[trainer] run {desc.run_id} rank {info.rank}: {state}: {message}", file=sys.stderr)
    shutdown(info)
    return status


if __name__ == "__main__":
    sys.exit(main())
