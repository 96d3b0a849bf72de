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

from core.layout import BadLevel, LevelDir, is_level_id
from core.levels import LevelSpec
from db.store import Store
from orchestrator.control.reconcile import sync_from_disk


class ImportFailed(ValueError):
    pass


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ImportFailed(f"{path}: cannot read ({exc})") from None


def import_output_dir(store: Store, output_dir: str | Path, bad: dict[str, str] | None = None) -> dict[str, int]:
    """Import every sweep record of the folder. Each level folder is checked before anything of it
    is recorded (LevelDir.inspect, and its depth and root against its parent's): a bad one is
    left out, with its runs' other levels and the grid points it does not serve, and lands in
    `bad` (a folder path -> why). Folders that no sweep names are checked too, so a renamed
    level is reported rather than silently passed over."""
    out = Path(output_dir).expanduser().resolve()
    sweep_files = sorted((out / "sweeps").glob("*.json"))
    if not sweep_files:
        raise ImportFailed(f"{out} holds no sweeps/*.json: not a turboprune output folder (the spec's output_dir)")
    bad = {} if bad is None else bad
    counts = {"sweeps": 0, "runs": 0, "levels": 0, "finished": 0}
    seen: set[Path] = set()
    for path in sweep_files:
        rec = _read_json(path)
        try:
            # The folder being imported holds the levels, whatever path the record names (it
            # names where the sweep ran: a copy or a moved folder must not read the original).
            levels_dir = out / "levels"
            if not levels_dir.is_dir():
                levels_dir = Path(rec.get("levels_dir") or levels_dir)
            levels = _good_levels([lid for run in rec["runs"] for lid in run["levels"]], levels_dir, bad)
            seen.add(levels_dir)
            spec = rec["spec"]
            executor = (spec.get("executor") or {}).get("kind", "local") if isinstance(spec, dict) else "local"
            runs = []
            for r in rec["runs"]:
                run = SimpleNamespace(**{k: r[k] for k in ("run_id", "method", "seed", "axes", "config")})
                run.levels = [lid for lid in r["levels"] if lid in levels]
                runs.append(run)
            plan = SimpleNamespace(
                spec=SimpleNamespace(name=rec["name"], executor=SimpleNamespace(kind=executor)),
                output_dir=str(out),
                levels=levels,
                runs=runs,
                points=[SimpleNamespace(**p) for p in rec["points"] if p["level_id"] in levels],
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ImportFailed(f"{path}: not a sweep record ({type(exc).__name__}: {exc})") from None
        store.record_plan(plan, spec, str(levels_dir))
        problems: dict[str, str] = {}
        counts["finished"] += sync_from_disk(store, {lid: str(levels_dir / lid) for lid in levels}, bad=problems)
        bad.update({str(levels_dir / lid): why for lid, why in problems.items()})
        counts["sweeps"] += 1
        counts["runs"] += len(plan.runs)
        counts["levels"] += len(levels)
    for levels_dir in sorted(seen):  # folders no sweep names: a renamed or planted level
        for d in sorted(p for p in levels_dir.iterdir() if p.is_dir()):
            if str(d) not in bad and (d / "level.json").exists():
                problem = LevelDir(d).inspect().problem
                if problem is not None:
                    bad[str(d)] = problem
    return counts


def _good_levels(ids: list[str], levels_dir: Path, bad: dict[str, str]) -> dict[str, LevelSpec]:
    """The levels among `ids` whose folders pass the checks, parents first; the rest in `bad`."""
    good: dict[str, LevelSpec] = {}
    for lid in dict.fromkeys(ids):
        if not is_level_id(lid):
            bad[f"{levels_dir}/{lid!s:.80}"] = "the sweep record names a level that is not a level id"
            continue
        d = LevelDir(levels_dir / lid)
        try:
            spec = d.read_spec()
        except BadLevel as exc:
            bad[str(d.path)] = str(exc)
            continue
        parent = good.get(spec.parent) if spec.parent else None
        if parent is not None and (spec.depth != parent.depth + 1 or spec.root != parent.root):
            bad[str(d.path)] = (
                f"depth {spec.depth} and root {spec.root} do not follow its parent's "
                f"({parent.depth}, {parent.root})"
            )
            continue
        good[lid] = spec
    return good
