"""`tp-sweep db import OUTPUT_DIR`: rebuild a store from an output folder.

The folder is the record: OUTPUT/sweeps/<name>.json says what each sweep planned (its spec, runs,
grid points and the levels serving them), OUTPUT/levels/<id>/level.json what each level computes,
and LEVEL_DIR/metrics.json what a finished level measured, epoch by epoch. Importing twice is
harmless (every write is an upsert). Levels not finished get no job here: the next `launch` of the
sweep plans jobs for them.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from core.layout import LevelDir
from core.levels import LevelSpec, LineageError
from db.store import Store
from orchestrator.control.reconcile import sync_from_disk


class ImportFailed(ValueError):
    pass


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ImportFailed(f"{path}: cannot read ({exc})") from None


def import_output_dir(store: Store, output_dir: str | Path) -> dict[str, int]:
    out = Path(output_dir).expanduser().resolve()
    sweep_files = sorted((out / "sweeps").glob("*.json"))
    if not sweep_files:
        raise ImportFailed(f"{out} holds no sweeps/*.json: not a turboprune output folder "
                           "(the spec's output_dir)")
    counts = {"sweeps": 0, "runs": 0, "levels": 0, "finished": 0}
    for path in sweep_files:
        rec = _read_json(path)
        try:
            levels_dir = Path(rec.get("levels_dir") or out / "levels")
            if not levels_dir.is_dir():
                levels_dir = out / "levels"  # the folder was moved: its levels moved with it
            levels: dict[str, LevelSpec] = {}
            for run in rec["runs"]:
                for lid in run["levels"]:
                    if lid not in levels:
                        levels[lid] = LevelSpec.from_dict(_read_json(LevelDir(levels_dir / lid).description))
            spec = rec["spec"]
            executor = (spec.get("executor") or {}).get("kind", "local") if isinstance(spec, dict) else "local"
            plan = SimpleNamespace(
                spec=SimpleNamespace(name=rec["name"], executor=SimpleNamespace(kind=executor)),
                output_dir=str(out), levels=levels,
                runs=[SimpleNamespace(**{k: r[k] for k in ("run_id", "method", "seed", "axes", "config",
                                                           "levels")}) for r in rec["runs"]],
                points=[SimpleNamespace(**p) for p in rec["points"]])
        except (KeyError, TypeError, LineageError) as exc:
            raise ImportFailed(f"{path}: not a sweep record ({type(exc).__name__}: {exc})") from None
        store.record_plan(plan, spec, str(levels_dir))
        counts["finished"] += sync_from_disk(store, {lid: str(levels_dir / lid) for lid in levels})
        counts["sweeps"] += 1
        counts["runs"] += len(plan.runs)
        counts["levels"] += len(levels)
    return counts
