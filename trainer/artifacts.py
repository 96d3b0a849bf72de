"""A level's files by id, for notebooks: `tp.load_level(store_or_output_dir, level_id)`.

The level's folder (core/layout.py) holds its initial weights (root levels), the mask it
trained under, its trained weights and mask (final.pt) and its metrics. The folder is found
through the store (levels.level_dir, recorded at plan time) or under an output folder
(OUTPUT_DIR/levels/<id>). Files load through trainer.checkpoint, with
`torch.load(weights_only=True)` and a structure check: a crafted file cannot run code.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import NotFound
from core.layout import LEVEL_JSON_MAX_BYTES, BadLevel, LevelDir, read_json_bounded

_LEVEL_ID = re.compile(r"[0-9a-f]{4,40}")


class LevelNotFound(NotFound):
    pass


@dataclass
class LevelArtifacts:
    """What a level's folder holds. `weights`/`mask`: final.pt's when the level is finished, else
    None and mask.pt's mask (pruning levels) or None. `init`: init.pt (root levels). `result`:
    metrics.json (with `history`, every epoch) when finished."""

    level_id: str
    path: Path
    description: dict[str, Any]
    result: dict[str, Any] | None
    weights: dict[str, Any] | None
    mask: dict[str, Any] | None
    init: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.result is not None

    def sparsity(self) -> float | None:
        """Fraction of masked-out (zero) entries over the mask's tensors (the prunable weights):
        what `achieved_sparsity` records for a finished level. None without a mask."""
        if not self.mask:
            return None
        total = sum(m.numel() for m in self.mask.values())
        zeros = sum(int((m == 0).sum()) for m in self.mask.values())
        return zeros / total if total else 0.0


def level_path(source: Any, level_id: str) -> Path:
    """The folder of level `level_id` (or an unambiguous prefix of it): `source`
    is an output folder (holds levels/), a levels folder, or a store (URL, SQLite path, Store)."""
    if not isinstance(level_id, str) or not _LEVEL_ID.fullmatch(level_id):
        raise LevelNotFound(f"{level_id!r} is not a level id (hex digits)")
    if not _is_store(source):
        root = Path(os.fspath(source)).expanduser()
        for base in (root / "levels", root):
            if (base / level_id / "level.json").is_file():
                return base / level_id
            found = sorted(p for p in base.glob(f"{level_id}*") if (p / "level.json").is_file())
            if len(found) > 1:
                raise LevelNotFound(
                    f"level id prefix {level_id!r} matches {len(found)} levels under {base}: "
                    f"{', '.join(p.name for p in found[:10])}"
                )
            if found:
                return found[0]
        raise LevelNotFound(f"no level {level_id} under {root}")
    import sqlalchemy as sa  # SQLAlchemy (0.3 s)

    from db.frames import opened  # SQLAlchemy (0.3 s): only for a store
    from db.schema import Level  # the ORM (SQLAlchemy, 0.4 s)

    with opened(source) as store, store.reading() as s:
        found = s.execute(
            sa.select(Level.level_id, Level.level_dir).where(Level.level_id.startswith(level_id)).limit(11)
        ).all()
        where = store.display_url
    if not found:
        raise LevelNotFound(f"no level {level_id} in {where}")
    if len(found) > 1:
        raise LevelNotFound(
            f"level id prefix {level_id!r} matches {'more than 10' if len(found) > 10 else len(found)} "
            f"levels: {', '.join(lid for lid, _ in found[:10])}"
        )
    path = Path(found[0][1])
    if not (path / "level.json").is_file():
        raise LevelNotFound(
            f"level {found[0][0]}: its folder {path} is not here (the store records "
            "it; pass the output folder instead if it moved)"
        )
    return path


def _is_store(source: Any) -> bool:
    from db.store import Store  # the ORM (SQLAlchemy, 0.4 s)

    if isinstance(source, Store):
        return True
    text = os.fspath(source)
    return "://" in text or (os.path.isfile(text) and not os.path.isdir(text))


def load_level(source: Any, level_id: str, map_location: str = "cpu") -> LevelArtifacts:
    """A level's description, result, weights and masks (torch tensors on `map_location`).
    BadLevel (a ValueError) when its folder fails its checks: renamed, edited, or holding
    another level's final.pt."""
    from trainer.checkpoint import load_weights  # torch (seconds)

    path = level_path(source, level_id)
    d = LevelDir(path)
    # The folder is checked as a reuse checks it (core/layout.py): named after the id its
    # level.json holds, that id its content's hash, metrics.json well-formed beside the very
    # final.pt it was written with (its SHA-256). A folder that fails is refused, never loaded.
    check = d.inspect()
    if check.problem is not None:
        raise BadLevel(f"level folder {path}: {check.problem}")
    description = read_json_bounded(d.description, LEVEL_JSON_MAX_BYTES, "level.json")
    result = check.result
    weights = mask = init = None
    if result is not None:
        final = load_weights(d.final, map_location)
        weights, mask = final["model"], final["mask"]
    elif d.mask.exists():
        mask = load_weights(d.mask, map_location)["mask"]
    if d.init.exists():
        init = load_weights(d.init, map_location)["model"]
    return LevelArtifacts(path.name, path, description, result, weights, mask, init)
