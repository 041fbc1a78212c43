"""The Sweep tab's settings form: which vector, which coefficients and layers, what to measure, how to sample.

It owns its inputs and their rules (the metric and targets follow the chosen vector's pair; the layer range
follows the model's depth; only vectors that can steer the loaded model are offered), turns them into the
engine's specs (`SweepSpec` for a sweep, `SuggestSpec` for "Suggest settings") and keeps them in the
settings file under `sweep/...`.

Coefficients are normalised strengths by default, raw c one choice away; the range and its rules are
`gui.widgets.coeff_range`.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QPlainTextEdit,
    QWidget,
)

from engine.experiments.sweep import DEFAULT_PROMPTS, SAMPLED_METRICS, SweepSpec
from engine.generation import SamplingConfig
from engine.library import VectorEntry
from engine.modes import MODES
from engine.vector import SteeringVector
from gui.context import AppContext
from gui.item_models import OTHER_MODEL
from gui.jobs import SuggestRequest, SweepRequest
from gui.panels.common import int_spin
from gui.widgets.coeff_range import CoefficientRange
from gui.widgets.vector_choice import fill_with_fitting_vectors

METRIC_TIPS = {
    "target-words": "Share of sampled completions that contain one of the target words (the paper's topic metric)",
    "sentiment": "Share of sampled completions on p+'s side by VADER sentiment (chosen for sentiment pairs)",
    "target-prob": "Next-token probability of the targets' first tokens right after each prompt (no sampling)",
    "perplexity": "Perplexity of the reference text with the vector applied (lower: more fluent)",
}


@dataclass
class ChosenVector:
    """The form's vector, read from the library, with what the form's measurement needs to know of it."""

    entry: VectorEntry
    vector: SteeringVector
    sentiment_sign: int  # a sentiment pair counts completions on p+'s side
    other_model: bool  # captured on another model of the same shape


class SweepForm(QGroupBox):
    """The inputs of a sweep. `choices_changed` fires when the list of vectors is refreshed."""

    choices_changed = Signal()

    def __init__(self, context: AppContext, parent: QWidget | None = None):
        super().__init__("Sweep", parent)
        self._ctx = context
        self.vector = QComboBox()
        self.vector.setToolTip("The library vector to sweep")
        self.vector.setMinimumContentsLength(18)
        self.coeff_range = CoefficientRange(self.effective_mode, self._raw_per_strength)
        self.coeff_from, self.coeff_to = self.coeff_range.coeff_from, self.coeff_range.coeff_to
        self.coeff_count, self.coeff_units = self.coeff_range.coeff_count, self.coeff_range.coeff_units
        self.sweep_layers = QCheckBox("Sweep layers")
        self.sweep_layers.setToolTip(
            "Re-capture the vector at every layer in the range from its stored prompts (off: its own layers)"
        )
        self.layer_from = int_spin(0, 0, "Layer range to sweep, bounded by the model's depth")
        self.layer_to = int_spin(0, 0, "Layer range to sweep, bounded by the model's depth")
        for spin in (self.layer_from, self.layer_to):
            spin.setEnabled(False)
            self.sweep_layers.toggled.connect(spin.setEnabled)
        self.mode = QComboBox()
        self.mode.addItems(["vector default", *(m for m in MODES if m != "ablate")])
        self.mode.setToolTip("Injection mode (front: ActAdd on the prompt; all: every position)")
        self.metric_box = QComboBox()
        for metric, tip in METRIC_TIPS.items():
            self.metric_box.addItem(metric)
            self.metric_box.setItemData(self.metric_box.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.metric_box.setToolTip("What to measure at each (layer, c) cell")
        self.targets = QLineEdit("wedding, weddings, bride, groom")
        self.targets.setToolTip("Comma-separated target words (target-words and target-prob)")
        self.reference = QPlainTextEdit("I went up to my friend and said hello. We talked about the weather.")
        self.reference.setToolTip("The text whose perplexity is measured (perplexity metric)")
        self.reference.setFixedHeight(48)
        self.prompts = QPlainTextEdit("\n".join(DEFAULT_PROMPTS))
        self.prompts.setToolTip("One prompt per line; each is sampled 'samples' times per cell")
        self.prompts.setFixedHeight(70)
        self.samples = int_spin(1, 100, "Samples per prompt and cell (target-words)", value=2)
        self.max_tokens = int_spin(1, 512, "Tokens per sample (target-words)", value=24)
        self.seed = int_spin(
            0, 2**31 - 1, "Seed of the paper sampling (temperature 1, top-p 0.3, frequency penalty 1)"
        )
        self.metric_box.currentTextChanged.connect(self._on_metric_changed)
        self.vector.currentIndexChanged.connect(self._on_vector_changed)
        self.mode.currentTextChanged.connect(lambda _: self.coeff_range.follow_mode())

        self._form = form = QFormLayout(self)
        form.addRow("Vector:", self.vector)
        form.addRow("Coefficients:", self.coeff_range)
        form.addRow("Layers:", _row(self.sweep_layers, self.layer_from, QLabel("to"), self.layer_to))
        form.addRow("Mode:", self.mode)
        form.addRow("Metric:", self.metric_box)
        form.addRow("Targets:", self.targets)
        form.addRow("Reference:", self.reference)
        form.addRow("Prompts:", self.prompts)
        form.addRow(
            _row(
                QLabel("samples"), self.samples, QLabel("tokens"), self.max_tokens, QLabel("seed"), self.seed
            )
        )

        context.library_changed.connect(self.refresh_vectors)
        context.vector_moved.connect(self._on_vector_moved)
        context.model_changed.connect(self._on_model_changed)
        # An untouched raw-c range is the strength default converted with the residual norms, once known.
        context.residual_norms_changed.connect(lambda _: self.coeff_range.follow_mode())
        self._on_metric_changed(self.metric_box.currentText())
        self._on_model_changed(context.model)

    def add_row(self, item: QWidget | QLayout) -> None:
        """Append a full-width row below the inputs (the panel's run controls)."""
        self._form.addRow(item)

    # ---- the inputs' rules --------------------------------------------------------------------------------
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

        self.coeff_range.follow_mode()
        entry = self._ctx.entry(self.vector.currentData() or "")
        measure = measure_for_prompts(entry.prompts or {}) if entry is not None else None
        if measure is None or self.metric_box.currentText() == "perplexity":
            return
        self.metric_box.setCurrentText(measure.metric)
        if measure.targets:
            self.targets.setText(", ".join(measure.targets))

    # ---- the coefficient range and its units -----------------------------------------------------------
    def effective_mode(self) -> str:
        """The mode the sweep will use: the chosen one, or the chosen vector's default (front: none)."""
        if (mode := self._mode()) is not None:
            return mode
        entry = self._ctx.entry(self.vector_key())
        return entry.default_mode if entry is not None else "front"

    def units(self) -> str:
        return self.coeff_range.units()

    def set_units(self, units: str) -> None:
        self.coeff_range.set_units(units)

    def _raw_per_strength(self) -> float | None:
        """c per unit of strength for the chosen vector and mode at its own first layer (the sweep's raw c
        differs by layer): r_l / ||v_l||. None without the model's residual norms or a readable vector."""
        from engine.errors import ActAddError
        from engine.strength import relative_norms

        norms = self._ctx.residual_norms
        entry = self._ctx.entry(self.vector_key())
        if norms is None or entry is None:
            return None
        try:
            vector = self._ctx.library.load(str(entry.path))
            relative = relative_norms(vector, norms, mode=self.effective_mode())
        except (ActAddError, OSError, ValueError):
            return None
        first = relative.get(min(relative)) if relative else None
        return 1.0 / first if first else None

    @Slot()
    def refresh_vectors(self) -> None:
        fill_with_fitting_vectors(self.vector, self._ctx)
        self.choices_changed.emit()

    @Slot(str, str, str)
    def _on_vector_moved(self, old_key: str, new_key: str, _path: str) -> None:
        """A renamed or moved vector stays chosen (the next listing selects it by its new key)."""
        if (index := self.vector.findData(old_key)) >= 0:
            self.vector.setItemData(index, new_key)

    @Slot(object)
    def _on_model_changed(self, handle) -> None:
        depth = handle.info.n_layers if handle is not None else 1
        for spin in (self.layer_from, self.layer_to):
            spin.setRange(0, max(0, depth - 1))
        self.layer_to.setValue(depth - 1)
        self.refresh_vectors()

    def set_vector(self, key: str) -> bool:
        index = self.vector.findData(key)
        if index >= 0:
            self.vector.setCurrentIndex(index)
        return index >= 0

    def vector_key(self) -> str:
        return str(self.vector.currentData() or "")

    def has_vectors(self) -> bool:
        return self.vector.count() > 0

    # ---- the engine's specs ---------------------------------------------------------------------------------
    def chosen_vector(self) -> ChosenVector:
        """The chosen vector, read from its file (ValueError when none is chosen, ActAddError when the file
        is unreadable)."""
        from engine.experiments.defaults import measure_for_vector

        entry = self._ctx.entry(self.vector_key())
        if entry is None:
            raise ValueError("choose a vector")
        vector = self._ctx.library.load(str(entry.path))
        measure = measure_for_vector(vector)
        return ChosenVector(
            entry=entry,
            vector=vector,
            sentiment_sign=measure.sign if measure is not None and measure.metric == "sentiment" else 1,
            other_model=self._ctx.fit(entry).status == OTHER_MODEL,
        )

    def _mode(self) -> str | None:
        mode = self.mode.currentText()
        return None if mode == "vector default" else mode

    def _prompts(self) -> list[str]:
        return [p for p in self.prompts.toPlainText().splitlines() if p.strip()]

    def _targets(self) -> list[str]:
        return [t.strip() for t in self.targets.text().split(",") if t.strip()]

    def _sampling(self) -> SamplingConfig:
        return SamplingConfig.paper(max_new_tokens=self.max_tokens.value(), seed=self.seed.value())

    def _layers(self) -> list[int] | None:
        """The layer range when 'Sweep layers' is on, else None."""
        if not self.sweep_layers.isChecked():
            return None
        first, last = sorted((self.layer_from.value(), self.layer_to.value()))
        return list(range(first, last + 1))

    def sweep_request(self) -> SweepRequest:
        chosen = self.chosen_vector()
        layers = self._layers()
        spec = SweepSpec(
            vector=chosen.vector,
            sentiment_sign=chosen.sentiment_sign,
            coeffs=self.coeff_range.coeffs(),
            strengths=self.coeff_range.strengths(),
            layers=layers,
            prompts=self._prompts(),
            metric=self.metric_box.currentText(),
            targets=self._targets(),
            reference_text=self.reference.toPlainText(),
            samples_per_prompt=self.samples.value(),
            sampling=self._sampling(),
            mode=self._mode(),
            allow_other_model=chosen.other_model,
        )
        return SweepRequest(spec=spec, vector_path=str(chosen.entry.path))

    def suggest_request(self) -> SuggestRequest:
        """The same vector, measure, prompts and sampling for `engine.experiments.suggest`, which chooses the
        coefficients itself, and the layers too unless 'Sweep layers' gives a range to search."""
        from engine.experiments.suggest import SuggestSpec

        metric = self.metric_box.currentText()
        if metric not in SAMPLED_METRICS:
            raise ValueError(
                f"Suggest measures sampled text: choose the metric {' or '.join(SAMPLED_METRICS)}"
            )
        chosen = self.chosen_vector()
        spec = SuggestSpec(
            vector=chosen.vector,
            metric=metric,
            targets=self._targets(),
            sentiment_sign=chosen.sentiment_sign,
            mode=self._mode(),
            prompts=self._prompts(),
            samples_per_prompt=self.samples.value(),
            sampling=self._sampling(),
            layers=self._layers(),
        )
        return SuggestRequest(spec=spec, vector_key=chosen.entry.key, vector_path=str(chosen.entry.path))

    # ---- settings -----------------------------------------------------------------------------------------
    def read_settings(self) -> None:
        settings = self._ctx.settings
        self.coeff_range.read_settings(settings)
        metric = str(settings.value("sweep/metric", self.metric_box.currentText()))
        if metric in METRIC_TIPS:
            self.metric_box.setCurrentText(metric)
        self.targets.setText(str(settings.value("sweep/targets", self.targets.text())))
        self.targets.setCursorPosition(0)

    def write_settings(self) -> None:
        settings = self._ctx.settings
        self.coeff_range.write_settings(settings)
        settings.setValue("sweep/metric", self.metric_box.currentText())
        settings.setValue("sweep/targets", self.targets.text())


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    return row
