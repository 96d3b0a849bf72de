"""Optuna searches: one study per grid cell, each trial a run, through the same executors.

A cell is a grid point (method x target sparsity x seed x axes). Its study lives in the store's
own database (Optuna's RDB storage: SQLite locally, PostgreSQL on a cluster), named
`SWEEP|method|sparsity|seed|axes`. A trial's parameters are applied to the cell's config; the
result is a run with its content-addressed id and levels like any other, planned, recorded and
submitted by the controller, so trials share every level they can (level 0 across trials with the
same training settings; whole runs when a sampler repeats itself) and nothing is trained twice.

The driver keeps `executor.array_parallelism` trials in flight with ask/tell:
- a trial is told its value when the level serving its target finishes (the `metric` of that
  level); with a pruner, it reports each epoch of its levels and is stopped when the pruner says so;
- a preempted trial is resumed from its checkpoint (Slurm requeues it; a local job is
  resubmitted) and told its value when it finishes;
- a LOST or FAILED trial is told FAIL and retried with the same parameters, `max_retries` times.
The driver can die and be started again (`tp-sweep launch` or `resume` of the same sweep): it
adopts the trials still running in the studies and goes on.

Under a supervisor (`tp-sweep supervise`, `launch --supervise`) the driver only asks and tells:
`step()` is one round of the supervisor's loop, a trial's jobs are left PLANNED for the
supervisor to submit, and failures are the supervisor's to retry by its policy; a trial is told
FAIL once the supervisor gives up on its job. So no launching process needs to live for the
search, and a trial is never retried twice (once by each).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from core import config as trainer_config
from core.code import code_identity
from core.levels import plan_levels, run_id
from core.method_lookup import get_method
from db.reader import ACTIVE_STATES
from db.schema import Epoch, Level
from db.store import Store
from orchestrator.control.controller import LaunchResult, prepare
from orchestrator.control.reconcile import reconcile_jobs
from orchestrator.control.submit import LocalDriver, db_url_file, executor_for, submit_jobs
from orchestrator.plan.grid import RunPlan, SweepPlan
from orchestrator.plan.launch import Launch
from orchestrator.plan.search_spec import SearchSpec
from orchestrator.plan.spec import SweepSpec
from orchestrator.search.studies import storage_for

FAILED = ("FAILED", "LOST", "CANCELLED")
RESUMABLE = ("PREEMPTED", "TIMEOUT")


@dataclass(frozen=True)
class Cell:
    method: str
    sparsity: float
    seed: int
    axes_json: str  # the other axes, as canonical JSON (a cell is a dict key)

    @property
    def axes(self) -> dict[str, Any]:
        return json.loads(self.axes_json)

    def study_name(self, sweep: str) -> str:
        return f"{sweep}|{self.method}|{self.sparsity:g}|{self.seed}|{self.axes_json}"


def cells_of(plan: SweepPlan) -> list[Cell]:
    return [Cell(p.method, p.sparsity, p.seed, json.dumps(p.axes, sort_keys=True)) for p in plan.points]


# ---- distributions: the spec's, as Optuna's ----------------------------------------------------
def _encode(choice: Any) -> Any:
    """Optuna's categorical choices are scalars; a list (model.hidden: [64]) travels as JSON."""
    return json.dumps(choice) if isinstance(choice, (list, dict)) else choice


def _decode(value: Any, choices: list[Any]) -> Any:
    for c in choices:
        if _encode(c) == value:
            return c
    return value


def distributions(search: SearchSpec) -> dict[str, Any]:
    from optuna.distributions import (  # Optuna (about a second)
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for key, d in search.params.items():
        if d.type == "categorical":
            out[key] = CategoricalDistribution([_encode(c) for c in d.choices or []])
        elif d.type in ("float", "log_float"):
            out[key] = FloatDistribution(*d.ends, log=d.type == "log_float", step=d.step)
        else:
            low, high = d.ends
            out[key] = IntDistribution(int(low), int(high), log=d.type == "log_int", step=int(d.step or 1))
    return out


def _sampler(search: SearchSpec, asked: int = 0):
    """The study's sampler. `asked`: trials the study holds already. A driver started again (a
    relaunch, a new supervisor) seeds it past them: seeded as the first one was, a random
    sampler would ask the same points again, and the search would repeat its first trials."""
    import optuna  # Optuna (about a second)

    s = search.sampler
    seed = (s.seed + asked) % 2**32
    if s.name == "grid":
        space = {k: [_encode(v) for v in d.grid_values() or []] for k, d in search.params.items()}
        return _AskTellGrid(space, seed=seed)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials in flight count as (pessimistic) results, so parallel asks spread out
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _grid_class():
    import optuna  # Optuna (about a second)

    class AskTellGrid(optuna.samplers.GridSampler):
        """GridSampler stops `optimize` when the grid is used up, by calling `study.stop()`,
        which raises outside `optimize`; this driver uses ask/tell and keeps its own budget."""

        def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001
            return None

    return AskTellGrid


def _AskTellGrid(space: dict[str, list[Any]], seed: int):  # noqa: N802 - a class, made lazily
    return _grid_class()(space, seed=seed)


def _pruner(search: SearchSpec):
    import optuna  # Optuna (about a second)

    p = search.pruner
    if p is None or p.name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)


# ---- a trial as a run ---------------------------------------------------------------------------
def trial_plan(spec: SweepSpec, cell: Cell, params: dict[str, Any]) -> SweepPlan:
    """The one-run plan a trial trains: the cell's config with the trial's parameters."""
    overrides = {**spec.trainer.overrides, **cell.axes, **params, "method": cell.method, "seed": cell.seed}
    config = trainer_config.resolve(spec.trainer.config, overrides)
    dense = get_method(cell.method).schedule == "dense"
    code = code_identity() if spec.reuse == "same-code" else None
    lineage = plan_levels(cell.method, config, [0.0] if dense else [cell.sparsity], code)
    axes = {**cell.axes, **params}
    run = RunPlan.of(run_id(config, lineage.codes), cell.method, cell.seed, axes, config, lineage)
    target = 0.0 if dense else cell.sparsity
    run.points = [run.point(cell.sparsity, lineage.serving[target], lineage.naive[target])]
    snapshots: dict[str, list[dict[str, Any]]] = {}
    for level in lineage.levels:
        if level.step and level.step.get("rewind") == "step":
            snapshots.setdefault(level.root, []).append(level.step["rewind_to"])
    return SweepPlan(
        spec,
        [run],
        run.points,
        {lv.level_id: lv for lv in lineage.levels},
        snapshots,
        spec.reuse,
        code,
        set(lineage.mask_only),
    )


@dataclass
class InFlight:
    cell: Cell
    trial: Any  # optuna.trial.Trial
    plan: SweepPlan
    retries: int = 0
    reported: int = 0  # intermediate values reported so far

    @property
    def run(self) -> RunPlan:
        return self.plan.runs[0]

    @property
    def serving(self) -> str:
        return self.plan.points[0].level_id


@dataclass
class SearchResult(LaunchResult):
    told: dict[str, int] = field(default_factory=dict)  # final trial state -> count


class SearchDriver:
    def __init__(
        self,
        store: Store,
        run: Launch,
        on_progress: Callable[[int, int], None] | None = None,
        poll_s: float = 1.0,
        supervised: bool = False,
    ) -> None:
        """`run`: the search's sweep; its plan's grid points are the cells."""
        spec = run.spec
        assert spec.search is not None
        self.store, self.spec, self.launch, self.kind = store, spec, run, run.kind
        self.search: SearchSpec = spec.search
        self.cells = cells_of(run.plan)
        self.on_progress, self.poll_s = on_progress, poll_s
        self.supervised = supervised
        self.result = SearchResult(spec.name)
        self.dists = distributions(self.search)
        self.ex = executor_for(spec, run.kind)
        self.local = (
            LocalDriver(store, spec, self.ex, db_url_file(store.url, spec.output_dir), self.result, run.job_env)
            if self.ex.blocking and not supervised
            else None
        )
        self.in_flight: dict[int, InFlight] = {}  # optuna trial id -> trial
        self.studies: dict[Cell, Any] | None = None

    # ---- bookkeeping ------------------------------------------------------------------------
    def _studies(self):
        import optuna  # Optuna (about a second)

        storage = storage_for(self.store.url)
        studies = {
            c: optuna.create_study(
                study_name=c.study_name(self.spec.name),
                storage=storage,
                sampler=_sampler(self.search),
                pruner=_pruner(self.search),
                direction=self.search.direction,
                load_if_exists=True,
            )
            for c in self.cells
        }
        for study in studies.values():
            asked = len(study.get_trials(deepcopy=False))
            if asked:
                study.sampler = _sampler(self.search, asked)
        return studies

    def _done(self, study) -> int:
        """Trials that count against n_trials: complete, pruned, or failed for good."""
        from optuna.trial import TrialState  # Optuna (about a second)

        return sum(
            1
            for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and t.user_attrs.get("final"))
        )

    def _params(self, trial) -> dict[str, Any]:
        return {k: _decode(v, self.search.params[k].choices or []) for k, v in trial.params.items()}

    def _start(self, cell: Cell, trial) -> None:
        params = self._params(trial)
        plan = trial_plan(self.spec, cell, params)
        retries = int(trial.user_attrs.get("retries", 0))  # set by _fail when it enqueued a retry
        trial.set_user_attr("run_id", plan.runs[0].run_id)
        trial.set_user_attr("level_id", plan.points[0].level_id)
        trial.set_user_attr("retries", retries)
        _, _, todo = prepare(self.store, plan, self.launch.stored)
        self.in_flight[trial._trial_id] = InFlight(cell, trial, plan, retries)
        self._submit(todo)

    def _submit(self, jobs: list[Any]) -> None:
        if not jobs or self.supervised:  # the supervisor submits PLANNED jobs on its pass
            return
        if self.local is not None:
            self.local.add(jobs)
        else:
            submit_jobs(self.store, self.spec, jobs, self.kind, self.result, env=self.launch.job_env)

    def _adopt(self, studies) -> None:
        """Trials a previous driver started and never told: watch them again."""
        import optuna  # Optuna (about a second)
        from optuna.trial import TrialState  # Optuna (about a second)

        for cell, study in studies.items():
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                trial = optuna.trial.Trial(study, t._trial_id)
                plan = trial_plan(self.spec, cell, self._params(t))
                _, _, todo = prepare(self.store, plan, self.launch.stored)
                self.in_flight[t._trial_id] = InFlight(cell, trial, plan, int(t.user_attrs.get("retries", 0)))
                self._submit(todo)

    # ---- the loop -----------------------------------------------------------------------------
    def start(self) -> None:
        self.studies = self._studies()
        self._adopt(self.studies)

    def step(self) -> bool:
        """One round: top up the trials in flight, watch them, tell the finished ones. True once
        every cell has its n_trials and nothing is in flight."""
        if self.studies is None:
            self.start()
        studies = self.studies
        assert studies is not None
        budget = self.search.trials_per_cell()
        cap = self.spec.executor.array_parallelism
        # Top up, cells taking turns, until `cap` trials are in flight.
        for cell, study in studies.items():
            busy = sum(1 for f in self.in_flight.values() if f.cell == cell)
            while len(self.in_flight) < cap and self._done(study) + busy < budget:
                self._start(cell, study.ask(self.dists))
                busy += 1
        if not self.in_flight:
            return True
        if self.local is not None:
            self.local.step()
        self._watch()
        if self.on_progress:
            self.on_progress(sum(self._done(s) for s in studies.values()), budget * len(studies))
        return False

    def run(self) -> SearchResult:
        self.start()
        while not self.step():
            time.sleep(self.poll_s)
        while self.local is not None and self.local.busy:  # let the last jobs exit and be seen
            self.local.step()
            time.sleep(self.poll_s)
        if self.on_progress and self.studies:
            budget = self.search.trials_per_cell()
            self.on_progress(sum(self._done(s) for s in self.studies.values()), budget * len(self.studies))
        return self.result

    def _watch(self) -> None:
        jobs_by_trial = {tid: self.store.jobs_of_levels(f.run.levels) for tid, f in self.in_flight.items()}
        if self.local is None and not self.supervised:  # the supervisor reconciled already
            reconcile_jobs(
                self.store, [j for js in jobs_by_trial.values() for j in js.values()], self.spec.executor
            )
            jobs_by_trial = {tid: self.store.jobs_of_levels(f.run.levels) for tid, f in self.in_flight.items()}
        for tid, f in list(self.in_flight.items()):
            level = self._level(f.serving)
            if level is not None and level.finished_at is not None:
                value = getattr(level, self.search.metric)
                self._tell(tid, f, value)
                continue
            jobs = jobs_by_trial[tid]
            if self.search.pruner and self._prune(tid, f):
                continue
            if self.supervised:  # the supervisor retries by its policy; FAIL once it gives up
                given_up = [j for j in jobs.values() if j.verdict == "final" or j.state == "CANCELLED"]
                if given_up:
                    self._fail(tid, f, given_up, final=True)
                continue
            failed = [j for j in jobs.values() if j.state in FAILED]
            resumable = [j for j in jobs.values() if j.state in RESUMABLE]
            running_here = self.local is not None and any(j.job_id in self.local.queued for j in jobs.values())
            if failed and not running_here:
                self._fail(tid, f, failed)
            elif resumable and not running_here:
                self._submit(resumable)  # from its checkpoint

    def _level(self, level_id: str) -> Level | None:
        with self.store.reading() as s:
            return s.get(Level, level_id)

    def _tell(self, tid: int, f: InFlight, value: float | None, state: Any = None) -> None:
        from optuna.trial import TrialState  # Optuna (about a second)

        study = f.trial.study
        if state is None and value is None:
            state = TrialState.FAIL  # the level finished without the metric (no evaluation)
        study.tell(f.trial, value if state is None else None, state=state)
        name = (state or TrialState.COMPLETE).name
        self.result.told[name] = self.result.told.get(name, 0) + 1
        del self.in_flight[tid]

    def _fail(self, tid: int, f: InFlight, jobs: list[Any], final: bool = False) -> None:
        from optuna.trial import TrialState  # Optuna (about a second)

        why = "; ".join(f"job {j.job_id} {j.state}: {j.message or ''}" for j in jobs)[:500]
        f.trial.set_user_attr("error", why)
        final = final or f.retries >= self.search.max_retries
        f.trial.set_user_attr("final", final)
        study, params = f.trial.study, dict(f.trial.params)
        self._tell(tid, f, None, TrialState.FAIL)
        if not final:
            for j in jobs:  # the retry's launch resubmits them
                self.store.set_job_state(
                    j.job_id,
                    "PLANNED",
                    only_from=FAILED,
                    clear_sched=True,
                    message=f"retried by the search (trial {f.trial.number})",
                )
            study.enqueue_trial(params, user_attrs={"retries": f.retries + 1}, skip_if_exists=False)

    def _prune(self, tid: int, f: InFlight) -> bool:
        """Report the run's epochs as intermediate values; stop the trial if the pruner says so."""
        from optuna.trial import TrialState  # Optuna (about a second)

        order = {lid: i for i, lid in enumerate(f.run.levels)}
        with self.store.reading() as s:
            rows = sorted(
                s.execute(
                    sa.select(Epoch.level_id, Epoch.epoch, Epoch.test_acc, Epoch.test_loss, Epoch.test_top5).where(
                        Epoch.level_id.in_(f.run.levels)
                    )
                ).all(),
                key=lambda r: (order[r.level_id], r.epoch),
            )
        metric = {"best_test_acc": "test_acc"}.get(self.search.metric, self.search.metric)
        values = [getattr(r, metric) for r in rows]
        best = None
        for step, v in enumerate(values):
            if v is None:
                continue
            if self.search.metric == "best_test_acc":
                best = v if best is None else max(best, v)
                v = best
            if step >= f.reported:
                f.trial.report(float(v), step)
        f.reported = max(f.reported, len(values))
        if values and f.trial.should_prune():
            from orchestrator.control.controller import cancel  # the store: SQLAlchemy, 0.3 s

            others = {lid for t, g in self.in_flight.items() if t != tid for lid in g.run.levels}
            mine = [
                j
                for j in self.store.jobs_of_levels(f.run.levels).values()
                if j.state in ACTIVE_STATES + ("PLANNED",) and others.isdisjoint(j.levels)
            ]
            last = next((v for v in reversed(values) if v is not None), None)
            metric = self.search.metric
            said = (
                f"no {metric}"
                if last is None
                else f"{metric} {last:.4f}"
                if metric == "test_loss"
                else f"{metric} {100 * last:.2f} %"
            )
            message = f"pruned by the search after {len(values)} epochs: {said} (trial {f.trial.number})"
            cancel(self.store, mine, self.spec.executor, state="PRUNED", message=message)
            self._tell(tid, f, None, TrialState.PRUNED)
            return True
        return False
