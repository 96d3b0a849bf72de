"""Tables that fit the terminal without cutting a value.

Every column says how much it matters: key columns (method, state, accuracy...) always show, in
full; lesser ones are dropped, least important first, until the table fits the console's width,
and a note names what was left out. Columns marked `panel` (a sparsity per column, a state per
column) are split over several tables that repeat the key columns, rather than dropped. A column
marked `wrap` (a message) takes what width is left, folded over several lines, or is dropped.

Small tables are rich Tables; long ones (more than RICH_MAX_ROWS rows) are written as plain
aligned lines, since rich's layout of every cell costs about a millisecond a row: 10,000 rows took
10 s. Rich assumes 80 columns when stdout is not a terminal, unless COLUMNS says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len

PERCENT = ("test_acc", "test_top5", "best_test_acc")  # fractions in the store, percent in tables
SEP = 2  # spaces between columns
RICH_MAX_ROWS = 200
MIN_WRAP = 20  # narrowest a wrapped column may get


@dataclass
class Col:
    key: str
    header: str
    priority: int = 0  # 0: always shown; higher numbers are dropped first
    right: bool = False  # right-aligned (numbers)
    panel: bool = False  # may go to a second table instead of being dropped
    wrap: bool = False  # may fold over lines (takes the width that is left)
    style: Callable[[str], str | None] | None = None  # rich style of a cell, from its text (None: plain)


def _widths(cols: Sequence[Col], rows: Sequence[dict[str, str]]) -> dict[str, int]:
    out = {}
    for c in cols:
        w = cell_len(c.header)
        for r in rows:
            v = r.get(c.key, "")
            if v:
                w = max(w, cell_len(v))
        out[c.key] = w
    return out


def layout(
    cols: Sequence[Col], rows: Sequence[dict[str, str]], width: int
) -> tuple[list[list[Col]], dict[str, int], list[Col]]:
    """(panels of columns to show, column widths, dropped columns)."""
    widths = _widths(cols, rows)

    def total(cs: Sequence[Col]) -> int:
        return (
            sum(widths[c.key] for c in cs if not c.wrap)
            + SEP * max(0, len(cs) - 1)
            + sum(MIN_WRAP for c in cs if c.wrap)
        )

    shown = list(cols)
    dropped: list[Col] = []
    for c in sorted((c for c in cols if c.priority > 0), key=lambda c: -c.priority):
        if total(shown) <= width:
            break
        shown.remove(c)
        dropped.append(c)
    fixed = [c for c in shown if not c.panel]
    panels = [shown]
    if total(shown) > width and any(c.panel for c in shown):
        panels = []
        cur: list[Col] = []
        for c in (c for c in shown if c.panel):
            if cur and total(fixed + cur + [c]) > width:
                panels.append(fixed + cur)
                cur = []
            cur.append(c)
        panels.append(fixed + cur)
        panels = [[c for c in shown if c in p] for p in panels]  # keep the columns' order
    for p in panels:  # a wrapped column gets what is left, within its content's width
        for c in p:
            if c.wrap:
                left = width - total([x for x in p if x is not c]) - SEP
                widths[c.key] = max(MIN_WRAP, min(widths[c.key], left))
    return panels, widths, dropped


def phrases(parts: Sequence[str], width: int, sep: str = " · ", indent: str = "  ") -> list[str]:
    """Join phrases into lines no wider than `width` (measured without rich markup), breaking
    only between phrases: a line never wraps in the middle of "FAILED 3" or "4 GPUs a job"."""
    from rich.text import Text  # rich (0.025 s): not for JSON or --help

    lines: list[str] = []
    cur, cur_len = "", 0
    for p in parts:
        n = Text.from_markup(p).cell_len
        if cur and cur_len + len(sep) + n > width:
            lines.append(cur)
            cur, cur_len = indent + p, len(indent) + n
        else:
            cur, cur_len = (cur + sep + p, cur_len + len(sep) + n) if cur else (p, n)
    if cur:
        lines.append(cur)
    return lines


def number(v: Any) -> str:
    """A value as a table shows it: a float to 4 significant digits (a searched learning rate
    0.0008918, not 0.0008917730007820798), anything else as it is."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class Plain(str):
    """Lines already laid out: written as they are (rich would measure every one of them)."""


def renderables(
    cols: Sequence[Col],
    rows: Sequence[dict[str, str]],
    width: int,
    title: str | None = None,
    footer: str | None = None,
) -> list[Any]:
    """Rows (dicts of cell text) as one or more tables fitting `width`, with a title and a note
    naming what was left out: rich Tables, or Plain text for long tables."""
    from rich.text import Text  # rich (0.025 s): not for JSON or --help

    panels, widths, dropped = layout(cols, rows, width)
    out: list[Any] = [Text(title)] if title else []
    plain = len(rows) > RICH_MAX_ROWS
    for p in panels:
        out.append(_plain([c for c in p if not c.wrap], rows, widths) if plain else _rich(p, rows, widths))
    notes = []
    if dropped:
        notes.append(f"not shown at {width} columns: {', '.join(c.header for c in dropped)}")
    wrapped = list(dict.fromkeys(c.header for p in panels for c in p if c.wrap))
    if plain and wrapped:
        notes.append("not shown in a long table: " + ", ".join(wrapped))
    if footer:
        notes.append(footer)
    if notes:
        out.append(Text("(" + "; ".join(notes) + ")", style="dim"))
    return out


def show(console: Any, items: Sequence[Any]) -> None:
    for item in items:
        if isinstance(item, Plain):
            console.file.write(item)
        else:
            console.print(item, highlight=False)


def render(
    console: Any,
    cols: Sequence[Col],
    rows: Sequence[dict[str, str]],
    title: str | None = None,
    footer: str | None = None,
    width: int | None = None,
) -> None:
    show(console, renderables(cols, rows, width or console.width, title, footer))


def _rich(cols: Sequence[Col], rows: Sequence[dict[str, str]], widths: dict[str, int]):
    from rich import box  # rich (0.025 s): not for JSON or --help
    from rich.table import Table  # rich (0.025 s): not for JSON or --help

    # A space of padding on the right and the box's space divider: SEP (2) between columns.
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    for c in cols:
        w = widths[c.key]
        t.add_column(
            c.header,
            justify="right" if c.right else "left",
            no_wrap=not c.wrap,
            overflow="fold",
            min_width=None if c.wrap else w,
            max_width=w if c.wrap else None,
        )
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c.key, "")
            style = c.style(v) if c.style else None
            cells.append(f"[{style}]{_escape(v)}[/]" if style else _escape(v))
        t.add_row(*cells)
    return t


def _escape(text: str) -> str:
    return text.replace("[", "\\[") if "[" in text else text


def _plain(cols: Sequence[Col], rows: Sequence[dict[str, str]], widths: dict[str, int]) -> Plain:
    def line(cells: list[str]) -> str:
        out = []
        for c, v in zip(cols, cells):
            pad = widths[c.key] - cell_len(v)
            out.append(" " * pad + v if c.right else v + " " * pad)
        return (" " * SEP).join(out).rstrip()

    lines = [line([c.header for c in cols]), line(["-" * widths[c.key] for c in cols])]
    lines += [line([r.get(c.key, "") for c in cols]) for r in rows]
    return Plain("\n".join(lines) + "\n")
