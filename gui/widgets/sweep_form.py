"""The Sweep tab's settings form: which vector, which coefficients and layers, what to measure, how to sample.

It owns its inputs and their rules (the metric and targets follow the chosen vector's pair; the layer range
follows the model's depth; only vectors that can steer the loaded model are offered), turns them into the
engine's specs (`SweepSpec` for a sweep, `SuggestSpec` for "Suggest settings") and keeps them in the
settings file under `sweep/...`.

Coefficients are normalised strengths by default ("× residual norm (n)": `s` adds `s` typical residual norms
at each swept layer, `engine.strength`), so one range suits the demo model and a real one; "raw c" is one
choice away. Until the user edits the range it follows the mode (`default_range`); mode ablate has no
strength and always sweeps raw c from 0 to 1.
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
from gui.panels.common import double_spin, int_spin
from gui.widgets.vector_choice import fill_with_fitting_vectors

METRIC_TIPS = {
    "target-words": "Share of sampled completions that contain one of the target words (the paper's topic metric)",
    "sentiment": "Share of sampled completions on p+'s side by VADER sentiment (chosen for sentiment pairs)",
    "target-prob": "Next-token probability of the targets' first tokens right after each prompt (no sampling)",
    "perplexity": "Perplexity of the reference text with the vector applied (lower: more fluent)",
}


# The units of the coefficient range: (combo text, settings value).
STRENGTH_UNITS, RAW_UNITS = "n", "raw"
UNIT_TEXTS = {STRENGTH_UNITS: "× residual norm (n)", RAW_UNITS: "raw c"}
# Ranges before any edit, per mode, as (first, last, count, units). Front injection replaces a position's
# residual and needs several residual norms to matter; a direction added at every position breaks text at
# about one norm (the CLI's DEFAULT_STRENGTH_TEXT); ablate's c is already a fraction of the direction.
DEFAULT_RANGES = {
    "front": (-16.0, 16.0, 5, STRENGTH_UNITS),
    "direction": (-1.0, 1.0, 5, STRENGTH_UNITS),
    "ablate": (0.0, 1.0, 3, RAW_UNITS),
}
# What settings files from before the units choice hold when nobody edited the range (raw c, -8 to 8).
OLD_RAW_DEFAULT = (-8.0, 8.0, 5)
STRENGTH_TIP = (
    "Normalised strengths: s adds s typical residual norms at each swept layer (the raw c differs by layer; "
    "each cell shows the c it used)"
)
RAW_TIP = "Raw coefficients c: the same multiplier of the vector at every layer"


def default_range(mode: str) -> tuple[float, float, int, str]:
    """(first, last, count, units) of the coefficient range for an effective mode."""
    return DEFAULT_RANGES[mode if mode in ("front", "ablate") else "direction"]


def linspace(first: float, last: float, count: int) -> list[float]:
    if count <= 1:
        return [first]
    step = (last - first) / (count - 1)
    return [round(first + i * step, 6) for i in range(count)]


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
        self.coeff_from = double_spin(-1e5, 1e5, "The smallest coefficient", decimals=3, value=-16.0)
        self.coeff_to = double_spin(-1e5, 1e5, "The largest coefficient", decimals=3, value=16.0)
        self.coeff_count = int_spin(1, 41, "How many evenly spaced coefficients, ends included", value=5)
        self.coeff_units = QComboBox()
        for units, text in UNIT_TEXTS.items():
            self.coeff_units.addItem(text, units)
        self.coeff_units.setItemData(0, STRENGTH_TIP, Qt.ItemDataRole.ToolTipRole)
        self.coeff_units.setItemData(1, RAW_TIP, Qt.ItemDataRole.ToolTipRole)
        self.coeff_units.setToolTip(STRENGTH_TIP)
        self._range_edited = False  # the user typed a range: it no longer follows the vector's mode
        self._user_units = STRENGTH_UNITS  # the user's units (mode ablate forces raw c while it lasts)
        self._setting_range = False  # the form itself is filling the range in
        for spin in (self.coeff_from, self.coeff_to, self.coeff_count):
            spin.valueChanged.connect(self._on_range_edited)
        self.coeff_units.currentIndexChanged.connect(self._on_units_chosen)
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
        self.mode.currentTextChanged.connect(lambda _: self._follow_mode())

        self._form = form = QFormLayout(self)
        form.addRow("Vector:", self.vector)
        form.addRow(
            "Coefficients:",
            _row(
                self.coeff_from, QLabel("to"), self.coeff_to, QLabel("×"), self.coeff_count, self.coeff_units
            ),
        )
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

        self._follow_mode()
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
        return str(self.coeff_units.currentData())

    def strengths(self) -> bool:
        return self.units() == STRENGTH_UNITS

    def set_units(self, units: str) -> None:
        """Choose the units as the user would (the range converts, or follows the mode if unedited)."""
        self.coeff_units.setCurrentIndex(self.coeff_units.findData(units))

    def _set_range(self, first: float, last: float, count: int, units: str | None = None) -> None:
        self._setting_range = True
        try:
            if units is not None:
                self.coeff_units.setCurrentIndex(self.coeff_units.findData(units))
                self.coeff_units.setToolTip(STRENGTH_TIP if units == STRENGTH_UNITS else RAW_TIP)
            self.coeff_from.setValue(first)
            self.coeff_to.setValue(last)
            self.coeff_count.setValue(count)
        finally:
            self._setting_range = False

    @Slot()
    def _on_range_edited(self) -> None:
        if not self._setting_range:
            self._range_edited = True

    @Slot(int)
    def _on_units_chosen(self, _index: int) -> None:
        if self._setting_range:
            return
        units = self.units()
        self.coeff_units.setToolTip(STRENGTH_TIP if units == STRENGTH_UNITS else RAW_TIP)
        self._user_units = units
        if not self._range_edited:
            self._follow_mode()
            return
        factor = self._raw_per_strength()  # keep the edited range, in the other units
        if factor is not None:
            scale = factor if units == RAW_UNITS else 1.0 / factor
            self._set_range(
                _round(self.coeff_from.value() * scale),
                _round(self.coeff_to.value() * scale),
                self.coeff_count.value(),
            )

    def _follow_mode(self) -> None:
        """The range follows the effective mode until the user edits it; ablate always takes raw c."""
        ablate = self.effective_mode() == "ablate"
        self.coeff_units.model().item(0).setEnabled(not ablate)  # ablate has no strength
        if ablate:
            if not self._range_edited or self.strengths():
                self._set_range(*DEFAULT_RANGES["ablate"])
            return
        if self._range_edited:
            if self.units() != self._user_units:  # back from ablate: the user's units again
                self._set_range(self.coeff_from.value(), self.coeff_to.value(), self.coeff_count.value(),
                                self._user_units)  # fmt: skip
            return
        first, last, count, _ = default_range(self.effective_mode())
        if self._user_units == RAW_UNITS:
            factor = self._raw_per_strength()
            first, last = (_round(first * factor), _round(last * factor)) if factor else OLD_RAW_DEFAULT[:2]
        self._set_range(first, last, count, self._user_units)

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
            coeffs=linspace(self.coeff_from.value(), self.coeff_to.value(), self.coeff_count.value()),
            strengths=self.strengths(),
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
        """The range and its units. A file from before the units choice (no `sweep/coeff_units`) held raw c:
        its untouched default (-8 to 8) becomes the strength default that follows the mode, while a range
        the user had changed stays as it was, in raw c."""
        settings = self._ctx.settings
        saved = (
            float(settings.value("sweep/coeff_from", OLD_RAW_DEFAULT[0])),
            float(settings.value("sweep/coeff_to", OLD_RAW_DEFAULT[1])),
            int(settings.value("sweep/coeff_count", OLD_RAW_DEFAULT[2])),
        )
        units = settings.value("sweep/coeff_units")
        if units is None:
            edited = settings.contains("sweep/coeff_from") and saved != OLD_RAW_DEFAULT
            units = RAW_UNITS if edited else STRENGTH_UNITS
        else:
            edited = _flag(settings.value("sweep/coeff_edited", False))
        self._user_units = units if units in UNIT_TEXTS else STRENGTH_UNITS
        self._range_edited = edited
        if edited:
            self._set_range(*saved, self._user_units)
        self._follow_mode()
        metric = str(settings.value("sweep/metric", self.metric_box.currentText()))
        if metric in METRIC_TIPS:
            self.metric_box.setCurrentText(metric)
        self.targets.setText(str(settings.value("sweep/targets", self.targets.text())))
        self.targets.setCursorPosition(0)

    def write_settings(self) -> None:
        settings = self._ctx.settings
        settings.setValue("sweep/coeff_from", self.coeff_from.value())
        settings.setValue("sweep/coeff_to", self.coeff_to.value())
        settings.setValue("sweep/coeff_count", self.coeff_count.value())
        settings.setValue("sweep/coeff_units", self._user_units)
        settings.setValue("sweep/coeff_edited", self._range_edited)
        settings.setValue("sweep/metric", self.metric_box.currentText())
        settings.setValue("sweep/targets", self.targets.text())


def _round(value: float) -> float:
    """Three significant digits: a converted range reads 12.3, not 12.34567."""
    return float(f"{value:.3g}")


def _flag(value: object) -> bool:
    """A boolean from the settings file (an ini file gives back "true" / "false")."""
    return value if isinstance(value, bool) else str(value).lower() in ("true", "1")


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    return row
