"""Weights & Biases as one more recorder behind the trainer's Recorder interface (rank 0 only).

One W&B run per turboprune run that asks for it (`logging.wandb` in its config). A job's levels
can serve several runs (level 0 is shared by dense, imp, imp_wr, ...): the job file's `runs` says
which, and each epoch of a level goes to every W&B run whose turboprune run contains that level,
so each W&B run shows its run's whole trajectory. A run whose levels span several jobs (level 0
in one, the trunk in the next) or attempts (a requeue) is one W&B run: its id is derived from the
run id and opened with resume="allow".

Steps: an epoch's W&B step is `run_epoch` = (index of its level in the run's level order) x
epochs + epoch, computed, never counted. So the steps of a run increase across its levels, jobs
and attempts (an epoch cut short by a stop is logged once, by the attempt that finishes it), a
resumed online run never sees a step go backwards, and the offline folders of one run hold
disjoint steps, which `wandb sync` appends in order of start time.

Never fails or slows training. `import wandb` (2 s), `wandb.init` (a second offline, up to the
init timeout online without a network) and every other W&B call run in one writer thread, fed
by a queue, as db/recorder.py does for the store: the trainer's calls only enqueue. A failed
call prints one line and turns W&B off for that run for the rest of the job; a failed import
turns it off for all. The thread is also why wandb cannot take over SIGTERM/SIGUSR2 from the
trainer's StopFlag: Python lets only the main thread install signal handlers (wandb 0.31 installs
none anyway; wandb-core runs in its own session, so a signal sent to the trainer skips it).
At the end of the job `close` waits at most TP_WANDB_FLUSH_S (default 60) for the thread.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# What an epoch logs besides its dimensions (level, level_id, level_kind, epoch, run_epoch).
EPOCH_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "test_top5", "lr", "images_per_s", "seconds")
_STOP = object()


def wandb_settings(run: dict[str, Any]) -> dict[str, Any] | None:
    """A job-file run's `logging.wandb` section, or None when W&B is off for it."""
    cfg = (run.get("logging") or {}).get("wandb")
    if not isinstance(cfg, dict) or cfg.get("mode") == "disabled":
        return None
    return cfg


def wandb_runs(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The runs of a job file that want W&B (empty: no WandbRecorder, and wandb is never imported)."""
    runs = job.get("runs") or {}
    return {rid: r for rid, r in runs.items() if isinstance(r, dict) and wandb_settings(r)}


def wandb_run_id(run_id: str) -> str:
    return f"tp-{run_id}"


def _warn(msg: str) -> None:
    print(f"[wandb] {msg}", file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


class WandbRecorder:
    def __init__(
        self,
        job: dict[str, Any],
        levels_dir: Path,
        *,
        flush_s: float | None = None,
        init_timeout_s: float | None = None,
    ) -> None:
        self.levels_dir = Path(levels_dir)
        self.runs = wandb_runs(job)
        self.flush_s = flush_s if flush_s is not None else float(os.environ.get("TP_WANDB_FLUSH_S", "60"))
        self.init_timeout_s = (
            init_timeout_s
            if init_timeout_s is not None
            else float(os.environ.get("TP_WANDB_INIT_TIMEOUT_S", "60"))
        )
        self.runs_of_level: dict[str, list[str]] = {}
        for rid, r in self.runs.items():
            for lid in r.get("levels") or []:
                self.runs_of_level.setdefault(str(lid), []).append(rid)
        self._wandb: Any = None
        self._off = False  # the import failed: W&B is off for the whole job
        self._live: dict[str, Any] = {}  # run id -> wandb Run
        self._dead: set[str] = set()  # runs W&B failed for in this job
        self._levels: dict[str, dict[str, Any]] = {}
        self._state, self._stopping, self._quiet = "COMPLETED", False, False
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._worker, name="tp-wandb", daemon=True)
        self._thread.start()

    # ---- the trainer's calls (never raise, never block) ------------------------------------
    def heartbeat(self, level_id: str, epoch: int) -> None:
        pass  # W&B has its own liveness; nothing to say per step

    def log_epoch(self, level_id: str, epoch: int, metrics: dict[str, Any]) -> None:
        if level_id in self.runs_of_level:
            # Stamped now: the thread may log it later (while wandb.init runs, say).
            self._q.put((self._log_epoch, (level_id, int(epoch), dict(metrics), time.time())))

    def finish_level(self, level_id: str, result: dict[str, Any]) -> None:
        if level_id in self.runs_of_level:
            self._q.put((self._finish_level, (level_id, result)))

    def finish_job(self, state: str, message: str | None = None) -> None:
        """Start finishing the W&B runs (in the thread, while other recorders flush)."""
        if not self._stopping:
            self._state, self._stopping = state, True
            self._q.put(_STOP)

    def close(self) -> None:
        """Wait (at most flush_s) until every W&B run is finished, its data written."""
        self.finish_job(self._state)
        self._thread.join(timeout=self.flush_s)
        if self._thread.is_alive():
            self._quiet = True  # what the thread meets while the process exits is no news
            _warn(
                f"still busy after {self.flush_s:g} s (TP_WANDB_FLUSH_S); giving up on what is "
                "not yet written. The level folders hold every result."
            )

    # ---- the writer thread -------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                self._finish_all()
                return
            fn, args = item
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - a bug here must not end the thread: later runs still log
                self._warn(f"dropped an update ({_one_line(exc)})")

    def _warn(self, msg: str) -> None:
        if not self._quiet:
            _warn(msg)

    def _guarded(self, rid: str, what: str, fn: Callable[[], Any]) -> None:
        """Run one W&B call for run `rid`; on failure say so once and stop using that run."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - any W&B error turns that run off, training goes on
            self._dead.add(rid)
            self._live.pop(rid, None)
            self._warn(
                f"run {rid}: {what} failed ({_one_line(exc)}); W&B logging for this run is off "
                "for the rest of this job, training goes on"
            )

    def _import(self) -> Any:
        if self._wandb is None and not self._off:
            os.environ.setdefault("WANDB_SILENT", "true")  # its banners are not the job log's
            try:
                import wandb  # only here: with logging.wandb unset nothing imports it

                self._wandb = wandb
            except Exception as exc:  # noqa: BLE001 - wandb's import can fail many ways: W&B is off
                self._off = True
                self._warn(f"cannot import wandb ({_one_line(exc)}); W&B logging is off for this job")
        return self._wandb

    def _run(self, rid: str) -> Any:
        """The run's W&B run, opened on first use (lazily: a job that trains nothing opens none)."""
        if rid in self._live or rid in self._dead:
            return self._live.get(rid)
        wandb = self._import()
        if wandb is None:
            self._dead.add(rid)
            return None
        self._guarded(rid, "wandb.init", lambda: self._init(wandb, rid))
        return self._live.get(rid)

    def _init(self, wandb: Any, rid: str) -> None:
        r = self.runs[rid]
        cfg = wandb_settings(r) or {}
        mode = cfg.get("mode") or "auto"
        if mode == "auto":
            mode = "online" if _has_credentials(wandb) else "offline"
        # Default: beside the results, OUTPUT_DIR/wandb/offline-run-* (wandb adds the "wandb").
        root = Path(cfg["dir"]).expanduser() if cfg.get("dir") else self.levels_dir.parent
        root.mkdir(parents=True, exist_ok=True)
        targets = sorted({float(s) for ss in (r.get("serves") or {}).values() for s in ss})
        config = {k: v for k, v in (r.get("config") or {}).items() if k != "logging"}
        config.update(
            {
                "tp_run_id": rid,
                "sweep": r.get("sweep"),
                "axes": r.get("axes") or {},
                "sparsities": targets,
                "method": r.get("method"),
                "seed": r.get("seed"),
            }
        )
        tags = [str(r.get("method")), *(f"sparsity={s:g}" for s in targets), *(cfg.get("tags") or [])]
        run = wandb.init(
            project=cfg.get("project"),
            entity=cfg.get("entity"),
            id=wandb_run_id(rid),
            resume="allow",
            group=r.get("sweep") or None,
            job_type="train",
            name=f"{r.get('method')}-s{r.get('seed')}-{rid[:8]}",
            config=config,
            tags=list(dict.fromkeys(tags)),
            mode=mode,
            dir=str(root),
            reinit="create_new",
            # console off: wandb must not wrap the trainer's stdout, whose epoch lines are the
            # job log. The timeouts bound what an unreachable server can cost this thread.
            settings=wandb.Settings(
                silent=True, console="off", init_timeout=self.init_timeout_s, finish_timeout=self.flush_s
            ),
        )
        run.define_metric("run_epoch")
        run.define_metric("*", step_metric="run_epoch")
        self._live[rid] = run

    def _level(self, level_id: str) -> dict[str, Any]:
        """depth, kind, density and epochs per level, from the level's level.json."""
        if level_id not in self._levels:
            d = json.loads((self.levels_dir / level_id / "level.json").read_text())
            self._levels[level_id] = {
                "depth": int(d["depth"]),
                "kind": str(d["kind"]),
                "density": float(d["density"]),
                "epochs": int(d["train"]["schedule"]["epochs"]),
            }
        return self._levels[level_id]

    def _log_epoch(self, level_id: str, epoch: int, metrics: dict[str, Any], at: float) -> None:
        lv = self._level(level_id)
        row: dict[str, Any] = {k: metrics[k] for k in EPOCH_METRICS if metrics.get(k) is not None}
        row.update(
            {
                "level": lv["depth"],
                "level_id": level_id,
                "level_kind": lv["kind"],
                "density": lv["density"],
                "sparsity": 1.0 - lv["density"],
                "epoch": epoch,
                "_timestamp": at,
            }
        )
        for rid in self.runs_of_level[level_id]:
            run = self._run(rid)
            if run is None:
                continue
            step = self.runs[rid]["levels"].index(level_id) * lv["epochs"] + epoch
            self._guarded(rid, "log", lambda run=run, step=step: run.log({**row, "run_epoch": step}, step=step))

    def _finish_level(self, level_id: str, result: dict[str, Any]) -> None:
        for rid in self.runs_of_level[level_id]:
            targets = (self.runs[rid].get("serves") or {}).get(level_id) or []
            if not targets:
                continue  # a trunk level on the way to a target: its epochs are its record
            run = self._run(rid)
            if run is None:
                continue

            def summarise(run: Any = run, targets: list[Any] = targets) -> None:
                for s in targets:
                    for key in ("test_acc", "best_test_acc", "test_top5", "achieved_sparsity"):
                        if result.get(key) is not None:
                            run.summary[f"{key}@{float(s):g}"] = result[key]
                    run.summary[f"level_id@{float(s):g}"] = level_id

            self._guarded(rid, "summary", summarise)

    def _finish_all(self) -> None:
        exit_code = 1 if self._state == "FAILED" else 0
        for rid, run in list(self._live.items()):

            def finish(run: Any = run) -> None:
                if self._state == "PREEMPTED":
                    run.mark_preempting()  # W&B shows it preempted, not crashed; resume continues it
                run.finish(exit_code=exit_code)

            self._guarded(rid, "finish", finish)
        if self._wandb is not None:
            try:  # stop wandb-core now rather than in an exit hook
                self._wandb.teardown()
            except Exception as exc:  # noqa: BLE001 - best effort at exit
                self._warn(f"teardown failed ({_one_line(exc)})")


def _has_credentials(wandb: Any) -> bool:
    """mode auto: online when W&B credentials are at hand, offline otherwise. Checked locally
    (environment, then ~/.netrc): asking the server would cost seconds, or hang offline."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        from wandb.sdk.lib import wbauth  # wandb's own .netrc reader (internal: guarded)

        settings = wandb.setup().settings
        return bool(wbauth.read_netrc_auth(host=settings.base_url) or settings.api_key)
    except Exception:  # noqa: BLE001 - no readable credentials: offline
        return False
