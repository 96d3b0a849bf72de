"""A launch under a name the store holds already: what it would change in that sweep, and
whether it may.

A sweep's name is its identity: `query SWEEP --group-by method,sparsity` averages every run the
sweep holds, so a relaunch must not quietly mix runs trained under different settings. The plan
is compared with the sweep's grid points (method x target x seed x axes) and the config of the
run serving each:

- a grid point the sweep lacks is **added**; a relaunch that adds grid values on the sweep's
  axes (a target, a seed, a method, a value of another axis) with the same settings is an
  **extension**, and goes on without a flag;
- a grid point the sweep holds whose run would train other settings **changes** that run (its
  grid points would be served by the new run, and the old one leaves the sweep);
- a run whose settings are the same but whose id is not (under `reuse: same-code`, the code it
  runs changed) is trained again under the same name, as documented: not a change of settings;
- the sweep's grid points the spec does not list are **kept** (a sweep only grows), unless
  `--replace`.

Anything else (settings of existing runs, the settings new runs get, the set of grid axes, a
search's space) needs a flag: `extend` (add the spec's new grid points and keep every existing
run as it is; refused when existing runs would change) or `replace` (the sweep becomes exactly
the spec; the runs it drops keep their rows and folders, under their run ids).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core import config as trainer_config
from db.reader import StoreReader
from orchestrator.plan.grid import SweepPlan
from orchestrator.plan.spec import RESERVED_AXES, SpecError, parse_spec

MODES = ("extend", "replace")
SHOWN = 6  # runs named in a list before "and N more"


@dataclass
class Relaunch:
    """How a plan differs from the sweep of its name in the store."""

    sweep: str
    points_added: int = 0  # grid points the sweep lacks
    runs_added: list[str] = field(default_factory=list)  # runs new to the sweep, described
    runs_changed: list[str] = field(default_factory=list)  # the sweep's runs whose settings change
    runs_unlisted: list[str] = field(default_factory=list)  # the sweep's runs the spec does not list
    runs_recoded: int = 0  # same settings, other code (reuse same-code): trained again
    settings: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key -> (sweep's, spec's)
    search: bool = False  # a search sweep: grid points are trials, compared by the spec alone

    @property
    def changes_settings(self) -> bool:
        return bool(self.settings or self.runs_changed)

    @property
    def needs(self) -> str | None:
        """The flag this relaunch needs: None (an extension, or nothing new), extend, replace."""
        if self.runs_changed:
            return "replace"
        return "extend" if self.settings else None

    def refusal(self, mode: str | None) -> str | None:
        """Why a launch in `mode` (None, extend, replace) may not go on, with what differs and
        how to proceed; None when it may."""
        needs = self.needs
        if needs is None or mode == "replace" or (mode == "extend" and needs == "extend"):
            if mode == "replace" and self.search:
                return (
                    f"sweep {self.sweep}: --replace is not for a search (its trials live in its studies); "
                    "give the spec a new name"
                )
            return None
        lines = [f"sweep {self.sweep} exists, and this spec differs from it (nothing was recorded or submitted):"]
        lines += [f"  {line}" for line in self.lines()]
        lines.append("to go on: give the spec a new name (name:), a sweep of its own; or launch again with")
        if needs == "extend":
            lines.append(
                "  --extend   add the spec's new runs and keep the sweep's runs as they are (the sweep then "
                "holds runs of both settings: query by the changed key to tell them apart)"
            )
        elif mode == "extend":
            lines.append(
                f"  (--extend keeps the sweep's runs as they are, and this spec would change "
                f"{len(self.runs_changed)} of them: leave their grid points out of the spec, or)"
            )
        replace = "  --replace  the sweep becomes exactly this spec"
        dropped = len(self.runs_changed) + len(self.runs_unlisted)
        if dropped:
            replace += f"; the {dropped} runs it drops keep their results in the store and on disk"
        lines.append(replace)
        return "\n".join(lines)

    def lines(self, mode: str | None = None) -> list[str]:
        """What differs, a line each (for the refusal, and for launch and --dry-run)."""
        out = []
        if self.settings:
            out.append(
                "settings changed: "
                + "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in self.settings.items())
            )
        if self.runs_changed:
            out.append(
                f"runs whose settings change: {_listed(self.runs_changed)} (new runs would serve their "
                "grid points, and these would leave the sweep)"
            )
        if self.points_added or self.runs_added:
            out.append(
                f"grid points added: {self.points_added}"
                + (f"; runs added: {_listed(self.runs_added)}" if self.runs_added else "")
            )
        if self.runs_unlisted:
            fate = "dropped from the sweep" if mode == "replace" else "kept; --replace drops them"
            out.append(f"runs the spec does not list: {_listed(self.runs_unlisted)} ({fate})")
        if self.runs_recoded:
            out.append(f"runs trained again because their code changed (reuse same-code): {self.runs_recoded}")
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "needs": self.needs,
            "settings_changed": {k: [a, b] for k, (a, b) in self.settings.items()},
            "grid_points_added": self.points_added,
            "runs_added": self.runs_added,
            "runs_changed": self.runs_changed,
            "runs_unlisted": self.runs_unlisted,
            "runs_recoded": self.runs_recoded,
        }


def compare(reader: StoreReader, plan: SweepPlan) -> Relaunch | None:
    """How `plan` differs from the sweep of its name in the store; None when there is none."""
    name = plan.spec.name
    found = reader.sweep_points(name)
    if found is None:
        return None
    points, configs = found
    out = Relaunch(name, search=plan.spec.search is not None)
    stored = reader.sweep_spec(name) or {}
    out.settings.update(_spec_settings(stored, plan))
    if out.search:  # trials are grid points of their own (their parameters as axes)
        return out
    old = {_key(p["method"], p["sparsity"], p["seed"], p["axes_key"]): p["run_id"] for p in points}
    new_runs = {r.run_id: r for r in plan.runs}
    kept: set[str] = set()  # the sweep's runs the plan keeps as they are
    recoded: set[str] = set()  # ... that it trains again under other code, same settings
    changed: dict[str, str] = {}  # the sweep's run -> the plan's run taking its grid points
    takers: set[str] = set()  # the plan's runs serving grid points the sweep holds
    for p in plan.points:
        was = old.get(_key(p.method, p.sparsity, p.seed, json.dumps(p.axes, sort_keys=True)))
        if was is None:
            out.points_added += 1
            continue
        takers.add(p.run_id)
        if was == p.run_id:
            kept.add(was)
        elif _training(configs.get(was)) == _training(new_runs[p.run_id].config):
            recoded.add(was)
        else:
            changed.setdefault(was, p.run_id)
    for was, now in changed.items():
        for k, diff in _diff(_training(configs.get(was)), _training(new_runs[now].config)).items():
            out.settings.setdefault(f"trainer.overrides.{k}", diff)
    desc = {p["run_id"]: _describe(p["method"], p["seed"], p["axes_key"]) for p in points}
    out.runs_recoded = len(recoded)
    out.runs_changed = sorted(desc[r] for r in changed)
    out.runs_unlisted = sorted(desc[r] for r in set(old.values()) - kept - recoded - set(changed))
    out.runs_added = sorted(
        _describe(r.method, r.seed, json.dumps(r.axes, sort_keys=True))
        for r in plan.runs
        if r.run_id not in configs and r.run_id not in takers
    )
    return out


def _spec_settings(stored: dict[str, Any], plan: SweepPlan) -> dict[str, tuple[Any, Any]]:
    """What the spec's settings change against the sweep's stored spec: the trainer's config
    (preset and overrides, resolved; grid axes aside), the set of grid axes, a search's space.
    A stored spec that no longer parses (an old or hand-made one) is compared by runs alone."""
    try:
        before = parse_spec(stored, f"stored spec of {plan.spec.name}")
    except (SpecError, ValueError):
        return {}
    now = plan.spec
    out: dict[str, tuple[Any, Any]] = {}
    axes_before = sorted(k for k in before.grid if k not in RESERVED_AXES)
    axes_now = sorted(k for k in now.grid if k not in RESERVED_AXES)
    if axes_before != axes_now:
        out["grid axes"] = (axes_before, axes_now)
    if before.trainer.config != now.trainer.config:
        out["trainer.config"] = (before.trainer.config, now.trainer.config)
    try:
        base_before = trainer_config.resolve(before.trainer.config, before.trainer.overrides)
        base_now = trainer_config.resolve(now.trainer.config, now.trainer.overrides)
    except (ValueError, KeyError, OSError):
        return out
    axes = set(axes_before) | set(axes_now)
    for k, diff in _diff(_training(base_before), _training(base_now)).items():
        if not any(k == a or k.startswith(a + ".") for a in axes):
            out[f"trainer.overrides.{k}"] = diff
    search_before = before.search.model_dump(include={"params", "metric", "direction"}) if before.search else None
    search_now = now.search.model_dump(include={"params", "metric", "direction"}) if now.search else None
    if search_before != search_now:
        for k, diff in _diff(search_before or {}, search_now or {}).items():
            out[f"search.{k}"] = diff
    return out


def _training(config: dict[str, Any] | None) -> dict[str, Any]:
    """A run's config as its id sees it: `logging` (W&B) trains nothing."""
    return {k: v for k, v in (config or {}).items() if k != "logging"}


_UNSET = "(unset)"


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    fa, fb = _flat(a), _flat(b)
    return {
        k: (fa.get(k, _UNSET), fb.get(k, _UNSET))
        for k in sorted(set(fa) | set(fb))
        if fa.get(k, _UNSET) != fb.get(k, _UNSET)
    }


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _key(method: str, sparsity: float, seed: int, axes_key: str) -> tuple[str, float, int, str]:
    return (method, round(float(sparsity), 12), int(seed), json.dumps(json.loads(axes_key), sort_keys=True))


def _describe(method: str, seed: int, axes_key: str) -> str:
    axes = json.loads(axes_key) if axes_key else {}
    return " ".join([method, f"seed {seed}", *(f"{k}={_show(v)}" for k, v in sorted(axes.items()))])


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return f"{len(items)} ({shown}{f', and {len(items) - SHOWN} more' if len(items) > SHOWN else ''})"
