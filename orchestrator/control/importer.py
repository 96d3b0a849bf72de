"""`tp-sweep db import OUTPUT_DIR`: rebuild a store from an output folder.

The folder is the record: OUTPUT/sweeps/<name>.json says what each sweep planned (its spec, runs,
grid points and the levels serving them), OUTPUT/levels/<id>/level.json what each level computes,
and LEVEL_DIR/metrics.json what a finished level measured, epoch by epoch. Importing twice is
harmless (every write is an upsert). Levels not finished get no job here: the next `launch` of the
sweep plans jobs for them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from core.errors import UserError
from core.layout import BadRecord, LevelCheck, LevelDir, is_level_id, read_sweep_record
from core.levels import LevelSpec, kind_in_run, level_number
from db.store import Store
from orchestrator.plan.spec import SpecError, parse_spec


class ImportFailed(UserError, ValueError):
    pass


def sweep_records(output_dir: str | Path) -> list[Path]:
    """The folder's sweep records (sweeps/*.json); ImportFailed when it has none, which `db
    import` checks before it opens (or creates) the store."""
    out = Path(output_dir).expanduser().resolve()
    sweep_files = sorted((out / "sweeps").glob("*.json"))
    if not sweep_files:
        raise ImportFailed(f"{out} holds no sweeps/*.json: not a turboprune output folder (the spec's output_dir)")
    return sweep_files


def import_output_dir(
    store: Store, output_dir: str | Path, bad: dict[str, str] | None = None, refused: dict[str, str] | None = None
) -> dict[str, int]:
    """Import every sweep record of the folder, each one whole or not at all: a record that fails
    its checks (core/layout.py: check_sweep_record, its spec parsed as launch parses one, its
    levels_dir inside the folder) is left out and lands in `refused` (its path -> why). Each
    level folder is checked whole before anything of it is recorded (LevelDir.inspect: level.json,
    metrics.json, final.pt's digest; and its depth and root against its parent's): a bad one is
    left out, with its runs' other levels and the grid points it does not serve, and lands in
    `bad` (a folder path -> why). Folders that no sweep names are checked too, so a renamed or
    planted level is reported rather than silently passed over."""
    out = Path(output_dir).expanduser().resolve()
    sweep_files = sweep_records(out)
    bad = {} if bad is None else bad
    refused = {} if refused is None else refused
    counts = {"sweeps": 0, "runs": 0, "levels": 0, "finished": 0}
    checks: dict[Path, LevelCheck] = {}  # a level several sweeps name is checked (and hashed) once
    seen: set[Path] = set()
    for path in sweep_files:
        try:
            rec = read_sweep_record(path)
            spec = rec["spec"]
            executor = parse_spec(spec, "spec").executor.kind
            levels_dir = _levels_dir(out, rec)
        except (BadRecord, SpecError) as exc:
            refused[str(path)] = str(exc)
            continue
        seen.add(levels_dir)
        levels, results = _good_levels(
            [lid for run in rec["runs"] for lid in run["levels"]], levels_dir, bad, checks
        )
        runs = {}
        for r in rec["runs"]:
            run = SimpleNamespace(**{k: r[k] for k in ("run_id", "method", "seed", "axes", "config")})
            run.levels = [lid for lid in r["levels"] if lid in levels]
            # each level's role in this run, from its lineage and the run's prune.rate (the record
            # holds no kinds: a shared level's level.json names the role in its first run only)
            run.kinds = {lid: kind_in_run(levels[lid], run.config) for lid in run.levels}
            runs[run.run_id] = run
        points = []
        for p in rec["points"]:
            if p["level_id"] in levels:
                lv = levels[p["level_id"]]  # its level in the run (older records gave a control its depth)
                kind = runs[p["run_id"]].kinds.get(lv.level_id) or kind_in_run(lv, runs[p["run_id"]].config)
                points.append(SimpleNamespace(**{**p, "depth": level_number(kind, lv.depth)}))
        plan = SimpleNamespace(
            spec=SimpleNamespace(name=rec["name"], executor=SimpleNamespace(kind=executor)),
            output_dir=str(out),
            levels=levels,
            runs=list(runs.values()),
            points=points,
        )
        store.record_plan(plan, spec, str(levels_dir))
        states = store.level_states(list(results))
        new = {lid: res for lid, res in results.items() if not (lid in states and states[lid].finished)}
        store.import_results(new)
        counts["finished"] += len(new)
        counts["sweeps"] += 1
        counts["runs"] += len(plan.runs)
        counts["levels"] += len(levels)
    for levels_dir in sorted(seen):  # folders no sweep names: a renamed or planted level
        for d in sorted(levels_dir.iterdir()):
            if d in checks or str(d) in bad:
                continue
            if d.is_symlink() or (d.is_dir() and (d / "level.json").exists()):
                problem = LevelDir(d).inspect().problem
                if problem is not None:
                    bad[str(d)] = problem
    return counts


def _levels_dir(out: Path, rec: dict[str, Any]) -> Path:
    """Where the record's levels are: the folder being imported holds them, whatever path the
    record names (it names where the sweep ran: a copy or a moved folder must not read the
    original); the record's own levels_dir only when the folder has no levels/, and never a
    folder outside the output folder."""
    levels_dir = out / "levels"
    if not (levels_dir.exists() or levels_dir.is_symlink()):
        levels_dir = Path(rec.get("levels_dir") or levels_dir)
    resolved = levels_dir.resolve()
    if not resolved.is_relative_to(out):
        raise BadRecord(f"levels_dir {str(levels_dir)[:200]!r} is outside the output folder {out}")
    return resolved


def _good_levels(
    ids: list[str], levels_dir: Path, bad: dict[str, str], checks: dict[Path, LevelCheck]
) -> tuple[dict[str, LevelSpec], dict[str, dict[str, Any]]]:
    """The levels among `ids` whose folders pass every check, parents first, and the results of
    those finished; the rest in `bad`."""
    good: dict[str, LevelSpec] = {}
    results: dict[str, dict[str, Any]] = {}
    for lid in dict.fromkeys(ids):
        if not is_level_id(lid):
            bad[f"{levels_dir}/{lid!s:.80}"] = "the sweep record names a level that is not a level id"
            continue
        d = LevelDir(levels_dir / lid)
        if d.path not in checks:
            checks[d.path] = d.inspect()
        check = checks[d.path]
        if check.spec is None:
            bad[str(d.path)] = check.problem or "not a level folder"
            continue
        spec = check.spec
        parent = good.get(spec.parent) if spec.parent else None
        if parent is not None and (spec.depth != parent.depth + 1 or spec.root != parent.root):
            bad[str(d.path)] = (
                f"depth {spec.depth} and root {spec.root} do not follow its parent's "
                f"({parent.depth}, {parent.root})"
            )
            continue
        good[lid] = spec
        if check.result is not None:
            results[lid] = check.result
    return good, results
