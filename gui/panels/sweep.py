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
from matplotlib.patches import Rectangle
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
    QWidget,
)

from engine.experiments.sweep import DEFAULT_PROMPTS, layer_label
from engine.generation import SamplingConfig
from gui.context import AppContext
from gui.item_models import INCOMPATIBLE, OTHER_MODEL
from gui.panels.common import bare_column, double_spin, fill_with_splitter
from gui.transcript import model_record, sweep_script
from gui.worker import SweepRequest

METRIC_TIPS = {
    "target-words": "Share of sampled completions that contain one of the target words (the paper's topic metric)",
    "sentiment": "Share of sampled completions on p+'s side by VADER sentiment (chosen for sentiment pairs)",
    "target-prob": "Next-token probability of the targets' first tokens right after each prompt (no sampling)",
    "perplexity": "Perplexity of the reference text with the vector applied (lower: more fluent)",
}
METRIC_LABELS = {
    "target-words": "share with a target word",
    "sentiment": "share on p+'s side (VADER)",
    "target-prob": "p(target tokens)",
    "perplexity": "perplexity",
}


def linspace(first: float, last: float, count: int) -> list[float]:
    if count <= 1:
        return [first]
    step = (last - first) / (count - 1)
    return [round(first + i * step, 6) for i in range(count)]


def suggest_region(result) -> str:
    """A one-paragraph answer to "which layer, how strong?" from a finished (or partial) sweep."""
    best = result.best()
    degenerate = [c for c in result.cells if c.degenerate]
    if best is None:
        return "No usable cell yet: every finished cell is degenerate or missing." if result.cells else ""
    higher = result.higher_is_better
    values = [c.value for c in result.cells if not c.degenerate and math.isfinite(c.value)]
    spread = (max(values) - min(values)) or 1.0
    near = [
        c
        for c in result.cells
        if c.layer == best.layer
        and not c.degenerate
        and math.isfinite(c.value)
        and (best.value - c.value if higher else c.value - best.value) <= 0.1 * spread
    ]
    coeffs = sorted(c.coeff for c in near)
    region = f"c = {coeffs[0]:g}" if len(coeffs) == 1 else f"c from {coeffs[0]:g} to {coeffs[-1]:g}"
    text = (
        f"Best: {layer_label(best.layer)}, c = {best.coeff:g} ({METRIC_LABELS.get(result.spec.metric, '')} "
        f"{best.value:.3g}). Within 10% of it: {layer_label(best.layer)}, {region}."
    )
    if degenerate:
        worst = sorted({abs(c.coeff) for c in degenerate})
        text += f" {len(degenerate)} degenerate cell(s) (✕, hatched) from |c| = {worst[0]:g}: stay below."
    if result.cancelled:
        text += " (partial: the sweep was stopped)"
    return text


class SweepPanel(QWidget):
    def __init__(self, context: AppContext, parent=None):
        super().__init__(parent)
        self._ctx = context
        self._controller = context.controller
        self._running = False
        self.result = None
        self._request: SweepRequest | None = None

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
        self._mode.addItems(["vector default", "front", "all", "generated"])
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
        self.stop_button.clicked.connect(self._controller.stop)
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
        right, right_layout = bare_column()
        right_layout.addWidget(self.canvas, 1)
        right_layout.addWidget(self.suggestion)
        right_layout.addLayout(exports)

        left, left_layout = bare_column()
        left_layout.addWidget(form_box)
        left_layout.addStretch(1)
        fill_with_splitter(self, left, right, stretch=(2, 5), sizes=[380, 900])

        self._controller.sweep_progress.connect(self._on_progress)
        self._controller.sweep_partial.connect(self._on_partial)
        self._controller.sweep_done.connect(self._on_done)
        self._controller.errored.connect(self._on_errored)
        self._controller.finished.connect(self._on_finished)
        context.library_changed.connect(self._refresh_vectors)
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
        return SweepRequest(
            vector_path=str(entry.path),
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

    # ---- running -----------------------------------------------------------------------------------------
    @Slot()
    def run(self) -> None:
        if self._running:
            return
        try:
            request = self.request()
        except ValueError as exc:
            self._ctx.report_error("Sweep", str(exc))
            return
        self._request = request
        self.result = None
        self._running = True
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.progress.setValue(0)
        self.suggestion.setText("Sweeping…")
        self._draw(None)
        self._ctx.show_status("Sweeping…")
        self._controller.sweep(request)

    def is_running(self) -> bool:
        return self._running

    @Slot(int, int)
    def _on_progress(self, done: int, total: int) -> None:
        if self._running:
            self.progress.setValue(round(1000 * done / max(1, total)))

    @Slot(object)
    def _on_partial(self, result) -> None:
        if self._running:
            self._draw(result)
            self.suggestion.setText(suggest_region(result))

    @Slot(object)
    def _on_done(self, result) -> None:
        self.result = result
        self._draw(result)
        self.suggestion.setText(suggest_region(result) or "No cells finished.")
        if not result.cancelled:
            self.progress.setValue(1000)
        for button in (self._csv, self._png, self._script):
            button.setEnabled(bool(result.cells))

    @Slot(str, str)
    def _on_errored(self, kind: str, message: str) -> None:
        if kind == "sweep":
            self.suggestion.setText("The sweep failed: " + message)
            self._ctx.report_error("Sweep failed", message)

    @Slot(str)
    def _on_finished(self, kind: str) -> None:
        if kind == "sweep" and self._running:
            self._running = False
            self.stop_button.setEnabled(False)
            self._update_run_enabled()
            self._ctx.show_status(
                "Sweep finished" if self.result and not self.result.cancelled else "Sweep stopped"
            )

    # ---- the plot -----------------------------------------------------------------------------------------
    def _draw(self, result) -> None:
        fig = self.figure
        fig.clear()
        if result is None or not result.cells:
            ax = fig.add_subplot()
            ax.set_axis_off()
            ax.text(0.5, 0.5, "The plot fills in as the sweep runs", ha="center", va="center", color="grey")
            self.canvas.draw_idle()
            return
        layers, coeffs, values = result.grid()
        best = result.best()
        degenerate = {(c.layer, float(c.coeff)) for c in result.cells if c.degenerate}
        label = METRIC_LABELS.get(result.spec.metric, result.spec.metric)
        line_ax, heat_ax = fig.subplots(1, 2, width_ratios=[1, 1.1])
        for i, layer in enumerate(layers):
            line_ax.plot(coeffs, values[i], marker="o", ms=4, label=layer_label(layer))
        bad = [(c, values[layers.index(l)][coeffs.index(c)]) for l, c in degenerate if l in layers]
        if bad:
            line_ax.scatter(
                *zip(*bad, strict=True), marker="x", s=70, color="crimson", zorder=3, label="degenerate"
            )
        if best is not None:
            line_ax.scatter(
                [best.coeff],
                [best.value],
                marker="*",
                s=180,
                color="gold",
                edgecolor="black",
                zorder=4,
                label="best",
            )
        line_ax.axvline(0, color="grey", lw=0.6)
        line_ax.set_xlabel("coefficient c")
        line_ax.set_ylabel(label)
        line_ax.grid(alpha=0.3)
        line_ax.legend(fontsize=7, loc="best")
        cmap = "viridis" if result.higher_is_better else "viridis_r"
        image = heat_ax.imshow(values, aspect="auto", cmap=cmap, origin="lower")
        fig.colorbar(image, ax=heat_ax, label=label, shrink=0.9)
        heat_ax.set_xticks(range(len(coeffs)), [f"{c:g}" for c in coeffs], fontsize=7)
        heat_ax.set_yticks(range(len(layers)), [layer_label(l) for l in layers], fontsize=7)
        heat_ax.set_xlabel("coefficient c")
        heat_ax.set_title("layer × coefficient", fontsize=9)
        for layer, coeff in degenerate:
            if layer in layers and coeff in coeffs:
                heat_ax.add_patch(
                    Rectangle(
                        (coeffs.index(coeff) - 0.5, layers.index(layer) - 0.5),
                        1,
                        1,
                        fill=False,
                        hatch="///",
                        edgecolor="crimson",
                        lw=0,
                    )
                )
        if best is not None:
            heat_ax.scatter(
                [coeffs.index(float(best.coeff))],
                [layers.index(best.layer)],
                marker="*",
                s=200,
                color="gold",
                edgecolor="black",
                zorder=4,
            )
        self.canvas.draw_idle()

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
            text = sweep_script(self._request, model_record(self._ctx.model.info))
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
