"""Standalone training from hydra, without the orchestrator or a store:

    python -m trainer --config-name digits_mlp method=imp +sparsities=[0.5,0.8] schedule.epochs=2
    torchrun --nproc_per_node=2 -m trainer --config-name digits_mlp method=snip +sparsities=[0.9]

The levels are planned exactly as a sweep would plan them (trainer/lineage.py), so they get the
ids `tp-sweep launch` would give them and land in the same folders (`+output_dir=...`, default
tp-runs): a level trained here is never trained again by a sweep on that folder, and vice versa.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

# Keep hydra from making outputs/DATE/TIME folders and changing logging: the level folders are
# the record.
_QUIET = ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=disabled",
          "hydra/hydra_logging=disabled"]


def write_job(config: dict, sparsities: list[float], output_dir: Path, write: bool = True) -> Path:
    """Level folders and one job file for every level the run needs (written by rank 0 only;
    planning is pure, so every rank knows the job file's path)."""
    from trainer.lineage import content_hash, plan_levels, run_id
    from trainer.pruning.registry import get_method
    from trainer.storage import LevelDir, job_description, write_json_atomic

    if get_method(config["method"]).schedule == "dense":
        sparsities = [0.0]
    lineage = plan_levels(config["method"], config, sparsities)
    levels_dir = (output_dir / "levels").resolve()
    snapshots: dict[str, list] = {}
    for lv in lineage.levels:
        d = LevelDir(levels_dir / lv.level_id)
        if write and not d.description.exists():
            write_json_atomic(d.description, lv.description())
        if lv.step and lv.step.get("rewind") == "step":
            snapshots.setdefault(lv.root, [])
            if lv.step["rewind_to"] not in snapshots[lv.root]:
                snapshots[lv.root].append(lv.step["rewind_to"])
    ids = [lv.level_id for lv in lineage.levels]
    job_id = content_hash({"levels": ids})
    path = output_dir.resolve() / "jobs" / f"{job_id}.json"
    if not write:
        return path
    run = {"sweep": None, "method": config["method"], "seed": config["seed"], "axes": {}, "levels": ids,
           "serves": {lv.level_id: [s] for s, lv in lineage.serving.items()},
           "logging": config.get("logging") or {}, "config": config}
    write_json_atomic(path, job_description(job_id, str(levels_dir), ids, snapshots, {run_id(config): run}))
    for s, lv in sorted(lineage.serving.items()):
        print(f"[trainer] sparsity {s:g}: level {lv.level_id} ({lv.kind}, depth {lv.depth}) in "
              f"{levels_dir / lv.level_id}", flush=True)
    return path


@hydra.main(config_path="conf", config_name="digits_mlp", version_base="1.3")
def _main(cfg: DictConfig) -> int:
    import os

    from trainer.job import main as job_main

    from trainer.config import ConfigError
    from trainer.schema import validate_config

    config = OmegaConf.to_container(cfg, resolve=True)
    sparsities = [float(s) for s in config.pop("sparsities", None) or [0.0]]
    output_dir = Path(config.pop("output_dir", None) or "tp-runs")
    try:  # the same check a sweep gets, before any folder or training
        validate_config(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    job_file = write_job(config, sparsities, output_dir, write=main_rank)
    while not job_file.exists():  # the other ranks wait for rank 0's files
        time.sleep(0.1)
    status = job_main([str(job_file)])
    if status:
        sys.exit(status)
    return 0


def main() -> None:
    sys.argv += [q for q in _QUIET if q.split("=")[0] not in " ".join(sys.argv)]
    _main()


if __name__ == "__main__":
    main()
