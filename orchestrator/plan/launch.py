"""One launch of a sweep: its spec, the form the store keeps it in, its plan and the executor
that runs its jobs. Built once, from the spec file (`read_launch`, which reads the file once) or
from a sweep the store holds (`stored_launch`, for resume and the supervisor's search), and
handed whole to the controller's and the search's functions."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.plan.grid import SweepPlan, plan_sweep
from orchestrator.plan.spec import SweepSpec, parse_spec, read_spec_data


@dataclass(frozen=True)
class Launch:
    spec: SweepSpec
    stored: dict[str, Any]  # the spec as the store and the sweep record keep it (stored_form)
    plan: SweepPlan
    kind: str  # the executor of its jobs: --executor, else the spec's
    # Environment the jobs' trainers get on top of the launching process's: resume --reuse
    # sets TP_REUSE there (trainer/job.py reads it), never in the launching process itself.
    job_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name


def stored_form(data: dict[str, Any], spec: SweepSpec, output_dir: str) -> dict[str, Any]:
    """The spec as written, with a database password removed, a cluster profile written out and
    the output folder replaced by `output_dir`, the absolute one its plan resolved: what the store
    and the sweep record keep, so the sweep reads the same wherever its spec is read again (a
    `resume` from another folder finds the sweep's levels where they are, not under its own
    working directory)."""
    from db.engine import display_url  # SQLAlchemy, 0.3 s

    out = copy.deepcopy(data)
    out["output_dir"] = output_dir
    if out.get("db"):
        out["db"] = display_url(str(out["db"]))
    if isinstance(out.get("executor"), dict) and out["executor"].get("profile"):
        out["executor"] = spec.executor.resolved()
    return out


def read_launch(path: str | Path, *, executor: str | None = None, reuse: str | None = None) -> Launch:
    """The launch of the spec file at `path`, read once: SpecError (and a planner's ValueError)
    when it is not a valid spec."""
    data = read_spec_data(path)
    spec = parse_spec(data, str(path))
    plan = plan_sweep(spec, reuse=reuse)
    return Launch(spec, stored_form(data, spec, plan.output_dir), plan, executor or spec.executor.kind)


def stored_launch(
    spec: SweepSpec, stored: dict[str, Any], *, executor: str | None = None, reuse: str | None = None
) -> Launch:
    """The launch of a sweep the store holds (its parsed spec and stored form), planned again:
    resume, and the supervisor's search. `reuse` (resume --reuse) replaces the sweep's policy,
    and reaches the jobs' trainers through `job_env`."""
    if reuse:
        spec = spec.model_copy(update={"reuse": reuse})
    env = {"TP_REUSE": reuse} if reuse else {}
    return Launch(spec, stored, plan_sweep(spec), executor or spec.executor.kind, env)
