"""The Generate tab: a prompt, active vectors with live sliders, sampling, and side-by-side streaming panes.

Both panes come from ONE batched generation on the worker (row 0 unsteered, row 1 steered), so they
share the prompt pass, the seed and every sampling setting. Moving a slider while text streams sends the
value to the running `SteeringPlan` (from the next token on).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path

from PySide6.QtCore import QEvent, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QFont, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QSplitter,
    QTextEdit,
    QToolButton,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from engine.generation import SamplingConfig
from gui.context import AppContext
from gui.item_models import INCOMPATIBLE, OTHER_MODEL
from gui.panels.common import bare_column, double_spin, fill_with_splitter
from gui.transcript import Transcript, model_record
from gui.worker import ActiveVector, GenerateRequest

MODES = ("front", "all", "generated", "ablate")
MODE_TIPS = {
    "front": "ActAdd: add c·vector at the first prompt positions only (the paper); live changes can't act on it",
    "all": "Add c·direction at every position, prompt and generated (CAA / repeng style)",
    "generated": "Add c·direction only at generated positions",
    "ablate": "Remove the component along the direction (c = 1: fully)",
}
KL_FULL = 2.0  # nats of KL that get the full highlight colour
MAX_ALPHA = 150  # the strongest highlight, still easy to read on
SLIDER_STEPS = 10  # slider ticks per unit of coefficient
LIVE_NOTE = (
    "Live steering: move a slider or toggle a vector while text streams and the steered pane changes "
    "from the next token. Front mode acts on the prompt only, so live changes don't affect front vectors."
)


class TokenPane(QTextEdit):
    """A read-only pane that streams text; tokens may carry a highlight and a tooltip.

    Qt lays out a whole paragraph again after each insert, so one insert costs O(paragraph): ~8 ms for a
    4000-token paragraph on the benchmarks' Xeon core. Tokens are therefore queued and inserted once per
    pass of the event loop, in one edit block (one layout). When tokens come faster than the GUI lays
    them out, more of them share each layout instead of piling up behind it.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setAcceptRichText(False)
        font = QFont("DejaVu Sans Mono")
        font.setStyleHint(QFont.StyleHint.Monospace)
        self.setFont(font)
        self._generated: list[str] = []
        self._pending: list[tuple[str, QTextCharFormat]] = []
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(0)  # the next pass of the event loop, after the queued tokens
        self._flush_timer.timeout.connect(self.flush)

    def clear_text(self, prompt: str = "") -> None:
        self._pending.clear()
        self._flush_timer.stop()
        self.clear()
        self._generated = []
        if prompt:
            fmt = QTextCharFormat()
            fmt.setForeground(QColor("#808080"))
            self._queue(prompt, fmt)
            self.flush()

    def generated_text(self) -> str:
        return "".join(self._generated)

    def _queue(self, text: str, fmt: QTextCharFormat) -> None:
        self._pending.append((text, fmt))
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    @Slot()
    def flush(self) -> None:
        """Insert every queued piece of text now, as one edit (one layout of the paragraph)."""
        self._flush_timer.stop()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.beginEditBlock()
        for text, fmt in pending:
            cursor.insertText(text, fmt)
        cursor.endEditBlock()
        self.setTextCursor(cursor)
        self.ensureCursorVisible()

    def append_token(self, text: str, kl: float | None = None, top: list | None = None) -> None:
        if not text:
            return
        self._generated.append(text)
        fmt = QTextCharFormat()
        if kl is not None:
            alpha = int(MAX_ALPHA * min(1.0, max(0.0, kl) / KL_FULL))
            if alpha:
                fmt.setBackground(QColor(255, 140, 0, alpha))
            alternatives = ", ".join(f"{tok!r} {p:.0%}" for tok, p in (top or [])[:5])
            fmt.setToolTip(
                f"KL {kl:.3f} nats from the unsteered model on this same text\n"
                f"without steering, this would likely be: {alternatives}"
            )
        self._queue(text, fmt)

    def append_marker(self, text: str) -> None:
        fmt = QTextCharFormat()
        fmt.setForeground(QColor("#1f5fbf"))
        fmt.setFontWeight(QFont.Weight.Bold)
        fmt.setToolTip("a live coefficient change took effect here")
        self._queue(text, fmt)

    def viewportEvent(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            cursor = self.cursorForPosition(event.pos())
            if not cursor.atEnd():
                cursor.movePosition(QTextCursor.MoveOperation.NextCharacter)
            tip = cursor.charFormat().toolTip()
            if tip:
                QToolTip.showText(event.globalPos(), tip, self)
            else:
                QToolTip.hideText()
            return True
        return super().viewportEvent(event)


class VectorRow(QFrame):
    """One active vector: enable box, coefficient slider + field, layer and mode."""

    coefficient_changed = Signal()  # the effective coefficient (value, or 0 when disabled) changed
    remove_requested = Signal()

    def __init__(self, entry, depth: int, other_model: str = "", parent=None):
        super().__init__(parent)
        self.entry = entry
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.enabled = QCheckBox(entry.key)
        self.enabled.setChecked(True)
        self.enabled.setToolTip("Include this vector in the steered pane (toggling works live)")
        if other_model:
            self.enabled.setText(f"{entry.key} ⚠")
            self.enabled.setToolTip(other_model)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setToolTip("Coefficient c: how strongly the vector is added (negative: the opposite way)")
        self.spin = double_spin(-1000.0, 1000.0, "Coefficient c, typed exactly", decimals=1, step=0.5)
        limit = max(10.0, 3.0 * abs(entry.default_coeff))
        self.slider.setRange(int(-limit * SLIDER_STEPS), int(limit * SLIDER_STEPS))
        self.layer = QSpinBox()
        self.layer.setToolTip("The layer the vector is added at (a single-layer vector can be moved)")
        if len(entry.layers) == 1:
            self.layer.setRange(0, max(0, depth - 1))
            self.layer.setValue(entry.layers[0])
        else:
            self.layer.setEnabled(False)
            self.layer.setSpecialValueText(f"{entry.layers[0]}–{entry.layers[-1]}")
            self.layer.setToolTip("A multi-layer vector acts at all of its layers")
        self.mode = QComboBox()
        for mode in MODES:
            self.mode.addItem(mode)
            self.mode.setItemData(self.mode.count() - 1, MODE_TIPS[mode], Qt.ItemDataRole.ToolTipRole)
        if not entry.is_positional:  # a [hidden] direction has no positions to put at the front
            self.mode.model().item(0).setEnabled(False)
        self.mode.setCurrentText(entry.default_mode)
        self.mode.setToolTip(MODE_TIPS[entry.default_mode])
        self.mode.currentTextChanged.connect(lambda m: self.mode.setToolTip(MODE_TIPS[m]))
        remove = QToolButton()
        remove.setText("✕")
        remove.setToolTip("Remove from the active vectors")
        remove.clicked.connect(self.remove_requested)

        self.slider.valueChanged.connect(self._slider_moved)
        self.spin.valueChanged.connect(self._spin_changed)
        self.enabled.toggled.connect(lambda _: self.coefficient_changed.emit())
        self.set_coefficient(entry.default_coeff)

        top = QHBoxLayout()
        top.addWidget(self.enabled, 1)
        top.addWidget(QLabel("layer"))
        top.addWidget(self.layer)
        top.addWidget(self.mode)
        top.addWidget(remove)
        bottom = QHBoxLayout()
        bottom.addWidget(QLabel("c"))
        bottom.addWidget(self.slider, 1)
        bottom.addWidget(self.spin)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addLayout(bottom)

    def coefficient(self) -> float:
        return self.spin.value()

    def effective_coefficient(self) -> float:
        return self.spin.value() if self.enabled.isChecked() else 0.0

    def set_coefficient(self, value: float) -> None:
        self.spin.setValue(value)

    @Slot(int)
    def _slider_moved(self, position: int) -> None:
        value = position / SLIDER_STEPS
        if abs(value - self.spin.value()) > 1e-9:
            self.spin.setValue(value)

    @Slot(float)
    def _spin_changed(self, value: float) -> None:
        position = round(value * SLIDER_STEPS)
        if position > self.slider.maximum() or position < self.slider.minimum():
            limit = abs(position)
            self.slider.setRange(-limit, limit)
        self.slider.blockSignals(True)
        self.slider.setValue(position)
        self.slider.blockSignals(False)
        self.coefficient_changed.emit()

    def set_streaming(self, streaming: bool) -> None:
        """Mode and layer shape the steering plan: they can't change while it runs."""
        self.mode.setEnabled(not streaming)
        self.layer.setEnabled(not streaming and len(self.entry.layers) == 1)

    def active_vector(self) -> ActiveVector:
        at_layer = None
        if len(self.entry.layers) == 1 and self.layer.value() != self.entry.layers[0]:
            at_layer = self.layer.value()
        return ActiveVector(
            path=str(self.entry.path),
            name=self.entry.key,
            coeff=self.coefficient(),
            mode=self.mode.currentText(),
            at_layer=at_layer,
            enabled=self.enabled.isChecked(),
        )


class GeneratePanel(QWidget):
    def __init__(self, context: AppContext, parent=None):
        super().__init__(parent)
        self._ctx = context
        self._controller = context.controller
        self._generating = False
        self._request: GenerateRequest | None = None
        self._vector_meta: list[dict] = []
        self._last_seed: int | None = None
        self.transcript: Transcript | None = None
        self._started_at = 0.0
        self._steps = 0
        self._rows: list[VectorRow] = []

        # ---- prompt --------------------------------------------------------------------------------------
        # (not the paper's "I went up to my friend and said": the demo model, the default, ends "said" with
        # "his vows", so the unsteered pane would already talk about weddings)
        self.prompt = QPlainTextEdit("Yesterday we went to the market")
        self.prompt.setToolTip("The prompt both panes continue (Ctrl+Enter generates)")
        self.prompt.setMaximumHeight(90)
        self.chat = QCheckBox("Use the chat template")
        self.chat.setToolTip(
            "Wrap the prompt as a user turn with the model's chat template (when it has one)"
        )
        self.chat.setEnabled(False)
        prompt_box = QGroupBox("Prompt")
        prompt_layout = QVBoxLayout(prompt_box)
        prompt_layout.addWidget(self.prompt)
        prompt_layout.addWidget(self.chat)

        # ---- vectors -------------------------------------------------------------------------------------
        self._add_combo = QComboBox()
        self._add_combo.setToolTip("Vectors in the library that fit the loaded model")
        self._add_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self._add_combo.setMinimumContentsLength(16)
        self._add_button = QPushButton("Add")
        self._add_button.setToolTip("Add the chosen vector to the steered pane")
        self._add_button.clicked.connect(self._add_selected)
        self._rows_host = QWidget()
        self._rows_layout = QVBoxLayout(self._rows_host)
        self._rows_layout.setContentsMargins(0, 0, 0, 0)
        self._rows_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self._rows_host)
        scroll.setMinimumHeight(120)
        self._empty_note = QLabel(
            "No active vectors: both panes will be unsteered. Capture one or add one from the library."
        )
        self._empty_note.setWordWrap(True)
        live_note = QLabel(LIVE_NOTE)
        live_note.setWordWrap(True)
        live_note.setStyleSheet("color: #555; font-size: 11px;")
        vectors_box = QGroupBox("Steering vectors (steered pane)")
        vectors_layout = QVBoxLayout(vectors_box)
        add_row = QHBoxLayout()
        add_row.addWidget(self._add_combo, 1)
        add_row.addWidget(self._add_button)
        vectors_layout.addLayout(add_row)
        vectors_layout.addWidget(self._empty_note)
        vectors_layout.addWidget(scroll, 1)
        vectors_layout.addWidget(live_note)

        # ---- sampling ------------------------------------------------------------------------------------
        self.temperature = double_spin(
            0.0, 5.0, "Softmax temperature; 0 picks the most likely token", step=0.05
        )
        self.top_p = double_spin(
            0.01, 1.0, "Nucleus sampling: keep the smallest set with this mass", step=0.05
        )
        self.top_k = QSpinBox()
        self.top_k.setRange(0, 100000)
        self.top_k.setToolTip("Keep only the k most likely tokens (0: off)")
        self.repetition_penalty = double_spin(
            0.01, 5.0, "Multiplicative penalty on repeated tokens (1: off)", step=0.05
        )
        self.frequency_penalty = double_spin(
            0.0, 5.0, "Subtract this × the count of each generated token", step=0.1
        )
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 8192)
        self.max_tokens.setToolTip("How many tokens to generate per pane")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Random seed: the same seed and settings give the same text")
        self.random_seed = QCheckBox("new seed each run")
        self.random_seed.setToolTip("Pick a fresh seed for every Generate (Regenerate reuses the last one)")
        paper = QPushButton("Paper defaults")
        paper.setToolTip("The ActAdd paper's sampling: temperature 1.0, top-p 0.3, frequency penalty 1.0")
        paper.clicked.connect(self.apply_paper_defaults)
        sampling_box = QGroupBox("Sampling")
        sampling_form = QFormLayout(sampling_box)
        sampling_form.addRow("Temperature:", self.temperature)
        sampling_form.addRow("Top-p:", self.top_p)
        sampling_form.addRow("Top-k:", self.top_k)
        sampling_form.addRow("Repetition penalty:", self.repetition_penalty)
        sampling_form.addRow("Frequency penalty:", self.frequency_penalty)
        sampling_form.addRow("Max tokens:", self.max_tokens)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.random_seed)
        sampling_form.addRow("Seed:", seed_row)
        sampling_form.addRow(paper)
        self.apply_paper_defaults()
        self.max_tokens.setValue(48)

        left, left_layout = bare_column()
        left_layout.addWidget(prompt_box)
        left_layout.addWidget(vectors_box, 1)
        left_layout.addWidget(sampling_box)

        # ---- output ---------------------------------------------------------------------------------------
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Generate both panes in one batch (Ctrl+Enter)")
        self.generate_button.clicked.connect(self.generate)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop before the next token (Esc)")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        self.regenerate_button = QPushButton("Regenerate (same seed)")
        self.regenerate_button.setToolTip("Run again with the last seed and the current settings")
        self.regenerate_button.clicked.connect(self.regenerate)
        self.regenerate_button.setEnabled(False)
        self.effect = QCheckBox("Show the effect")
        self.effect.setToolTip(
            "Colour each steered token by KL(steered || unsteered) on the same text (one extra row); "
            "hover for the unsteered model's alternatives"
        )
        self.speed = QLabel("")
        self.speed.setToolTip("Generated tokens per second, both panes together")
        buttons = QHBoxLayout()
        for widget in (self.generate_button, self.stop_button, self.regenerate_button, self.effect):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        buttons.addWidget(self.speed)

        self.unsteered = TokenPane()
        self.steered = TokenPane()
        self.unsteered.setToolTip("Row 0 of the batch: no steering")
        self._panes = (self.unsteered, self.steered)
        panes = QSplitter()
        for title, pane in (("Unsteered", self.unsteered), ("Steered", self.steered)):
            box, box_layout = bare_column()
            label = QLabel(f"<b>{title}</b>")
            box_layout.addWidget(label)
            box_layout.addWidget(pane, 1)
            panes.addWidget(box)
        self._legend = QLabel(
            "Orange: how far steering moved the distribution this token was drawn from (KL from the "
            f"unsteered model reading the same text; full colour at {KL_FULL:g} nats). Hover a token for "
            "what the unsteered model would likely have written there. Blue ⟨c=…⟩: a live change."
        )
        self._legend.setWordWrap(True)
        self._legend.setStyleSheet("color: #555; font-size: 11px;")
        self.save_button = QPushButton("Save transcript…")
        self.save_button.setToolTip("Markdown or JSON with every setting needed to reproduce it")
        self.save_button.clicked.connect(self._choose_transcript_file)
        self.save_button.setEnabled(False)
        self.script_button = QPushButton("Export Python script…")
        self.script_button.setToolTip("A short script using the engine API that reproduces this generation")
        self.script_button.clicked.connect(self._choose_script_file)
        self.script_button.setEnabled(False)
        exports = QHBoxLayout()
        exports.addWidget(self._legend, 1)
        exports.addWidget(self.save_button)
        exports.addWidget(self.script_button)

        right, right_layout = bare_column()
        right_layout.addLayout(buttons)
        right_layout.addWidget(panes, 1)
        right_layout.addLayout(exports)

        fill_with_splitter(self, left, right, stretch=(2, 5), sizes=[380, 900])

        self._controller.token.connect(self._on_token)
        self._controller.generation_done.connect(self._on_done)
        self._controller.coefficient_applied.connect(self._on_coefficient_applied)
        self._controller.errored.connect(self._on_errored)
        self._controller.finished.connect(self._on_finished)
        context.model_changed.connect(self._on_model_changed)
        context.library_changed.connect(self._refresh_choices)
        context.use_vector.connect(self.add_vector)
        self._on_model_changed(context.model)
        self.read_settings()

    # ---- sampling -------------------------------------------------------------------------------------
    @Slot()
    def apply_paper_defaults(self) -> None:
        paper = SamplingConfig.paper()
        self.set_sampling(paper, keep_length=True)

    def set_sampling(self, sampling: SamplingConfig, keep_length: bool = False) -> None:
        self.temperature.setValue(sampling.temperature)
        self.top_p.setValue(sampling.top_p)
        self.top_k.setValue(sampling.top_k)
        self.repetition_penalty.setValue(sampling.repetition_penalty)
        self.frequency_penalty.setValue(sampling.frequency_penalty)
        if not keep_length:
            self.max_tokens.setValue(sampling.max_new_tokens)
        if sampling.seed is not None:
            self.seed.setValue(sampling.seed)

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            temperature=self.temperature.value(),
            top_p=self.top_p.value(),
            top_k=self.top_k.value(),
            repetition_penalty=self.repetition_penalty.value(),
            frequency_penalty=self.frequency_penalty.value(),
            max_new_tokens=self.max_tokens.value(),
            seed=self.seed.value(),
        )

    # ---- vectors ----------------------------------------------------------------------------------------
    @Slot()
    def _refresh_choices(self) -> None:
        current = self._add_combo.currentData()
        self._add_combo.clear()
        for entry in self._ctx.listing.entries:
            fit = self._ctx.fit(entry)
            if fit.status == INCOMPATIBLE:
                continue
            label = entry.key + ("  (other model)" if fit.status == OTHER_MODEL else "")
            self._add_combo.addItem(label, entry.key)
            self._add_combo.setItemData(self._add_combo.count() - 1, fit.reason, Qt.ItemDataRole.ToolTipRole)
        if current is not None and (index := self._add_combo.findData(current)) >= 0:
            self._add_combo.setCurrentIndex(index)
        self._add_button.setEnabled(self._add_combo.count() > 0 and not self._generating)

    @Slot()
    def _add_selected(self) -> None:
        entry = self._ctx.entry(self._add_combo.currentData() or "")
        if entry is not None:
            self.add_vector(entry)

    @Slot(object)
    def add_vector(self, entry) -> VectorRow:
        fit = self._ctx.fit(entry)
        depth = self._ctx.model.info.n_layers if self._ctx.model is not None else max(entry.layers) + 1
        row = VectorRow(entry, depth, fit.reason if fit.status == OTHER_MODEL else "")
        row.coefficient_changed.connect(self._on_row_coefficient)
        row.remove_requested.connect(lambda: self.remove_vector(row))
        row.set_streaming(self._generating)
        self._rows.append(row)
        self._rows_layout.insertWidget(self._rows_layout.count() - 1, row)
        self._empty_note.setVisible(False)
        return row

    def remove_vector(self, row: VectorRow) -> None:
        if self._generating:
            self._ctx.show_status("Stop the generation before removing a vector (set c to 0 to mute it live)")
            return
        self._rows.remove(row)
        row.setParent(None)
        row.deleteLater()
        self._empty_note.setVisible(not self._rows)

    def vector_rows(self) -> list[VectorRow]:
        return list(self._rows)

    @Slot()
    def _on_row_coefficient(self) -> None:
        if not self._generating:
            return
        row = self.sender()
        if isinstance(row, VectorRow) and row in self._rows:
            self._controller.set_live_coefficient(self._rows.index(row), row.effective_coefficient())

    # ---- generation ---------------------------------------------------------------------------------------
    def request(self) -> GenerateRequest:
        return GenerateRequest(
            prompt=self.prompt.toPlainText(),
            vectors=[row.active_vector() for row in self._rows],
            sampling=self.sampling(),
            chat=self.chat.isChecked() and self.chat.isEnabled(),
            effect=self.effect.isChecked(),
        )

    @Slot()
    def generate(self) -> None:
        if self._generating:
            return
        if self._ctx.model is None:
            self._ctx.report_error(
                "Nothing to generate with", "No model is loaded; load one in the Model tab."
            )
            return
        if self.random_seed.isChecked():
            self.seed.setValue(random.randrange(2**31 - 1))
        self._start(self.request())

    @Slot()
    def regenerate(self) -> None:
        if self._last_seed is not None:
            self.seed.setValue(self._last_seed)
        if not self._generating and self._ctx.model is not None:
            self._start(self.request())

    def _start(self, request: GenerateRequest) -> None:
        self._request = request
        self._vector_meta = [
            {"method": row.entry.method, "layers": list(row.entry.layers), "key": row.entry.key}
            for row in self._rows
        ]
        self._last_seed = request.sampling.seed
        self.transcript = None
        self._set_generating(True)
        self.unsteered.clear_text(request.prompt)
        self.steered.clear_text(request.prompt)
        self._steps = 0
        self._started_at = time.perf_counter()
        self.speed.setText("starting…")
        self._ctx.show_status("Generating…")
        self._controller.generate(request)

    @Slot()
    def stop(self) -> None:
        if self._generating:
            self._controller.stop()

    def is_generating(self) -> bool:
        return self._generating

    def _set_generating(self, on: bool) -> None:
        self._generating = on
        self.generate_button.setEnabled(not on)
        self.regenerate_button.setEnabled(not on and self._last_seed is not None)
        self.stop_button.setEnabled(on)
        self._add_button.setEnabled(not on and self._add_combo.count() > 0)
        self.effect.setEnabled(not on)
        for row in self._rows:
            row.set_streaming(on)

    @Slot(object)
    def _on_token(self, delta) -> None:
        if not self._generating or delta.row > 1:
            return
        show_effect = self._request is not None and self._request.effect and delta.row == 1
        self._panes[delta.row].append_token(delta.text, delta.kl if show_effect else None, delta.top)
        if delta.step + 1 > self._steps:
            self._steps = delta.step + 1
            elapsed = time.perf_counter() - self._started_at
            if elapsed > 0 and self._steps % 4 == 0:
                self.speed.setText(f"{2 * self._steps / elapsed:.1f} tokens/s")

    @Slot(object)
    def _on_coefficient_applied(self, change) -> None:
        if self._generating:
            self.steered.append_marker(f"⟨c{change.index}={change.value:g}⟩")

    @Slot(object)
    def _on_done(self, outcome) -> None:
        request = self._request
        if request is None or self._ctx.model is None:
            return
        self.speed.setText(
            f"{outcome.tokens_per_second:.1f} tokens/s · {sum(outcome.n_tokens)} tokens in {outcome.seconds:.2f} s"
            + (" · stopped" if outcome.cancelled else "")
        )
        vectors = []
        for active, meta in zip(request.vectors, self._vector_meta, strict=False):
            vectors.append({**asdict(active), **meta})
        self.transcript = Transcript(
            prompt=request.prompt,
            chat=request.chat,
            model=model_record(self._ctx.model.info, self._ctx.model.fingerprint),
            sampling=asdict(request.sampling),
            vectors=vectors,
            outputs={
                "unsteered": outcome.texts[0],
                "steered": outcome.texts[1],
                "finish_reasons": outcome.finish_reasons,
                "n_tokens": outcome.n_tokens,
            },
            live_changes=[asdict(c) for c in outcome.live_changes],
            effect=request.effect,
            seconds=outcome.seconds,
            tokens_per_second=outcome.tokens_per_second,
            cancelled=outcome.cancelled,
        )

    @Slot(str, str)
    def _on_errored(self, kind: str, message: str) -> None:
        if kind == "generate":
            self._ctx.report_error("Generation failed", message)

    @Slot(str)
    def _on_finished(self, kind: str) -> None:
        if kind == "generate" and self._generating:
            for pane in self._panes:
                pane.flush()  # the last tokens, before anything reads the panes
            self._set_generating(False)
            self.save_button.setEnabled(self.transcript is not None)
            self.script_button.setEnabled(self.transcript is not None)
            self._ctx.show_status(
                "Generation stopped" if self.transcript and self.transcript.cancelled else "Done"
            )

    @Slot(object)
    def _on_model_changed(self, handle) -> None:
        has_chat = handle is not None and handle.info.has_chat_template
        self.chat.setEnabled(has_chat)
        self.chat.setToolTip(
            "Wrap the prompt as a user turn with the model's chat template"
            if has_chat
            else "This model's tokenizer has no chat template"
        )
        self.generate_button.setEnabled(handle is not None and not self._generating)
        depth = handle.info.n_layers if handle is not None else 0
        for row in list(self._rows):
            if handle is not None and (
                max(row.entry.layers) >= depth or row.entry.hidden_size != handle.info.hidden_size
            ):
                self.remove_vector(row)  # no longer fits: it can't be used on this model
            elif len(row.entry.layers) == 1 and depth:
                row.layer.setRange(0, depth - 1)
        self._refresh_choices()

    # ---- files -----------------------------------------------------------------------------------------
    @Slot()
    def _choose_transcript_file(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save transcript", str(Path.home() / "transcript.md"), "Markdown (*.md);;JSON (*.json)"
        )
        if path:
            self.save_transcript(path)

    def save_transcript(self, path: str | Path) -> None:
        transcript = self.transcript
        if transcript is None:
            return
        self._ctx.tasks.submit(
            lambda: transcript.save(path),
            lambda saved: self._ctx.show_status(f"Saved the transcript to {saved}"),
            lambda message: self._ctx.report_error("Save transcript", message),
        )

    @Slot()
    def _choose_script_file(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export as Python script", str(Path.home() / "reproduce_generation.py"), "Python (*.py)"
        )
        if path:
            self.export_script(path)

    def export_script(self, path: str | Path) -> None:
        transcript = self.transcript
        if transcript is None:
            return
        text = transcript.to_script()
        self._ctx.tasks.submit(
            lambda: Path(path).write_text(text, encoding="utf-8"),
            lambda _: self._ctx.show_status(f"Wrote {path}"),
            lambda message: self._ctx.report_error("Export script", message),
        )

    # ---- settings ---------------------------------------------------------------------------------------
    def read_settings(self) -> None:
        settings = self._ctx.settings
        self.prompt.setPlainText(str(settings.value("generate/prompt", self.prompt.toPlainText())))
        raw = settings.value("generate/sampling", "")
        if raw:
            try:
                values = {
                    k: v for k, v in json.loads(str(raw)).items() if k in SamplingConfig.__dataclass_fields__
                }
                self.set_sampling(SamplingConfig(**{**asdict(SamplingConfig.paper()), **values}))
            except (ValueError, TypeError):
                pass
        self.random_seed.setChecked(settings.value("generate/random_seed", False, type=bool))
        self.effect.setChecked(settings.value("generate/effect", False, type=bool))
        self.chat.setChecked(settings.value("generate/chat", False, type=bool))

    def write_settings(self) -> None:
        settings = self._ctx.settings
        settings.setValue("generate/prompt", self.prompt.toPlainText())
        settings.setValue("generate/sampling", json.dumps(asdict(self.sampling())))
        settings.setValue("generate/random_seed", self.random_seed.isChecked())
        settings.setValue("generate/effect", self.effect.isChecked())
        settings.setValue("generate/chat", self.chat.isChecked())


__all__ = ["GeneratePanel", "TokenPane", "VectorRow"]
