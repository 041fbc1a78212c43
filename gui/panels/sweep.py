"""The Sweep tab: which layer, how strong? A coefficient × layer sweep of one vector, plotted live, or the
engine's search for one good setting ("Suggest settings", `gui.widgets.suggest_box`).

The tab puts together its settings form (`gui.widgets.sweep_form`), the run controls
(`gui.widgets.job_controls`) and the live results (`gui.widgets.sweep_view`); this module runs the sweep and
acts on its result: the verdict text, "Apply to Generate" for the chosen cell, and the exports. The sweep
runs on the worker (`engine.experiments.run_sweep`, one layer per call so the plot fills in layer by layer).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QWidget

from engine.experiments.sweep import OWN_LAYERS, SAMPLED_METRICS, SweepCell, SweepResult, layer_label
from engine.transcript import model_record, sweep_script
from gui.context import AppContext, SteeringChoice
from gui.jobs import SweepRequest
from gui.panels.common import bare_column, fill_with_splitter
from gui.widgets.job_controls import JobControls
from gui.widgets.suggest_box import SuggestBox
from gui.widgets.sweep_cells import suggest_region
from gui.widgets.sweep_form import SweepForm
from gui.widgets.sweep_view import SweepView


class SweepPanel(QWidget):
    def __init__(self, context: AppContext, parent=None):
        super().__init__(parent)
        self._ctx = context
        self.result: SweepResult | None = None
        self._request: SweepRequest | None = None
        self._vector_key = ""  # the library key of the swept vector

        self.form = form = SweepForm(context)
        # The inputs under the panel's own names: scripts and tests drive the tab through them.
        self._vector, self.metric, self.targets = form.vector, form.metric_box, form.targets
        self.coeff_from, self.coeff_to, self.coeff_count = form.coeff_from, form.coeff_to, form.coeff_count
        self.coeff_units = form.coeff_units
        self.sweep_layers, self.layer_from, self.layer_to = form.sweep_layers, form.layer_from, form.layer_to
        self.samples, self.max_tokens, self.seed = form.samples, form.max_tokens, form.seed

        self.controls = JobControls(
            "Run sweep",
            "Run every (layer, c) cell as batched rows on the worker",
            "Stop after the current token; finished cells are kept",
        )
        self.run_button, self.stop_button = self.controls.run_button, self.controls.stop_button
        self.progress = self.controls.progress
        self.run_button.clicked.connect(self.run)
        form.add_row(self.controls)

        self.view = SweepView()
        self.figure, self.canvas = self.view.figure, self.view.canvas
        self.cell_table, self.cell_samples = self.view.cell_table, self.view.cell_samples
        self.view.cell_chosen.connect(self._on_cell_chosen)
        self.suggestion = QLabel("Run a sweep to see which layer and coefficient steer best.")
        self.suggestion.setWordWrap(True)
        self.suggestion.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.suggestion.setStyleSheet("font-size: 13px;")
        self.apply_button = QPushButton("Apply to Generate")
        self.apply_button.setToolTip("Steer the Generate tab with this vector, layer, coefficient and mode")
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self.apply_to_generate)
        self._exports = {
            "csv": ("Export CSV…", "One row per (layer, c) cell with value, repetition and a sample"),
            "png": ("Export PNG…", "The line plot or layer × coefficient heatmap as an image"),
            "py": ("Export Python script…", "A short script using the engine API that reruns this sweep"),
        }
        exports = QHBoxLayout()
        exports.addWidget(self.apply_button)
        exports.addStretch(1)
        self._export_buttons: list[QPushButton] = []
        for kind, (text, tip) in self._exports.items():
            button = QPushButton(text)
            button.setToolTip(tip)
            button.setEnabled(False)
            button.clicked.connect(lambda _=False, kind=kind: self._ask_export(kind))
            exports.addWidget(button)
            self._export_buttons.append(button)
        right, right_layout = bare_column()
        right_layout.addWidget(self.view, 1)
        right_layout.addWidget(self.suggestion)
        right_layout.addLayout(exports)

        self.suggest_box = SuggestBox(context, form.suggest_request)
        left, left_layout = bare_column()
        left_layout.addWidget(form)
        left_layout.addWidget(self.suggest_box)
        left_layout.addStretch(1)
        fill_with_splitter(self, left, right, stretch=(2, 5), sizes=[380, 900])

        form.choices_changed.connect(self._update_run_enabled)  # also on a model change
        form.metric_box.currentTextChanged.connect(self._update_run_enabled)
        self._update_run_enabled()
        self.read_settings()

    # ---- inputs -----------------------------------------------------------------------------------------
    @Slot()
    def _update_run_enabled(self) -> None:
        ready = self._ctx.model is not None and self.form.has_vectors()
        self.controls.set_ready(ready)
        self.suggest_box.set_ready(ready and self.form.metric_box.currentText() in SAMPLED_METRICS)

    def set_vector(self, key: str) -> bool:
        return self.form.set_vector(key)

    def request(self) -> SweepRequest:
        return self.form.sweep_request()

    # ---- running -----------------------------------------------------------------------------------------
    @Slot()
    def run(self) -> None:
        job = self.controls.launch(self._ctx, self.request, "Sweep")
        if job is None:
            return
        assert isinstance(job.request, SweepRequest)
        self._request = job.request
        self._vector_key = self.form.vector_key()
        self.result = None
        self.suggestion.setText("Sweeping…")
        self.view.show_result(None)
        self._ctx.show_status("Sweeping…")
        job.partial.connect(self._on_partial)
        job.done.connect(self._on_done)
        job.failed.connect(self._on_failed)
        job.finished.connect(self._on_finished)

    @Slot()
    def stop(self) -> None:
        self.controls.stop()

    def is_running(self) -> bool:
        return self.controls.is_running()

    @Slot(object)
    def _on_partial(self, result: SweepResult) -> None:
        if self.is_running():
            self.view.show_result(result)
            self.suggestion.setText(suggest_region(result))

    @Slot(object)
    def _on_done(self, result: SweepResult) -> None:
        self.result = result
        self.view.show_result(result)
        self.suggestion.setText(suggest_region(result) or "No cells finished.")
        if not result.cancelled:
            self.controls.complete()
        for button in self._export_buttons:
            button.setEnabled(bool(result.cells))

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.suggestion.setText("The sweep failed: " + message)
        self._ctx.report_error("Sweep failed", message)

    @Slot()
    def _on_finished(self) -> None:
        self._ctx.show_status(
            "Sweep finished" if self.result and not self.result.cancelled else "Sweep stopped"
        )

    # ---- a chosen cell ----------------------------------------------------------------------------------
    @Slot(object)
    def _on_cell_chosen(self, cell: SweepCell | None) -> None:
        self.apply_button.setEnabled(cell is not None and bool(self._vector_key))

    def chosen_cell(self) -> SweepCell | None:
        return self.view.chosen_cell()

    @Slot()
    def apply_to_generate(self) -> None:
        """Hand the chosen cell's setting to the Generate tab through the context (not its widgets): the raw
        c the cell applied at its layer (`steer_coeff`; with strengths it differs from the grid's `s`)."""
        cell, request = self.chosen_cell(), self._request
        if cell is None or request is None:
            return
        vector = request.spec.vector
        layer = None if cell.layer == OWN_LAYERS or request.spec.layers is None else cell.layer
        exact = layer is None or layer in vector.layer_ids or not vector.prompts
        choice = SteeringChoice(
            vector_key=self._vector_key,
            vector_path=request.vector_path,
            coeff=cell.applied_coeff,
            layer=layer,
            mode=request.spec.mode,
            exact=exact,
        )
        self._ctx.apply_steering.emit(choice)
        where = layer_label(cell.layer) if layer is not None else "its own layers"
        note = "" if exact else " (the sweep re-captured it there from its prompts)"
        setting = request.spec.setting_text(cell)
        self._ctx.show_status(f"Generate: {self._vector_key} at {where}{note}, {setting}")

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
        self.form.read_settings()

    def write_settings(self) -> None:
        self.form.write_settings()
