"""The Generate tab: a prompt, active vectors with live sliders, sampling, and side-by-side streaming panes.

Both panes come from ONE batched generation on the worker (row 0 unsteered, row 1 steered), so they
share the prompt pass, the seed and every sampling setting. Moving a slider while text streams sends the
value to the running `SteeringPlan` (from the next token on).

Over 400 lines because it owns a generation's whole life cycle (request, job, panes, transcript, exports);
its widgets are in gui/widgets (token_pane.py, vector_row.py, sampling_form.py).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import asdict
from pathlib import Path

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from engine.generation import GenerationResult, SamplingConfig, TokenEvent
from engine.library import VectorEntry
from engine.transcript import Transcript, model_record
from gui.context import AppContext, SteeringChoice
from gui.item_models import INCOMPATIBLE, OTHER_MODEL
from gui.jobs import GenerateRequest, Job, LiveChange
from gui.panels.common import bare_column, fill_with_splitter
from gui.widgets.sampling_form import SamplingForm
from gui.widgets.token_pane import KL_FULL, TokenPane
from gui.widgets.vector_row import VectorRow, strength_scales

LIVE_NOTE = (
    "Live steering: move a slider or toggle a vector while text streams and the steered pane changes "
    "from the next token. Front mode acts on the prompt only, so live changes don't affect front vectors."
)


class GeneratePanel(QWidget):
    def __init__(self, context: AppContext, parent=None):
        super().__init__(parent)
        self._ctx = context
        self._controller = context.controller
        self._generating = False
        self._request: GenerateRequest | None = None
        self._job: Job | None = None
        self._last_seed: int | None = None
        self.transcript: Transcript | None = None
        self._started_at = 0.0
        self._tokens = 0  # tokens shown so far, all panes together
        self._rows: list[VectorRow] = []
        self._saved_vectors: list = []  # active vectors saved at the last close, restored once listed
        self._failed = False  # the running generation reported an error
        # rows removed because their vector was deleted, by trash id: restoring it re-adds them
        self._deleted_rows: dict[str, list[tuple[VectorEntry, dict]]] = {}

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
        self.raw_scale = QCheckBox("raw c")
        self.raw_scale.setToolTip(
            "Sliders show the raw coefficient c instead of the normalised strength s (the fraction of the "
            "typical residual norm at the vector's layer; the default once the model's norms are measured)"
        )
        self.raw_scale.toggled.connect(self._on_raw_scale)
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
        add_row.addWidget(self.raw_scale)
        vectors_layout.addLayout(add_row)
        vectors_layout.addWidget(self._empty_note)
        vectors_layout.addWidget(scroll, 1)
        vectors_layout.addWidget(live_note)

        # ---- sampling ------------------------------------------------------------------------------------
        self.sampling_form = SamplingForm()
        form = sampling_box = self.sampling_form
        self.temperature, self.top_p, self.top_k = form.temperature, form.top_p, form.top_k
        self.repetition_penalty, self.frequency_penalty = form.repetition_penalty, form.frequency_penalty
        self.max_tokens, self.seed, self.random_seed = form.max_tokens, form.seed, form.random_seed

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
            "what the unsteered model would likely have written there. Blue ⟨vector → value⟩: a live change took effect there."
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

        self.warnings_label = QLabel("")
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setStyleSheet("color: #a35a00;")
        self.warnings_label.setVisible(False)

        right, right_layout = bare_column()
        right_layout.addLayout(buttons)
        right_layout.addWidget(self.warnings_label)
        right_layout.addWidget(panes, 1)
        right_layout.addLayout(exports)

        fill_with_splitter(self, left, right, stretch=(2, 5), sizes=[380, 900])

        context.model_changed.connect(self._on_model_changed)
        context.library_changed.connect(self._refresh_choices)
        context.use_vector.connect(self.add_vector)
        context.residual_norms_changed.connect(lambda _: self._load_scales(self._rows))
        context.apply_steering.connect(self.apply_choice)
        context.vector_moved.connect(self._on_vector_moved)
        context.vector_deleted.connect(self._on_vector_deleted)
        context.vector_restored.connect(self._on_vector_restored)
        self._on_model_changed(context.model)
        self.read_settings()

    # ---- sampling -------------------------------------------------------------------------------------
    @Slot()
    def apply_paper_defaults(self) -> None:
        self.sampling_form.apply_paper_defaults()

    def set_sampling(self, sampling: SamplingConfig, keep_length: bool = False) -> None:
        self.sampling_form.set_sampling(sampling, keep_length)

    def sampling(self) -> SamplingConfig:
        return self.sampling_form.sampling()

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
        row.set_raw(self.raw_scale.isChecked())
        self._rows.append(row)
        self._rows_layout.insertWidget(self._rows_layout.count() - 1, row)
        self._empty_note.setVisible(False)
        self._load_scales([row])
        return row

    @Slot(object)
    def apply_choice(self, choice: SteeringChoice) -> VectorRow | None:
        """Take over a setting chosen elsewhere (a sweep cell): that vector alone, at its layer, c and mode."""
        entry = self._ctx.entry(choice.vector_key)
        if self._generating:
            self._ctx.show_status("Stop the generation before applying a sweep cell")
            return None
        if entry is None:
            self._ctx.show_status(f"{choice.vector_key} is no longer in the library")
            return None
        for old in list(self._rows):
            self.remove_vector(old, force=True)
        row = self.add_vector(entry)
        state = row.state()
        if choice.mode is not None:
            state["mode"] = choice.mode
        if choice.layer is not None:
            state["layer"] = choice.layer
        state["coeff"] = choice.coeff
        row.restore_state(state)
        if not choice.exact:
            self._ctx.show_status(
                f"{choice.vector_key} moved to layer {choice.layer}: the sweep re-captured it there, so the "
                "text can differ from the sweep's cell"
            )
        return row

    def _load_scales(self, rows: list[VectorRow]) -> None:
        """Give rows their strength scales for the loaded model's residual norms (read off the GUI thread)."""
        norms = self._ctx.residual_norms
        depth = self._ctx.model.info.n_layers if self._ctx.model is not None else 0
        for row in list(rows):
            if norms is None or not depth:
                row.set_scales({})
                continue
            path = Path(row.entry.path)

            def work(path: Path = path) -> dict:
                from engine.vector import load_vector

                return strength_scales(load_vector(path), norms, depth)

            def done(scales: object, row: VectorRow = row) -> None:
                if row in self._rows and self._ctx.residual_norms is norms and isinstance(scales, dict):
                    row.set_scales(scales)

            self._ctx.tasks.submit(work, done, lambda message: None)  # no scale: the row shows c

    @Slot(bool)
    def _on_raw_scale(self, raw: bool) -> None:
        for row in self._rows:
            row.set_raw(raw)

    def remove_vector(self, row: VectorRow, force: bool = False) -> None:
        """Remove a row; while text streams only when `force`d (its vector was deleted: the running
        generation keeps its copy, and the row can no longer steer it live)."""
        if self._generating and not force:
            self._ctx.show_status("Stop the generation before removing a vector (set c to 0 to mute it live)")
            return
        self._rows.remove(row)
        row.setParent(None)
        row.deleteLater()
        self._empty_note.setVisible(not self._rows)

    def vector_rows(self) -> list[VectorRow]:
        return list(self._rows)

    # ---- following the library ----------------------------------------------------------------------------
    @Slot(str, str, str)
    def _on_vector_moved(self, old_key: str, new_key: str, new_path: str) -> None:
        """A renamed or moved vector: its rows follow, so the next generation reads the new file."""
        collection, _, name = new_key.rpartition("/")
        for row in self._rows:
            if row.entry.key == old_key:
                row.set_entry(
                    dataclasses.replace(row.entry, name=name, collection=collection, path=Path(new_path))
                )
        for removed in self._deleted_rows.values():
            for i, (entry, state) in enumerate(removed):
                if entry.key == old_key:
                    removed[i] = (
                        dataclasses.replace(entry, name=name, collection=collection, path=Path(new_path)),
                        state,
                    )

    @Slot(str, str)
    def _on_vector_deleted(self, key: str, trash_id: str) -> None:
        """A deleted vector leaves the active vectors; undoing the delete brings its rows back."""
        rows = [row for row in self._rows if row.entry.key == key]
        if not rows:
            return
        self._deleted_rows[trash_id] = [(row.entry, row.state()) for row in rows]
        for row in rows:
            self.remove_vector(row, force=True)
        self._ctx.show_status(
            f"Removed the deleted vector {key} from Generate (Undo in the Library restores it)"
        )

    @Slot(str, str)
    def _on_vector_restored(self, trash_id: str, path: str) -> None:
        removed = self._deleted_rows.pop(trash_id, None)
        if not removed:
            return
        restored = Path(path)
        root = Path(self._ctx.library.root).resolve()
        collection = "" if restored.parent.resolve() == root else restored.parent.name
        for entry, state in removed:
            row = self.add_vector(
                dataclasses.replace(entry, name=restored.stem, collection=collection, path=restored)
            )
            row.restore_state(state)

    @Slot(int, float)
    def _on_row_coefficient(self, vector_id: int, value: float) -> None:
        if self._job is not None:  # from the next token of the running generation
            self._job.set_coefficient(vector_id, value)

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
        if not self._files_present():
            return
        if self.random_seed.isChecked():
            self.seed.setValue(random.randrange(2**31 - 1))
        self._start(self.request())

    def _files_present(self) -> bool:
        """Refuse to start (keeping the panes) when an active vector's file is gone."""
        missing = [row.entry.key for row in self._rows if not Path(row.entry.path).is_file()]
        if missing:
            self._ctx.report_error(
                "A vector's file is missing",
                f"{', '.join(missing)}: the file is gone (moved or deleted outside the app?). Remove it from "
                "the active vectors, or refresh the library and add it again.",
            )
        return not missing

    @Slot()
    def regenerate(self) -> None:
        if self._last_seed is not None:
            self.seed.setValue(self._last_seed)
        if not self._generating and self._ctx.model is not None and self._files_present():
            self._start(self.request())

    def _start(self, request: GenerateRequest) -> None:
        self._request = request
        self._last_seed = request.sampling.seed
        self.transcript = None
        self._failed = False
        self._live_changes: list[LiveChange] = []  # as the worker applied them, for the transcript
        self.warnings_label.setVisible(False)
        self._set_generating(True)
        # A chat answer is the assistant's own turn: shown below the message, never glued to it.
        shown = request.prompt + "\n\n" if request.chat else request.prompt
        self.unsteered.clear_text(shown)
        self.steered.clear_text(shown)
        self._tokens = 0
        self._started_at = time.perf_counter()
        self.speed.setText("starting…")
        self._ctx.show_status("Generating…")
        job = self._job = self._controller.submit(request)
        job.warnings.connect(self._on_warnings)
        job.token.connect(self._on_token)
        job.coefficient_applied.connect(self._on_coefficient_applied)
        job.done.connect(self._on_done)
        job.failed.connect(self._on_failed)
        job.finished.connect(self._on_finished)

    @Slot()
    def stop(self) -> None:
        if self._job is not None:
            self._job.stop()

    def is_generating(self) -> bool:
        return self._generating

    def _set_generating(self, on: bool) -> None:
        self._generating = on
        self.generate_button.setEnabled(not on)
        self.regenerate_button.setEnabled(not on and self._last_seed is not None)
        self.stop_button.setEnabled(on)
        self._add_button.setEnabled(not on and self._add_combo.count() > 0)
        self.effect.setEnabled(not on)
        self.raw_scale.setEnabled(not on)  # the scale decides a multi-layer plan's profile
        for row in self._rows:
            row.set_streaming(on)

    @Slot(object)
    def _on_token(self, event: TokenEvent) -> None:
        if event.row >= len(self._panes):
            return
        show_effect = self._request is not None and self._request.effect and event.row == 1
        self._panes[event.row].append_token(event.text, event.kl if show_effect else None, event.top)
        if event.text:
            self._tokens += 1  # every row's tokens count, however many rows there are
            elapsed = time.perf_counter() - self._started_at
            if elapsed > 0 and self._tokens % 8 == 0:
                self.speed.setText(f"{self._tokens / elapsed:.1f} tokens/s")

    @Slot(object)
    def _on_coefficient_applied(self, change: LiveChange) -> None:
        request = self._request
        if request is None or not 0 <= change.index < len(request.vectors):
            return
        self._live_changes.append(change)
        active = request.vectors[change.index]
        row = next((r for r in self._rows if r.vector_id == active.id), None)
        value = row.describe(change.value) if row is not None else f"c {change.value:g}"
        self.steered.append_marker(
            f"⟨{active.name} → {value}⟩",
            f"Live change: from this token on, {active.name} steers at {value} (raw c = {change.value:g}); "
            "0 means off. Front-mode vectors act on the prompt only, so a live change doesn't move them.",
        )

    @Slot(list)
    def _on_warnings(self, warnings: list[str]) -> None:
        self.warnings_label.setText("\n".join(f"⚠ {w}" for w in warnings))
        self.warnings_label.setVisible(True)

    @Slot(object)
    def _on_done(self, result: GenerationResult) -> None:
        request = self._request
        if request is None or self._ctx.model is None:
            return
        self.speed.setText(
            f"{result.tokens_per_second:.1f} tokens/s · {result.n_new_tokens} tokens in {result.seconds:.2f} s"
            + (" · stopped" if result.cancelled else "")
        )
        vectors = [{**asdict(v), "key": v.name} for v in request.vectors]
        for vector in vectors:
            del vector["id"]  # the panel's handle, meaningless in a transcript
        self.transcript = Transcript(
            prompt=request.prompt,
            chat=request.chat,
            model=model_record(self._ctx.model.info, self._ctx.model.fingerprint),
            sampling=asdict(request.sampling),
            vectors=vectors,
            outputs={
                "unsteered": result.rows[0].text,
                "steered": result.rows[1].text,
                "finish_reasons": [r.finish_reason for r in result.rows],
                "n_tokens": [len(r.token_ids) for r in result.rows],
            },
            live_changes=[asdict(c) for c in self._live_changes],
            effect=request.effect,
            seconds=result.seconds,
            tokens_per_second=result.tokens_per_second,
            cancelled=result.cancelled,
        )

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._failed = True
        self._ctx.report_error("Generation failed", message)

    @Slot()
    def _on_finished(self) -> None:
        self._job = None
        if self._generating:
            for pane in self._panes:
                pane.flush()  # the last tokens, before anything reads the panes
            self._set_generating(False)
            self.save_button.setEnabled(self.transcript is not None)
            self.script_button.setEnabled(self.transcript is not None)
            if self._failed:
                status = "Generation failed"
            elif self.transcript is None or self.transcript.cancelled:
                status = "Generation stopped"
            else:
                status = "Done"
            self._ctx.show_status(status)

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
            if handle is not None and self._ctx.fit(row.entry).status == INCOMPATIBLE:
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
        self.raw_scale.setChecked(bool(settings.value("generate/raw_scale", False, type=bool)))
        try:  # the active vectors come back once the library listing is in (they are found by key)
            self._saved_vectors = list(json.loads(str(settings.value("generate/vectors", "[]") or "[]")))
        except (ValueError, TypeError):
            self._saved_vectors = []
        if self._saved_vectors:
            self._ctx.library_changed.connect(self._restore_vectors)

    @Slot()
    def _restore_vectors(self) -> None:
        """Re-add the vectors active when the app was closed, with their c, mode, layer and on/off."""
        self._ctx.library_changed.disconnect(self._restore_vectors)
        saved, self._saved_vectors = self._saved_vectors, []
        missing = []
        for item in saved:
            entry = self._ctx.entry(str(item.get("key", ""))) if isinstance(item, dict) else None
            if entry is None:
                missing.append(str(item.get("key", "?")) if isinstance(item, dict) else "?")
                continue
            try:
                row = self.add_vector(entry)
                # Before the model is in, the layer box only knows the vector's own depth.
                row.layer.setMaximum(max(row.layer.maximum(), int(item.get("layer", 0))))
                row.restore_state(item)
            except (KeyError, TypeError, ValueError):
                missing.append(entry.key)
        if missing:
            self._ctx.show_status(f"Not restored (no longer in the library): {', '.join(missing)}")

    def write_settings(self) -> None:
        settings = self._ctx.settings
        settings.setValue("generate/prompt", self.prompt.toPlainText())
        settings.setValue("generate/sampling", json.dumps(asdict(self.sampling())))
        settings.setValue("generate/random_seed", self.random_seed.isChecked())
        settings.setValue("generate/effect", self.effect.isChecked())
        settings.setValue("generate/chat", self.chat.isChecked())
        settings.setValue("generate/raw_scale", self.raw_scale.isChecked())
        vectors = [{"key": row.entry.key, **row.state()} for row in self._rows]
        settings.setValue("generate/vectors", json.dumps(vectors))


__all__ = ["GeneratePanel"]
