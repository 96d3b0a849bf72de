"""Accuracy against sparsity: a line per method, mean ± std over seeds as a band."""
from __future__ import annotations

import math
from typing import Any

from db.queries import group


def _x(sparsity: float) -> float:
    # Sparsities crowd near 1 (0.9, 0.95, 0.98): plot -log10(density) so each decade of pruning
    # gets the same width, and label the ticks with the sparsities themselves.
    return -math.log10(max(1.0 - sparsity, 1e-6))


def plot_accuracy(rows: list[dict[str, Any]], metric: str, out: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get(metric) is not None]
    groups = group(done, ["method", "sparsity"], metrics=(metric,))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    methods = sorted({g["method"] for g in groups})
    for m in methods:
        pts = sorted((g for g in groups if g["method"] == m), key=lambda g: g["sparsity"])
        mean = [g[f"{metric}_mean"] * 100 for g in pts]
        std = [g[f"{metric}_std"] * 100 for g in pts]
        if m == "dense" or all(g["sparsity"] == 0 for g in pts):
            ax.axhline(mean[0], color="k", ls="--", lw=1, label=f"dense ({mean[0]:.1f}%)")
            ax.axhspan(mean[0] - std[0], mean[0] + std[0], color="k", alpha=0.08)
            continue
        xs = [_x(g["sparsity"]) for g in pts]
        line, = ax.plot(xs, mean, marker="o", label=m)
        ax.fill_between(xs, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)],
                        color=line.get_color(), alpha=0.15)
    ticks = sorted({g["sparsity"] for g in groups if g["sparsity"] > 0})
    ax.set_xticks([_x(s) for s in ticks], [f"{s:g}" for s in ticks])
    ax.set_xlabel("sparsity (fraction of prunable weights removed)")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{title}: mean ± std over seeds" if title else "mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
