"""Static PNG plots for sweeps and the replication report.

Figures are drawn on matplotlib's Agg canvas directly (`Figure` + `FigureCanvasAgg`), without pyplot: the
global backend is never touched, so this is safe inside the Qt app and in headless runs alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from engine.experiments.sweep import SweepResult, layer_label

METRIC_LABELS = {
    "target-words": "share of completions with a target word",
    "sentiment": "share of completions on p+'s side (VADER)",
    "target-prob": "next-token probability of the targets",
    "perplexity": "perplexity of the reference text",
}
SHARE_METRICS = ("target-words", "sentiment")


def _save(fig: Figure, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def _vector_label(result: SweepResult) -> str:
    vector = result.spec.vector
    prompts = vector.prompts or {}
    if "positive" in prompts:
        return f"{prompts['positive']!r} − {prompts['negative']!r}"
    return vector.name or vector.method


def draw_sweep_lines(ax: Axes, result: SweepResult, *, small: bool = False) -> None:
    """The metric against c, one line per layer; degenerate cells crossed, the best cell starred."""
    layers, coeffs, values = result.grid()
    effects = result.grid("effect")[2]
    best = result.best()
    degenerate = {(c.layer, float(c.coeff)) for c in result.cells if c.degenerate}
    cells = {(c.layer, float(c.coeff)): c for c in result.cells}
    for i, layer in enumerate(layers):
        ax.plot(coeffs, values[i], marker="o", ms=4 if small else 6, label=layer_label(layer))
        low = [cells[(layer, c)].ci_low if (layer, c) in cells else math.nan for c in coeffs]
        high = [cells[(layer, c)].ci_high if (layer, c) in cells else math.nan for c in coeffs]
        if any(math.isfinite(v) for v in low):  # each cell's 95% interval (Wilson for shares)
            ax.fill_between(coeffs, low, high, alpha=0.15, label="95% CI" if i == 0 else None)
    bad = [
        (c, values[layers.index(l)][coeffs.index(c)]) for l, c in degenerate if l in layers and c in coeffs
    ]
    if bad:
        xs, ys = zip(*bad, strict=True)
        ax.scatter(xs, ys, marker="x", s=90, color="crimson", zorder=3, label="degenerate")
    if best is not None:
        ax.scatter(
            [best.coeff],
            [best.value],
            marker="*",
            s=200,
            color="gold",
            edgecolor="black",
            zorder=4,
            label=f"best ({'' if result.spec.strengths else 'c='}{result.spec.coeff_text(best.coeff)})",
        )
    ax.set_xlabel(result.spec.axis_label)
    ax.set_ylabel(METRIC_LABELS.get(result.spec.metric, result.spec.metric))
    if result.spec.metric in SHARE_METRICS:  # a share never goes below 0 (or above 1)
        ax.set_ylim(0.0, 1.02)
    ax.axvline(0, color="grey", lw=0.6)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if len(layers) == 1 and any(math.isfinite(v) for v in effects[0]):
        # the steering effect (mean per-token KL on the same context) on a second axis, beside the metric
        twin = ax.twinx()
        (line,) = twin.plot(coeffs, effects[0], ls="--", marker=".", color="tab:orange")
        twin.set_ylabel("mean KL per token (nats)", color="tab:orange")
        handles, labels = [*handles, line], [*labels, "effect (KL)"]
    ax.legend(handles, labels, fontsize=7 if small else 8)


def draw_sweep_heatmap(fig: Figure, ax: Axes, result: SweepResult) -> None:
    """The layer × coefficient heatmap of a sweep; degenerate cells hatched, the best cell starred."""
    layers, coeffs, values = result.grid()
    effects = result.grid("effect")[2]
    best = result.best()
    degenerate = {(c.layer, float(c.coeff)) for c in result.cells if c.degenerate}
    share = result.spec.metric in SHARE_METRICS
    draw_heatmap(
        fig,
        ax,
        [layer_label(l) for l in layers],
        [result.spec.coeff_text(c) for c in coeffs],
        values,
        xlabel=result.spec.axis_label,
        ylabel="layer",
        colorbar=METRIC_LABELS.get(result.spec.metric, result.spec.metric),
        hatched={(layers.index(l), coeffs.index(c)) for l, c in degenerate if l in layers and c in coeffs},
        star=(layers.index(best.layer), coeffs.index(float(best.coeff))) if best is not None else None,
        cmap="viridis" if result.higher_is_better else "viridis_r",
        vmin=0.0 if share else None,
        vmax=1.0 if share else None,
        notes=[[f"KL {v:.2g}" if math.isfinite(v) else "" for v in row] for row in effects],
    )


def draw_sweep(fig: Figure, result: SweepResult) -> None:
    """The live view of a sweep (the GUI's Sweep tab): the lines beside the heatmap, on `fig`."""
    line_ax, heat_ax = fig.subplots(1, 2, width_ratios=[1, 1.1])
    draw_sweep_lines(line_ax, result, small=True)
    draw_sweep_heatmap(fig, heat_ax, result)
    heat_ax.set_title("layer × coefficient", fontsize=9)


def plot_sweep(result: SweepResult, path: str | Path) -> None:
    """A line plot (one layer) or a layer × coefficient heatmap, as a PNG."""
    layers, coeffs, _ = result.grid()
    # the model's file or folder name: a full path is long and says where the user keeps their files
    title = f"{_vector_label(result)} ({Path(result.model).name if result.model else 'model'})"
    if result.cancelled:
        title += " (cancelled)"
    if len(layers) <= 1:
        fig = Figure(figsize=(6.4, 4.0))
        ax = fig.add_subplot()
        draw_sweep_lines(ax, result)
    else:
        fig = Figure(figsize=_heatmap_size(len(layers), len(coeffs)))
        ax = fig.add_subplot()
        draw_sweep_heatmap(fig, ax, result)
        if any(c.degenerate for c in result.cells):
            title += "\n(hatched: degenerate output)"
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def _heatmap_size(rows: int, cols: int) -> tuple[float, float]:
    return max(5.0, 0.75 * cols + 2.0), max(2.6, 0.55 * rows + 1.6)


def draw_heatmap(
    fig: Figure,
    ax: Axes,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    values: Sequence[Sequence[float]],
    *,
    xlabel: str = "",
    ylabel: str = "",
    colorbar: str = "",
    hatched: set[tuple[int, int]] | None = None,
    star: tuple[int, int] | None = None,
    cmap: str = "viridis",
    fmt: str = "{:.2f}",
    vmin: float | None = None,
    vmax: float | None = None,
    notes: Sequence[Sequence[str]] | None = None,
) -> None:
    """values[row][col] as an annotated heatmap on `ax`; `hatched` cells get a hatch, `star` a star, and
    `notes[row][col]` (if given) a second, smaller line under the value."""
    image = ax.imshow(values, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
    fig.colorbar(image, ax=ax, label=colorbar)
    long_labels = max((len(c) for c in col_labels), default=0) > 6
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=25 if long_labels else 0,
                  ha="right" if long_labels else "center")  # fmt: skip
    ax.set_yticks(range(len(row_labels)), row_labels)
    finite = [v for row in values for v in row if math.isfinite(v)]
    middle = (min(finite) + max(finite)) / 2 if finite else 0.0
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if math.isfinite(v):
                dark = (v < middle) if cmap == "viridis" else (v > middle)
                note = notes[i][j] if notes is not None else ""
                ax.text(
                    j,
                    i,
                    fmt.format(v) + (f"\n{note}" if note else ""),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    for i, j in hatched or ():
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="crimson", lw=0))
    if star is not None:
        # in the cell's corner, clear of its number
        ax.scatter(
            [star[1] + 0.33], [star[0] - 0.28], marker="*", s=150, color="gold", edgecolor="black", zorder=4
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def plot_heatmap(
    path: str | Path,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    values: Sequence[Sequence[float]],
    *,
    title: str = "",
    hatched: set[tuple[int, int]] | None = None,
    **options: Any,
) -> None:
    """values[row][col] as an annotated heatmap PNG (see `draw_heatmap` for the options)."""
    fig = Figure(figsize=_heatmap_size(len(row_labels), len(col_labels)))
    ax = fig.add_subplot()
    draw_heatmap(fig, ax, row_labels, col_labels, values, hatched=hatched, **options)
    if hatched:
        title = f"{title}\n(hatched: degenerate output)" if title else "hatched: degenerate output"
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def plot_lines(
    path: str | Path,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    xlabel: str = "coefficient c",
    ylabel: str = "",
    hlines: Mapping[str, float] | None = None,
    logy: bool = False,
    panels: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    panel_hlines: Mapping[str, Mapping[str, float]] | None = None,
    sharey: bool = True,
    logy_panels: set[str] | None = None,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    share: bool = False,
) -> None:
    """Lines of y vs x (one per series), with optional labelled horizontal reference lines.

    With `panels` ({panel title: series}), draws side-by-side panels sharing the y axis instead;
    `panel_hlines` ({panel title: {label: y}}) adds reference lines to single panels.
    """
    groups = dict(panels) if panels else {title: series}
    fig = Figure(figsize=(5.6 * len(groups), 4.0))
    axes = fig.subplots(1, len(groups), sharey=sharey, squeeze=False)[0]
    for ax, (panel_title, panel_series) in zip(axes, groups.items(), strict=True):
        for label, ys in panel_series.items():
            line = ax.plot(list(x), list(ys), marker="o", ms=3.5, label=label)[0]
            if bands and label in bands:  # a confidence interval around the series
                ax.fill_between(list(x), *bands[label], color=line.get_color(), alpha=0.15)
        lines = {**(hlines or {}), **(panel_hlines or {}).get(panel_title, {})}
        for k, (label, y) in enumerate(lines.items()):
            ax.axhline(y, ls="--", lw=1.0, color=f"C{(k + len(panel_series)) % 10}", label=label)
        ax.axvline(0, color="grey", lw=0.6)
        if logy or panel_title in (logy_panels or ()):
            ax.set_yscale("log")
        elif share:  # shares live in [0, 1]: the axis never shows negative values
            ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_xlabel(xlabel)
        ax.set_title(panel_title if panels else title, fontsize=10)
        ax.legend(fontsize=7)
    if ylabel:
        axes[0].set_ylabel(ylabel)
    if panels and title:
        fig.suptitle(title, fontsize=11)
    _save(fig, path)


def plot_bars(
    path: str | Path,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    ylabel: str = "",
    fmt: str = "{:.2f}",
) -> None:
    """Grouped bars: one group per label, one bar per series, values written on the bars."""
    fig = Figure(figsize=(max(5.0, (1.2 + 0.5 * len(series)) * len(labels) + 1.5), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    for k, (name, ys) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(labels))]
        bars = ax.bar(xs, list(ys), width=width, label=name)
        for bar, y in zip(bars, ys, strict=True):
            if math.isfinite(y):
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    bar.get_height(),
                    fmt.format(y),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    tilt = max((len(label) for label in labels), default=0) > 12
    ax.set_xticks(
        range(len(labels)), list(labels), rotation=15 if tilt else 0, ha="right" if tilt else "center"
    )
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    _save(fig, path)
