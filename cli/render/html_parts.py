"""HTML pieces of the report page: escaping, JSON safe inside a script element, tables, states
and the numbers as the page writes them. Cells given to table_html are HTML already."""

from __future__ import annotations

import html
import json
import math
from typing import Any

STATE_COLOR = {
    "COMPLETED": "#2ca02c",
    "RUNNING": "#17becf",
    "PENDING": "#1f77b4",
    "PLANNED": "#888",
    "FAILED": "#d62728",
    "LOST": "#d62728",
    "PREEMPTED": "#bcbd22",
    "TIMEOUT": "#bcbd22",
    "CANCELLED": "#9467bd",
    "PRUNED": "#7fbfbf",
}


def clean(obj: Any) -> Any:
    """JSON-able, with NaN and infinities as null (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def script_json(obj: Any) -> str:
    """JSON safe inside <script type="application/json">: no </script>, no <!--, no & entities."""
    text = json.dumps(clean(obj), ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def e(value: Any) -> str:
    """Text as HTML (None as nothing), quotes included: safe in an attribute too."""
    return html.escape("" if value is None else str(value), quote=True)


def mean_std(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 2) -> str:
    if mean is None:
        return "–"
    return f"{mean * scale:.{digits}f} ± {(std or 0.0) * scale:.{digits}f}"


def hours(x: float | None) -> str:
    return "–" if x is None else f"{x:,.2f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    d, h, m = s // 86400, s // 3600 % 24, s // 60 % 60
    return f"{d}d {h}h" if d else f"{h}h {m}m" if h else f"{m}m {s % 60}s" if m else f"{s}s"


def message_html(text: str | None, chars: int) -> str:
    if not text:
        return ""
    if chars <= len(text):
        return f"<pre class=msg>{e(text)}</pre>"
    return (
        f"<pre class=msg>{e(text)}</pre><p class=dim>… {chars - len(text):,} more "
        "characters (tp-sweep status RUN_ID --format json has the whole message)</p>"
    )


def state_html(s: str) -> str:
    return f'<span class=st style="color:{STATE_COLOR.get(s, "#444")}">{e(s)}</span>'


def table_html(head: list[str], body: list[list[str]], cls: str = "") -> str:
    """Cells are HTML already (escaped by the caller)."""
    h = "".join(f"<th>{c}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body)
    return f"<table class='{cls}'><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"
