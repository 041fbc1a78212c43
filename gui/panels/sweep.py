"""The Sweep tab: which layer, how strong? A coefficient × layer sweep of one vector, plotted live.

The sweep runs on the worker (`engine.experiments.run_sweep`, one layer per call so the plot fills in
layer by layer). The plot is matplotlib on its Qt canvas: the metric against c for each layer, and a
layer × coefficient heatmap with degenerate cells hatched and the best cell starred.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QWidget,
)

from engine.errors import ActAddError
from engine.experiments.plots import METRIC_LABELS, draw_sweep
from engine.experiments.sweep import (
    DEFAULT_PROMPTS,
    OWN_LAYERS,
    SweepCell,
    SweepResult,
    SweepSpec,
    layer_label,
)
from engine.generation import SamplingConfig
from engine.modes import MODES
from engine.transcript import model_record, sweep_script
from gui.context import AppContext, SteeringChoice
from gui.item_models import INCOMPATIBLE, OTHER_MODEL
from gui.jobs import Job, SweepRequest
from gui.panels.common import bare_column, double_spin, fill_with_splitter
from gui.widgets.sweep_cells import (
    NONNEGATIVE_METRICS,
    SweepCellTable,
    cell_interval,
    describe,
    judge,
    shown,
    suggest_region,
)

METRIC_TIPS = {
    "target-words": "Share of sampled completions that contain one of the target words (the paper's topic metric)",
    "sentiment": "Share of sampled completions on p+'s side by VADER sentiment (chosen for sentiment pairs)",
    "target-prob": "Next-token probability of the targets' first tokens right after each prompt (no sampling)",
    "perplexity": "Perplexity of the reference text with the vector applied (lower: more fluent)",
}


def linspace(first: float, last: float, count: int) -> list[float]:
    if count <= 1:
        return [first]
    step = (last - first) / (count - 1)
    return [round(first + i * step, 6) for i in range(count)]


class SweepPanel(QWidget):
    def __init__(self, context: AppContext, parent=None):
        super().__init__(parent)
        self._ctx = context
        self._controller = context.controller
        self._running = False
        self.result = None
        self._request: SweepRequest | None = None
        self._job: Job | None = None
        self._vector_key = ""  # the library key of the swept vector
        self._shown: SweepResult | None = None  # what is drawn (partial or final)
        self._chosen: SweepCell | None = None

        self._vector = QComboBox()
        self._vector.setToolTip("The library vector to sweep")
        self._vector.setMinimumContentsLength(18)
        self.coeff_from = double_spin(-1000, 1000, "The smallest coefficient c", value=-8.0)
        self.coeff_to = double_spin(-1000, 1000, "The largest coefficient c", value=8.0)
        self.coeff_count = QSpinBox()
        self.coeff_count.setRange(1, 41)
        self.coeff_count.setValue(5)
        self.coeff_count.setToolTip("How many evenly spaced coefficients, ends included")
        self.sweep_layers = QCheckBox("Sweep layers")
        self.sweep_layers.setToolTip(
            "Re-capture the vector at every layer in the range from its stored prompts (off: its own layers)"
        )
        self.layer_from = QSpinBox()
        self.layer_to = QSpinBox()
        for spin in (self.layer_from, self.layer_to):
            spin.setToolTip("Layer range to sweep, bounded by the model's depth")
            spin.setEnabled(False)
        self.sweep_layers.toggled.connect(self.layer_from.setEnabled)
        self.sweep_layers.toggled.connect(self.layer_to.setEnabled)
        self._mode = QComboBox()
        self._mode.addItems(["vector default", *(m for m in MODES if m != "ablate")])
        self._mode.setToolTip("Injection mode (front: ActAdd on the prompt; all: every position)")
        self.metric = QComboBox()
        for metric, tip in METRIC_TIPS.items():
            self.metric.addItem(metric)
            self.metric.setItemData(self.metric.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.metric.setToolTip("What to measure at each (layer, c) cell")
        self.targets = QLineEdit("wedding, weddings, bride, groom")
        self.targets.setToolTip("Comma-separated target words (target-words and target-prob)")
        self.reference = QPlainTextEdit("I went up to my friend and said hello. We talked about the weather.")
        self.reference.setToolTip("The text whose perplexity is measured (perplexity metric)")
        self.reference.setFixedHeight(48)
        self.prompts = QPlainTextEdit("\n".join(DEFAULT_PROMPTS))
        self.prompts.setToolTip("One prompt per line; each is sampled 'samples' times per cell")
        self.prompts.setFixedHeight(70)
        self.samples = QSpinBox()
        self.samples.setRange(1, 100)
        self.samples.setValue(2)
        self.samples.setToolTip("Samples per prompt and cell (target-words)")
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 512)
        self.max_tokens.setValue(24)
        self.max_tokens.setToolTip("Tokens per sample (target-words)")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Seed of the paper sampling (temperature 1, top-p 0.3, frequency penalty 1)")
        self.metric.currentTextChanged.connect(self._on_metric_changed)
        self._vector.currentIndexChanged.connect(self._on_vector_changed)

        self.run_button = QPushButton("Run sweep")
        self.run_button.setToolTip("Run every (layer, c) cell as batched rows on the worker")
        self.run_button.clicked.connect(self.run)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current token; finished cells are kept")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("%p%")

        form_box = QGroupBox("Sweep")
        form = QFormLayout(form_box)
        form.addRow("Vector:", self._vector)
        coeffs = QHBoxLayout()
        coeffs.addWidget(self.coeff_from)
        coeffs.addWidget(QLabel("to"))
        coeffs.addWidget(self.coeff_to)
        coeffs.addWidget(QLabel("×"))
        coeffs.addWidget(self.coeff_count)
        form.addRow("Coefficients:", coeffs)
        layers = QHBoxLayout()
        layers.addWidget(self.sweep_layers)
        layers.addWidget(self.layer_from)
        layers.addWidget(QLabel("to"))
        layers.addWidget(self.layer_to)
        form.addRow("Layers:", layers)
        form.addRow("Mode:", self._mode)
        form.addRow("Metric:", self.metric)
        form.addRow("Targets:", self.targets)
        form.addRow("Reference:", self.reference)
        form.addRow("Prompts:", self.prompts)
        numbers = QHBoxLayout()
        for label, widget in (("samples", self.samples), ("tokens", self.max_tokens), ("seed", self.seed)):
            numbers.addWidget(QLabel(label))
            numbers.addWidget(widget)
        form.addRow(numbers)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.stop_button)
        form.addRow(run_row)
        form.addRow(self.progress)

        self.figure = Figure(figsize=(8, 4), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumSize(420, 300)
        self.suggestion = QLabel("Run a sweep to see which layer and coefficient steer best.")
        self.suggestion.setWordWrap(True)
        self.suggestion.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.suggestion.setStyleSheet("font-size: 13px;")
        self._csv = QPushButton("Export CSV…")
        self._csv.setToolTip("One row per (layer, c) cell with value, repetition and a sample")
        self._csv.clicked.connect(lambda: self._ask_export("csv"))
        self._png = QPushButton("Export PNG…")
        self._png.setToolTip("The line plot or layer × coefficient heatmap as an image")
        self._png.clicked.connect(lambda: self._ask_export("png"))
        self._script = QPushButton("Export Python script…")
        self._script.setToolTip("A short script using the engine API that reruns this sweep")
        self._script.clicked.connect(lambda: self._ask_export("py"))
        for button in (self._csv, self._png, self._script):
            button.setEnabled(False)
        exports = QHBoxLayout()
        exports.addStretch(1)
        for button in (self._csv, self._png, self._script):
            exports.addWidget(button)
        self.canvas.mpl_connect("button_press_event", self._on_plot_click)
        self.canvas.setToolTip("Click a point or a heatmap cell to read its samples")
        self.cell_table = SweepCellTable()
        self.cell_table.cell_chosen.connect(self._on_cell_chosen)
        self.cell_samples = QPlainTextEdit()
        self.cell_samples.setReadOnly(True)
        self.cell_samples.setPlaceholderText("Click a cell of the plot or the table to read its samples.")
        self.apply_button = QPushButton("Apply to Generate")
        self.apply_button.setToolTip("Steer the Generate tab with this vector, layer, coefficient and mode")
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self.apply_to_generate)
        exports.insertWidget(0, self.apply_button)
        cells_split = QSplitter()
        cells_split.addWidget(self.cell_table)
        cells_split.addWidget(self.cell_samples)
        cells_split.setSizes([420, 480])
        plot_split = QSplitter(Qt.Orientation.Vertical)
        plot_split.addWidget(self.canvas)
        plot_split.addWidget(cells_split)
        plot_split.setStretchFactor(0, 3)
        plot_split.setStretchFactor(1, 2)
        right, right_layout = bare_column()
        right_layout.addWidget(plot_split, 1)
        right_layout.addWidget(self.suggestion)
        right_layout.addLayout(exports)

        left, left_layout = bare_column()
        left_layout.addWidget(form_box)
        left_layout.addStretch(1)
        fill_with_splitter(self, left, right, stretch=(2, 5), sizes=[380, 900])

        context.library_changed.connect(self._refresh_vectors)
        context.vector_moved.connect(self._on_vector_moved)
        context.model_changed.connect(self._on_model_changed)
        self._on_metric_changed(self.metric.currentText())
        self._on_model_changed(context.model)
        self._draw(None)
        self.read_settings()

    # ---- inputs -----------------------------------------------------------------------------------------
    @Slot(str)
    def _on_metric_changed(self, metric: str) -> None:
        self.targets.setEnabled(metric in ("target-words", "target-prob"))
        self.reference.setEnabled(metric == "perplexity")
        self.samples.setEnabled(metric in ("target-words", "sentiment"))
        self.max_tokens.setEnabled(metric in ("target-words", "sentiment"))

    @Slot(int)
    def _on_vector_changed(self, _index: int) -> None:
        """The metric and targets follow the chosen vector's pair (VADER for a sentiment pair, else the
        words of p+), so a Love - Hate vector is not swept against wedding words."""
        from engine.experiments.defaults import measure_for_prompts

        entry = self._ctx.entry(self._vector.currentData() or "")
        measure = measure_for_prompts(entry.prompts or {}) if entry is not None else None
        if measure is None or self.metric.currentText() == "perplexity":
            return
        self.metric.setCurrentText(measure.metric)
        if measure.targets:
            self.targets.setText(", ".join(measure.targets))

    @Slot()
    def _refresh_vectors(self) -> None:
        current = self._vector.currentData()
        self._vector.clear()
        for entry in self._ctx.listing.entries:
            fit = self._ctx.fit(entry)
            if fit.status == INCOMPATIBLE:
                continue
            self._vector.addItem(
                entry.key + ("  (other model)" if fit.status == OTHER_MODEL else ""), entry.key
            )
        if current is not None and (index := self._vector.findData(current)) >= 0:
            self._vector.setCurrentIndex(index)
        self._update_run_enabled()

    @Slot(str, str, str)
    def _on_vector_moved(self, old_key: str, new_key: str, _path: str) -> None:
        """A renamed or moved vector stays chosen (the next listing selects it by its new key)."""
        if (index := self._vector.findData(old_key)) >= 0:
            self._vector.setItemData(index, new_key)

    def set_vector(self, key: str) -> bool:
        index = self._vector.findData(key)
        if index >= 0:
            self._vector.setCurrentIndex(index)
        return index >= 0

    @Slot(object)
    def _on_model_changed(self, handle) -> None:
        depth = handle.info.n_layers if handle is not None else 1
        for spin in (self.layer_from, self.layer_to):
            spin.setRange(0, max(0, depth - 1))
        self.layer_to.setValue(depth - 1)
        self._refresh_vectors()

    def _update_run_enabled(self) -> None:
        self.run_button.setEnabled(
            not self._running and self._ctx.model is not None and self._vector.count() > 0
        )

    def request(self) -> SweepRequest:
        entry = self._ctx.entry(self._vector.currentData() or "")
        if entry is None:
            raise ValueError("choose a vector")
        layers = None
        if self.sweep_layers.isChecked():
            first, last = sorted((self.layer_from.value(), self.layer_to.value()))
            layers = list(range(first, last + 1))
        mode = self._mode.currentText()
        from engine.experiments.defaults import measure_for_vector

        vector = self._ctx.library.load(str(entry.path))
        measure = measure_for_vector(vector)  # a sentiment pair counts completions on p+'s side
        spec = SweepSpec(
            vector=vector,
            sentiment_sign=measure.sign if measure is not None and measure.metric == "sentiment" else 1,
            coeffs=linspace(self.coeff_from.value(), self.coeff_to.value(), self.coeff_count.value()),
            layers=layers,
            prompts=[p for p in self.prompts.toPlainText().splitlines() if p.strip()],
            metric=self.metric.currentText(),
            targets=[t.strip() for t in self.targets.text().split(",") if t.strip()],
            reference_text=self.reference.toPlainText(),
            samples_per_prompt=self.samples.value(),
            sampling=SamplingConfig.paper(max_new_tokens=self.max_tokens.value(), seed=self.seed.value()),
            mode=None if mode == "vector default" else mode,
            allow_other_model=self._ctx.fit(entry).status == OTHER_MODEL,
        )
        return SweepRequest(spec=spec, vector_path=str(entry.path))

    # ---- running -----------------------------------------------------------------------------------------
    @Slot()
    def run(self) -> None:
        if self._running:
            return
        try:
            request = self.request()
        except (ValueError, ActAddError) as exc:  # no vector chosen, or its file is unreadable
            self._ctx.report_error("Sweep", str(exc))
            return
        self._request = request
        self._vector_key = str(self._vector.currentData())
        self.result = None
        self._running = True
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.progress.setValue(0)
        self.suggestion.setText("Sweeping…")
        self._draw(None)
        self._ctx.show_status("Sweeping…")
        job = self._job = self._controller.submit(request)
        job.progress.connect(self._on_progress)
        job.partial.connect(self._on_partial)
        job.done.connect(self._on_done)
        job.failed.connect(self._on_failed)
        job.finished.connect(self._on_finished)

    @Slot()
    def stop(self) -> None:
        if self._job is not None:
            self._job.stop()

    def is_running(self) -> bool:
        return self._running

    @Slot(object)
    def _on_progress(self, progress: tuple[int, int]) -> None:
        done, total = progress
        self.progress.setValue(round(1000 * done / max(1, total)))

    @Slot(object)
    def _on_partial(self, result: SweepResult) -> None:
        if self._running:
            self._draw(result)
            self.suggestion.setText(suggest_region(result))

    @Slot(object)
    def _on_done(self, result: SweepResult) -> None:
        self.result = result
        self._draw(result)
        self.suggestion.setText(suggest_region(result) or "No cells finished.")
        if not result.cancelled:
            self.progress.setValue(1000)
        for button in (self._csv, self._png, self._script):
            button.setEnabled(bool(result.cells))

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.suggestion.setText("The sweep failed: " + message)
        self._ctx.report_error("Sweep failed", message)

    @Slot()
    def _on_finished(self) -> None:
        self._job = None
        if self._running:
            self._running = False
            self.stop_button.setEnabled(False)
            self._update_run_enabled()
            self._ctx.show_status(
                "Sweep finished" if self.result and not self.result.cancelled else "Sweep stopped"
            )

    # ---- the plot -----------------------------------------------------------------------------------------
    def _draw(self, result) -> None:
        self._shown = result if result is not None and result.cells else None
        self.cell_table.show_result(self._shown, judge(result) if self._shown is not None else None)
        if self._shown is None:
            self._choose(None)
        self._draw_plot()

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
        self.apply_button.setEnabled(cell is not None and bool(self._vector_key))
        if cell is None or self._shown is None:
            self.cell_samples.clear()
            return
        head = (
            f"{layer_label(cell.layer)}, c = {cell.coeff:g}: "
            f"{METRIC_LABELS.get(self._shown.spec.metric, '')} {describe(self._shown, cell)}"
        )
        if cell.degenerate:
            head += f" — degenerate ({cell.degenerate_share:.0%} of samples)"
        body = "\n\n".join(f"[{k + 1}] {sample}" for k, sample in enumerate(cell.samples))
        self.cell_samples.setPlainText(head + "\n\n" + body)

    def chosen_cell(self) -> SweepCell | None:
        return self._chosen

    @Slot()
    def apply_to_generate(self) -> None:
        """Hand the chosen cell's setting to the Generate tab through the context (not its widgets)."""
        cell, request = self._chosen, self._request
        if cell is None or request is None:
            return
        vector = request.spec.vector
        layer = None if cell.layer == OWN_LAYERS or request.spec.layers is None else cell.layer
        exact = layer is None or layer in vector.layer_ids or not vector.prompts
        choice = SteeringChoice(
            vector_key=self._vector_key,
            vector_path=request.vector_path,
            coeff=float(cell.coeff),
            layer=layer,
            mode=request.spec.mode,
            exact=exact,
        )
        self._ctx.apply_steering.emit(choice)
        where = layer_label(cell.layer) if layer is not None else "its own layers"
        note = "" if exact else " (the sweep re-captured it there from its prompts)"
        self._ctx.show_status(f"Generate: {self._vector_key} at {where}{note}, c = {cell.coeff:g}")

    # ---- exports ------------------------------------------------------------------------------------------
    def _ask_export(self, kind: str) -> None:
        labels = {"csv": "CSV (*.csv)", "png": "PNG image (*.png)", "py": "Python (*.py)"}
        path, _ = QFileDialog.getSaveFileName(
            self, "Export", str(Path.home() / f"sweep.{kind}"), labels[kind]
        )
        if path:
            self.export(path)

    def export(self, path: str | Path) -> None:
        """CSV, PNG or a Python script, by the file's extension."""
        path = Path(path)
        result = self.result
        if result is None or self._request is None or self._ctx.model is None:
            return
        suffix = path.suffix.lower()
        if suffix == ".csv":
            work = lambda: result.to_csv(path)  # noqa: E731
        elif suffix == ".png":
            from engine.experiments import plot_sweep

            work = lambda: plot_sweep(result, path)  # noqa: E731
        elif suffix == ".py":
            text = sweep_script(
                self._request.spec, self._request.vector_path, model_record(self._ctx.model.info)
            )
            work = lambda: path.write_text(text, encoding="utf-8")  # noqa: E731
        else:
            self._ctx.report_error("Export", f"{path.name}: use .csv, .png or .py")
            return
        self._ctx.tasks.submit(
            work,
            lambda _: self._ctx.show_status(f"Wrote {path}"),
            lambda message: self._ctx.report_error("Export", message),
        )

    # ---- settings -----------------------------------------------------------------------------------------
    def read_settings(self) -> None:
        settings = self._ctx.settings
        self.coeff_from.setValue(float(settings.value("sweep/coeff_from", self.coeff_from.value())))
        self.coeff_to.setValue(float(settings.value("sweep/coeff_to", self.coeff_to.value())))
        self.coeff_count.setValue(int(settings.value("sweep/coeff_count", self.coeff_count.value())))
        metric = str(settings.value("sweep/metric", self.metric.currentText()))
        if metric in METRIC_TIPS:
            self.metric.setCurrentText(metric)
        self.targets.setText(str(settings.value("sweep/targets", self.targets.text())))
        self.targets.setCursorPosition(0)

    def write_settings(self) -> None:
        settings = self._ctx.settings
        settings.setValue("sweep/coeff_from", self.coeff_from.value())
        settings.setValue("sweep/coeff_to", self.coeff_to.value())
        settings.setValue("sweep/coeff_count", self.coeff_count.value())
        settings.setValue("sweep/metric", self.metric.currentText())
        settings.setValue("sweep/targets", self.targets.text())
