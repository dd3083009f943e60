"""Figures a person understands without reading code: titles, axis labels with units, legends.

matplotlib with the non-interactive Agg backend, so plots are written on machines with no screen.
"""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MARKERS = "osD^vPX*"


def line_panels(path: Path, panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]], title: str,
                xlabel: str, ylabel: str, logx: bool = False, logy: bool = False,
                ylim: tuple[float, float] | None = None) -> Path:
    """One subplot per panel, one line per series: ``panels[panel][series] = (xs, ys)``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (panel, series) in zip(axes[0], panels.items()):
        for i, (name, (xs, ys)) in enumerate(series.items()):
            ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], markersize=4, label=name)
        ax.set_title(panel)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({x for xs, _ in series.values() for x in xs}))
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        if logy:
            ax.set_yscale("log")
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(textwrap.fill(title, width=62 * len(panels)))  # long titles wrap instead of being cut off
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def heatmap(ax, weights, x_labels: list[str], y_labels: list[str], title: str, font_size: float | None = None):
    """Attention weights (rows: queries, columns: keys) with tokens as tick labels; returns the image."""
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    size = font_size or (8 if max(len(x_labels), len(y_labels)) <= 20 else 6)
    ax.set_xticks(range(len(x_labels)), x_labels, rotation=90, fontsize=size)
    ax.set_yticks(range(len(y_labels)), y_labels, fontsize=size)
    ax.set_title(title, fontsize=9)
    return image


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
