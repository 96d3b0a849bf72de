"""Standalone training from hydra, without the orchestrator or a store:

    python -m trainer --config-name digits_mlp method=imp +sparsities=[0.5,0.8] schedule.epochs=2
    torchrun --nproc_per_node=2 -m trainer --config-name digits_mlp method=snip +sparsities=[0.9]

The config is resolved exactly as a sweep would resolve it, so the run id (and the folder,
`+run_dir=...`, default tp-runs/RUN_ID) is the one `tp-sweep launch` would give the same run.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

# Keep hydra from making outputs/DATE/TIME folders and changing logging: the run dir is the record.
_QUIET = ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=disabled",
          "hydra/hydra_logging=disabled"]


@hydra.main(config_path="conf", config_name="digits_mlp", version_base="1.3")
def _main(cfg: DictConfig) -> int:
    from orchestrator.plan import run_id_for
    from trainer.job import main as job_main
    from trainer.pruning.registry import get_method
    from trainer.pruning.schedule import level_densities

    from trainer.config import ConfigError
    from trainer.schema import validate_config

    config = OmegaConf.to_container(cfg, resolve=True)
    sparsities = [float(s) for s in config.pop("sparsities", None) or [0.0]]
    run_dir = config.pop("run_dir", None)
    try:  # the same check a sweep gets, before any folder or training
        validate_config(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    method = get_method(config["method"])
    if method.schedule == "dense":
        sparsities = [0.0]
    densities = level_densities(method, sparsities, float(config["prune"]["rate"]))
    run_id = run_id_for(config, sorted(sparsities))
    run_dir = Path(run_dir or Path("tp-runs") / run_id)
    if int(os.environ.get("RANK", "0")) == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "run.json").write_text(json.dumps({
            "run_id": run_id, "method": config["method"], "seed": config["seed"],
            "sparsities": sorted(sparsities), "densities": densities, "config": config}, indent=1))
    else:  # the other ranks wait for rank 0's run.json
        import time

        while not (run_dir / "run.json").exists():
            time.sleep(0.1)
    print(f"[trainer] run {run_id} in {run_dir}", flush=True)
    status = job_main([str(run_dir)])
    if status:
        sys.exit(status)
    return 0


def main() -> None:
    sys.argv += [q for q in _QUIET if q.split("=")[0] not in " ".join(sys.argv)]
    _main()


if __name__ == "__main__":
    main()
