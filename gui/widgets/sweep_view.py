"""A sweep's results as the Sweep tab shows them, live: the plot, the table of cells and the chosen cell's
samples.

The plot is matplotlib on its Qt canvas: the metric against c for each layer, with each cell's 95% interval
as an error bar, and a layer × coefficient heatmap with degenerate cells hatched and the clearly best cell
starred (`gui.widgets.sweep_cells.judge`). A cell is chosen by a click on the heatmap, on the line plot
(the nearest point) or in the table; the choice is ringed in red on both plots and announced by
`cell_chosen`.
"""

from __future__ import annotations

import math

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import QPlainTextEdit, QSplitter, QVBoxLayout, QWidget

from engine.experiments.plots import METRIC_LABELS, draw_sweep
from engine.experiments.sweep import SweepCell, SweepResult, layer_label
from gui.widgets.sweep_cells import (
    NONNEGATIVE_METRICS,
    SweepCellTable,
    cell_interval,
    describe,
    judge,
    shown,
)


class SweepView(QWidget):
    """`show_result(result)` draws a (partial or final) sweep; `cell_chosen(SweepCell | None)` follows the
    chosen cell."""

    cell_chosen = Signal(object)  # SweepCell or None

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._shown: SweepResult | None = None  # what is drawn (partial or final)
        self._chosen: SweepCell | None = None
        self.figure = Figure(figsize=(8, 4), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumSize(420, 300)
        self.canvas.mpl_connect("button_press_event", self._on_plot_click)
        self.canvas.setToolTip("Click a point or a heatmap cell to read its samples")
        self.cell_table = SweepCellTable()
        self.cell_table.cell_chosen.connect(self._on_cell_chosen)
        self.cell_samples = QPlainTextEdit()
        self.cell_samples.setReadOnly(True)
        self.cell_samples.setPlaceholderText("Click a cell of the plot or the table to read its samples.")
        cells_split = QSplitter()
        cells_split.addWidget(self.cell_table)
        cells_split.addWidget(self.cell_samples)
        cells_split.setSizes([420, 480])
        plot_split = QSplitter(Qt.Orientation.Vertical)
        plot_split.addWidget(self.canvas)
        plot_split.addWidget(cells_split)
        plot_split.setStretchFactor(0, 3)
        plot_split.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(plot_split)
        self.show_result(None)

    def show_result(self, result: SweepResult | None) -> None:
        self._shown = result if result is not None and result.cells else None
        self.cell_table.show_result(self._shown, judge(self._shown) if self._shown is not None else None)
        if self._shown is None:
            self._choose(None)
        self._draw_plot()

    def chosen_cell(self) -> SweepCell | None:
        return self._chosen

    # ---- the plot -----------------------------------------------------------------------------------------
    def _draw_plot(self) -> None:
        fig = self.figure
        fig.clear()
        result = self._shown
        if result is None:
            ax = fig.add_subplot()
            ax.set_axis_off()
            ax.text(0.5, 0.5, "The plot fills in as the sweep runs", ha="center", va="center", color="grey")
            self.canvas.draw_idle()
            return
        draw_sweep(fig, shown(result, judge(result).best))
        self._draw_intervals(result)
        self._mark_chosen()
        self.canvas.draw_idle()

    def _draw_intervals(self, result: SweepResult) -> None:
        """Each cell's 95% interval as an error bar on its layer's line; share axes start at 0."""
        line_ax = self.figure.get_axes()[0]
        layers = result.grid()[0]
        lines = line_ax.get_lines()
        for i, layer in enumerate(layers):
            cells = [c for c in result.cells if c.layer == layer]
            bars = [(c.coeff, c.value, *cell_interval(result, c)) for c in cells]
            bars = [b for b in bars if math.isfinite(b[2]) and math.isfinite(b[3])]
            if not bars:
                continue
            xs, ys, lows, highs = zip(*bars, strict=True)
            yerr = [[max(0.0, y - lo) for y, lo in zip(ys, lows, strict=True)],
                    [max(0.0, hi - y) for y, hi in zip(ys, highs, strict=True)]]  # fmt: skip
            color = lines[i].get_color() if i < len(lines) else None
            line_ax.errorbar(xs, ys, yerr=yerr, fmt="none", ecolor=color, capsize=2, lw=0.8, alpha=0.8)
        if result.spec.metric in NONNEGATIVE_METRICS:  # a share or a probability is never below 0
            top = line_ax.get_ylim()[1]
            line_ax.set_ylim(0.0, min(top, 1.05) if result.spec.metric != "target-prob" else top)

    def _mark_chosen(self) -> None:
        axes = self.figure.get_axes()
        if self._chosen is None or self._shown is None or len(axes) < 2:
            return
        layers, coeffs, _ = self._shown.grid()
        if self._chosen.layer in layers and float(self._chosen.coeff) in coeffs:
            from matplotlib.patches import Rectangle

            i, j = layers.index(self._chosen.layer), coeffs.index(float(self._chosen.coeff))
            axes[1].add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2.2))
            axes[0].scatter([self._chosen.coeff], [self._chosen.value], s=120, facecolors="none",
                            edgecolors="red", lw=1.8, zorder=5)  # fmt: skip

    # ---- a chosen cell ----------------------------------------------------------------------------------
    def _on_plot_click(self, event) -> None:
        """A click on the heatmap picks that cell; on the line plot, the nearest point."""
        result = self._shown
        axes = self.figure.get_axes()
        if result is None or event.inaxes is None or event.xdata is None or len(axes) < 2:
            return
        layers, coeffs, values = result.grid()
        if event.inaxes is axes[1]:
            i, j = round(event.ydata), round(event.xdata)
            if 0 <= i < len(layers) and 0 <= j < len(coeffs):
                self.cell_table.select(layers[i], coeffs[j])
        elif event.inaxes is axes[0]:
            j = min(range(len(coeffs)), key=lambda k: abs(coeffs[k] - event.xdata))
            rows = [i for i in range(len(layers)) if math.isfinite(values[i][j])]
            if rows:
                i = min(rows, key=lambda k: abs(values[k][j] - event.ydata))
                self.cell_table.select(layers[i], coeffs[j])

    @Slot(object)
    def _on_cell_chosen(self, cell: SweepCell | None) -> None:
        self._choose(cell)
        self._draw_plot()

    def _choose(self, cell: SweepCell | None) -> None:
        self._chosen = cell
        self.cell_chosen.emit(cell)
        if cell is None or self._shown is None:
            self.cell_samples.clear()
            return
        head = (
            f"{layer_label(cell.layer)}, {self._shown.spec.setting_text(cell)}: "
            f"{METRIC_LABELS.get(self._shown.spec.metric, '')} {describe(self._shown, cell)}"
        )
        if cell.degenerate:
            head += f" — degenerate ({cell.degenerate_share:.0%} of samples)"
        body = "\n\n".join(f"[{k + 1}] {sample}" for k, sample in enumerate(cell.samples))
        self.cell_samples.setPlainText(head + "\n\n" + body)
