"""A .beton file's header and tables, checked before FFCV maps the file: numpy only, so the
planner's preflight checks a data set without torch or FFCV."""

from __future__ import annotations

import os

import numpy as np

from . import DataError

# The .beton file layout (FFCV 1.0.x, format version 2), used to reject truncated files before
# FFCV maps them (FFCV would read garbage or crash in numba).
_HEADER = np.dtype(
    [
        ("version", "<u2"),
        ("num_fields", "<u2"),
        ("page_size", "<u4"),
        ("num_samples", "<u8"),
        ("alloc_table_ptr", "<u8"),
    ],
    align=True,
)
_FIELD_DESC_SIZE = 1 + 16 + 1024  # type id, name, arguments
_ALLOC_ENTRY_SIZE = 24  # sample_id, ptr, size (3 x u8)


def check_beton(path: str) -> int:
    """Validate a .beton's header and table bounds; return its sample count or raise DataError."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such .beton file")
    size = os.path.getsize(path)
    if size < _HEADER.itemsize:
        raise DataError(f"{path}: truncated .beton ({size} bytes, smaller than the header)")
    h = np.fromfile(path, dtype=_HEADER, count=1)[0]
    if int(h["version"]) != 2:
        raise DataError(f"{path}: not a .beton (format version {int(h['version'])}, expected 2)")
    data_start = _HEADER.itemsize + int(h["num_fields"]) * _FIELD_DESC_SIZE
    ptr = int(h["alloc_table_ptr"])
    if ptr < data_start or ptr > size or (size - ptr) % _ALLOC_ENTRY_SIZE:
        raise DataError(
            f"{path}: truncated or unfinished .beton (allocation table at {ptr}, "
            f"file size {size}); rewrite it with `tp-sweep data write`"
        )
    table = np.fromfile(path, dtype="<u8", offset=ptr).reshape(-1, 3)
    if len(table) and int((table[:, 1] + table[:, 2]).max()) > ptr:
        raise DataError(f"{path}: truncated .beton (a sample lies beyond the data region)")
    return int(h["num_samples"])
