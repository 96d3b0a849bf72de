"""`tp-sweep report SWEEP [--out FILE.html]`: write the sweep's self-contained HTML report
(orchestrator.operations.report reads it, cli/render/report.py renders it) atomically
(core.atomic: a temporary file beside the target, then a rename), so a bad sweep or a failed write
leaves nothing behind and never half a file."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from cli.common import BadInput, console
from core.atomic import write_atomic


def default_out(sweep: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", sweep).lstrip(".-") + "-report.html"


def write_report(path: Path, page: str) -> None:
    """core.atomic's temporary file, fsync and rename, readable as a new file would be (a report is
    for sharing, not owner-only like mkstemp's files)."""

    def write(f) -> None:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(f.fileno(), 0o666 & ~umask)
        f.write(page.encode("utf-8"))

    write_atomic(path, write)


def _check_out(out: Path) -> None:
    """Refuse, before any work, a target that cannot be written: a folder, a missing or
    unwritable folder."""
    if out.is_dir():
        raise BadInput(f"--out {out}: is a folder; give a file name (e.g. {out / 'report.html'})")
    parent = out.parent
    if not parent.is_dir():
        raise BadInput(f"--out {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise BadInput(f"--out {out}: cannot write there (permission denied)")


def cmd_report(a: argparse.Namespace) -> int:
    from cli.render.report import render  # plotly's bundle and YAML: only for a report
    from orchestrator.operations.report import sweep_report  # the store's reads (SQLAlchemy, 0.3 s)

    out = Path(a.out or default_out(a.sweep)).expanduser()
    _check_out(out)
    page = render(sweep_report(a.db, a.sweep))  # ReportError: a UserError, exit 2 (cli.tp_sweep.main)
    try:
        write_report(out, page)
    except OSError as exc:
        raise BadInput(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    size = out.stat().st_size
    console.print(f"wrote {out} ({size / 1e6:.1f} MB): open it in a browser, no network needed", highlight=False)
    return 0
