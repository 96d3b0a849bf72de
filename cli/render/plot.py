"""Accuracy against what the network kept: a line per method, mean ± std over seeds as a band.

Points sit at what the levels achieved, not at the targets asked for: with `prune.landing: trunk`
a target of 0.5 is served by a trunk level at 0.59, and the point goes there, hollow, so nobody
reads it as a result at 0.5. The x axis is one of

    sparsity   achieved sparsity of the prunable weights (the default), on -log10(density)
    network    achieved sparsity of the whole network (every parameter), on the same scale
    density    % of weights remaining (prunable), log scale, decreasing to the right as in the
               lottery-ticket papers
    flops      multiply-adds per example (conv and linear layers with zeros skipped, and the
               attention products no mask removes), log scale, decreasing to the right

A level finished before its measure was recorded (whole-network sparsity and cost came later) has
no place on that axis: its points are left out, never placed by another measure, and `unmeasured`
names them for the caller to say so. A dense reference line needs no place on the axis.
"""

from __future__ import annotations

import math
from typing import Any

from db.queries import group

X_AXES = ("sparsity", "network", "density", "flops")
FIELDS = {
    "sparsity": "achieved_sparsity",
    "network": "network_sparsity",
    "density": "achieved_sparsity",
    "flops": "flops",
}
_LABEL = {
    "sparsity": "achieved sparsity of the prunable weights",
    "network": "achieved sparsity of the whole network (all parameters)",
    "density": "weights remaining (% of prunable weights, log scale)",
    "flops": "multiply-adds per example (zeros skipped, attention products kept; log scale)",
}


def _reference(rows: list[dict[str, Any]]) -> set[str]:
    """Methods drawn as a reference line (dense, or only at sparsity 0): no x value needed."""
    methods: dict[str, bool] = {}
    for r in rows:
        methods[r["method"]] = methods.get(r["method"], True) and (r["method"] == "dense" or r["sparsity"] == 0)
    return {m for m, ref in methods.items() if ref}


def unmeasured(rows: list[dict[str, Any]], metric: str, x: str = "sparsity") -> list[dict[str, Any]]:
    """The finished grid points the plot leaves out on axis `x`: their level lacks its measure."""
    field, reference = FIELDS[x], _reference(rows)
    return [r for r in rows if r.get(metric) is not None and r.get(field) is None and r["method"] not in reference]


def _x(value: float, x: str) -> float:
    if x in ("sparsity", "network"):
        # Sparsities crowd near 1 (0.9, 0.95, 0.98): -log10(density) gives each decade of pruning
        # the same width; the ticks are labelled with the sparsities themselves.
        return -math.log10(max(1.0 - value, 1e-6))
    if x == "density":
        return max(1.0 - value, 1e-6) * 100.0
    return max(value, 1.0)


def plot_accuracy(
    rows: list[dict[str, Any]], metric: str, out: str, title: str = "", x: str = "sparsity"
) -> dict[str, list[tuple[float, float, bool]]]:
    """Write the PNG; returns what it drew: per method, (x measure, mean metric %, hollow)."""
    import matplotlib  # matplotlib (a second)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib (a second)

    field, reference = FIELDS[x], _reference(rows)
    left_out = {id(r) for r in unmeasured(rows, metric, x)}
    done = [r for r in rows if r.get(metric) is not None and id(r) not in left_out]
    off = {(r["method"], r["sparsity"]) for r in done if r.get("off_target")}
    groups = group(done, ["method", "sparsity"], metrics=(metric, field))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ticks: dict[float, str] = {}
    drawn: dict[str, list[tuple[float, float, bool]]] = {}
    ticks_density: list[float] = []
    for m in sorted({g["method"] for g in groups}):
        pts = sorted(
            (g for g in groups if g["method"] == m and (m in reference or g[f"{field}_mean"] is not None)),
            key=lambda g: g["sparsity"],
        )
        if not pts:
            continue
        mean = [g[f"{metric}_mean"] * 100 for g in pts]
        std = [g[f"{metric}_std"] * 100 for g in pts]
        if m in reference:
            ax.axhline(mean[0], color="k", ls="--", lw=1, label=f"dense ({mean[0]:.1f}%)")
            ax.axhspan(mean[0] - std[0], mean[0] + std[0], color="k", alpha=0.08)
            continue
        xs = [_x(g[f"{field}_mean"], x) for g in pts]
        (line,) = ax.plot(xs, mean, marker="", label=m)
        color = line.get_color()
        for xi, yi, g in zip(xs, mean, pts):
            hollow = (m, g["sparsity"]) in off
            ax.plot([xi], [yi], marker="o", ls="", color=color, markerfacecolor="none" if hollow else color)
            v = g[f"{field}_mean"]
            drawn.setdefault(m, []).append((v, yi, hollow))
            ticks_density.append(xi)
            ticks.setdefault(round(xi, 6), f"{v:.3g}" if x in ("sparsity", "network") else "")
        ax.fill_between(
            xs, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)], color=color, alpha=0.15
        )
    if x in ("sparsity", "network") and ticks:
        # one tick per distinct place, labelled with the sparsity found there
        places = sorted(ticks)
        kept = [p for i, p in enumerate(places) if i == 0 or p - places[i - 1] > 0.04]
        ax.set_xticks(kept, [ticks[p] for p in kept])
    else:
        ax.set_xscale("log")
        ax.invert_xaxis()  # pruning goes to the right
        if x == "density":
            from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # matplotlib (a second)

            lo, hi = min(ax.get_xlim()), max(ax.get_xlim())
            marks = [m for m in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01) if lo <= m <= hi]
            marks += sorted({round(v, 1) for v in ticks_density}) if len(marks) < 3 else []
            ax.xaxis.set_major_locator(FixedLocator(marks))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(_LABEL[x])
    ax.set_ylabel(f"{metric} (%)")
    head = f"{title}: mean ± std over seeds" if title else "mean ± std over seeds"
    if off:
        head += "\n(hollow: served by a trunk level away from its target)"
    ax.set_title(head, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return drawn
