"""turboprune for notebooks: results as pandas DataFrames and a level's masks and weights.

    import turboprune as tp
    df = tp.grid_points("tp-results.db", "demo")     # or a postgresql:// URL
    df.groupby(["method", "sparsity"]).test_acc.agg(["mean", "std", "count"])
    lv = tp.load_level("tp-results.db", df.level_id[0])
    lv.sparsity(), lv.mask, lv.weights

Names are resolved on first use: `import turboprune` imports neither pandas nor torch; the
DataFrame functions import pandas (the `notebook` extra), load_level imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "grid_points": "db.frames",
    "levels": "db.frames",
    "epochs": "db.frames",
    "sweeps": "db.frames",
    "store_url": "db.frames",
    "load_level": "trainer.artifacts",
    "level_path": "trainer.artifacts",
    "LevelArtifacts": "trainer.artifacts",
    "LevelNotFound": "trainer.artifacts",
    "BadLevel": "trainer.artifacts",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'turboprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
