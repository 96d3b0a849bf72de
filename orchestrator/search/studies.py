"""A search's studies as they are stored, read only: what status, query --best and the report
show of a search, without the driver that submits its trials (Optuna's RDB storage lives in the
store's own database, one study per cell, named `SWEEP|method|sparsity|seed|axes`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from db.reader import StoreReader


def study_names(storage: Any, sweep: str) -> list[str]:
    import optuna  # Optuna (about a second)

    return [n for n in optuna.study.get_all_study_names(storage) if n.startswith(f"{sweep}|")]


def storage_for(url: str):
    """Optuna's RDB storage on the store's own database."""
    import optuna  # Optuna (about a second)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}  # jobs write the same file
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


@contextmanager
def opened_storage(url: str) -> Iterator[Any]:
    """storage_for(url), its engine's connections closed on the way out: a process that reads a
    search many times (the tests, a notebook) must not keep a handle on the store per read."""
    storage = storage_for(url)
    try:
        yield storage
    finally:
        storage.engine.dispose()


def search_summary(store: StoreReader, sweep: str) -> list[dict[str, Any]]:
    """Per cell: trials by state, and the best trial's value, parameters and run."""
    import optuna  # Optuna (about a second)
    from optuna.trial import TrialState  # Optuna (about a second)

    out = []
    with opened_storage(store.url) as storage:
        for name in study_names(storage, sweep):
            study = optuna.load_study(study_name=name, storage=storage)
            trials = study.get_trials(deepcopy=False)
            counts = {st.name: sum(1 for t in trials if t.state == st) for st in TrialState}
            _, method, sparsity, seed, axes = name.split("|", 4)
            row: dict[str, Any] = {
                "sweep": sweep,
                "method": method,
                "sparsity": float(sparsity),
                "seed": int(seed),
                "axes": json.loads(axes),
                "direction": study.direction.name.lower(),
                "trials": len(trials),
                **{k.lower(): v for k, v in counts.items()},
            }
            done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
            if done:
                best = study.best_trial
                row.update(
                    best_value=best.value,
                    best_params=best.params,
                    best_trial=best.number,
                    best_run_id=best.user_attrs.get("run_id"),
                )
            out.append(row)
    return out


def search_trials(store: StoreReader, sweep: str, most: int = 5000) -> list[dict[str, Any]]:
    """Every trial of the sweep's studies (at most `most`): its cell, number, state, value,
    parameters and run id; what the report plots each parameter against the metric with. A
    pruned trial has no value: `pruned_value` is the last it reported, after `pruned_epochs`."""
    import optuna  # Optuna (about a second)
    from optuna.trial import TrialState  # Optuna (about a second)

    out: list[dict[str, Any]] = []
    with opened_storage(store.url) as storage:
        for name in study_names(storage, sweep):
            _, method, sparsity, seed, axes = name.split("|", 4)
            study = optuna.load_study(study_name=name, storage=storage)
            for t in study.get_trials(deepcopy=False):
                if len(out) >= most:
                    return out
                steps = t.intermediate_values if t.state == TrialState.PRUNED else {}
                out.append(
                    {
                        "method": method,
                        "sparsity": float(sparsity),
                        "seed": int(seed),
                        "axes": json.loads(axes),
                        "number": t.number,
                        "state": t.state.name,
                        "value": t.value,
                        "params": dict(t.params),
                        "run_id": t.user_attrs.get("run_id"),
                        "pruned_epochs": max(steps) + 1 if steps else None,
                        "pruned_value": steps[max(steps)] if steps else None,
                    }
                )
    return out
