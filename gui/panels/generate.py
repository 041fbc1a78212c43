"""The Generate tab: a prompt, active vectors with live sliders, sampling, and side-by-side streaming panes.

Both panes come from ONE batched generation on the worker (row 0 unsteered, row 1 steered), so they
share the prompt pass, the seed and every sampling setting. Moving a slider while text streams sends the
value to the running `SteeringPlan` (from the next token on).

This panel owns a generation's life cycle (request, job, transcript, exports); the active vectors are
gui/widgets/active_vectors.py, the output side (buttons, panes, speed) gui/panels/generate_output.py.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QCheckBox, QFileDialog, QGroupBox, QPlainTextEdit, QVBoxLayout, QWidget

from engine.generation import GenerationResult, SamplingConfig, TokenEvent
from engine.transcript import Transcript, model_record
from gui.context import AppContext, SteeringChoice
from gui.jobs import GenerateRequest, Job, LiveChange
from gui.panels.common import bare_column, fill_with_splitter
from gui.panels.generate_output import GenerateOutput
from gui.widgets.active_vectors import ActiveVectors
from gui.widgets.sampling_form import SamplingForm
from gui.widgets.vector_row import VectorRow


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
        self._failed = False  # the running generation reported an error

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
        self.active_vectors = ActiveVectors(context)
        self.active_vectors.coefficient_changed.connect(self._on_row_coefficient)
        self._add_combo = self.active_vectors.add_combo
        self.raw_scale = self.active_vectors.raw_scale

        # ---- sampling ------------------------------------------------------------------------------------
        self.sampling_form = form = SamplingForm()
        self.temperature, self.top_p, self.top_k = form.temperature, form.top_p, form.top_k
        self.repetition_penalty, self.frequency_penalty = form.repetition_penalty, form.frequency_penalty
        self.max_tokens, self.seed, self.random_seed = form.max_tokens, form.seed, form.random_seed

        left, left_layout = bare_column()
        left_layout.addWidget(prompt_box)
        left_layout.addWidget(self.active_vectors, 1)
        left_layout.addWidget(form)

        # ---- output ---------------------------------------------------------------------------------------
        self.output = output = GenerateOutput()
        output.generate_button.clicked.connect(self.generate)
        output.stop_button.clicked.connect(self.stop)
        output.regenerate_button.clicked.connect(self.regenerate)
        output.save_button.clicked.connect(self._choose_transcript_file)
        output.script_button.clicked.connect(self._choose_script_file)
        self.generate_button, self.stop_button = output.generate_button, output.stop_button
        self.regenerate_button, self.effect, self.speed = (
            output.regenerate_button,
            output.effect,
            output.speed,
        )
        self.unsteered, self.steered = output.unsteered, output.steered
        self.save_button, self.script_button = output.save_button, output.script_button
        self.warnings_label = output.warnings_label

        fill_with_splitter(self, left, output, stretch=(2, 5), sizes=[380, 900])

        context.model_changed.connect(self._on_model_changed)
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

    # ---- vectors (the list is ActiveVectors) ---------------------------------------------------------------
    def add_vector(self, entry) -> VectorRow:
        return self.active_vectors.add_vector(entry)

    def apply_choice(self, choice: SteeringChoice) -> VectorRow | None:
        return self.active_vectors.apply_choice(choice)

    def remove_vector(self, row: VectorRow, force: bool = False) -> None:
        self.active_vectors.remove_vector(row, force)

    def vector_rows(self) -> list[VectorRow]:
        return self.active_vectors.rows()

    @Slot(int, float)
    def _on_row_coefficient(self, vector_id: int, value: float) -> None:
        if self._job is not None:  # from the next token of the running generation
            self._job.set_coefficient(vector_id, value)

    # ---- generation ---------------------------------------------------------------------------------------
    def request(self) -> GenerateRequest:
        return GenerateRequest(
            prompt=self.prompt.toPlainText(),
            vectors=self.active_vectors.vectors(),
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
        if not self.active_vectors.files_present():
            return
        if self.random_seed.isChecked():
            self.seed.setValue(random.randrange(2**31 - 1))
        self._start(self.request())

    @Slot()
    def regenerate(self) -> None:
        if self._last_seed is not None:
            self.seed.setValue(self._last_seed)
        if not self._generating and self._ctx.model is not None and self.active_vectors.files_present():
            self._start(self.request())

    def _start(self, request: GenerateRequest) -> None:
        self._request = request
        self._last_seed = request.sampling.seed
        self.transcript = None
        self._failed = False
        self._live_changes: list[LiveChange] = []  # as the worker applied them, for the transcript
        self._set_generating(True)
        # A chat answer is the assistant's own turn: shown below the message, never glued to it.
        self.output.start(request.prompt + "\n\n" if request.chat else request.prompt)
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
        self.output.set_generating(on, can_regenerate=self._last_seed is not None)
        self.active_vectors.set_streaming(on)

    @Slot(object)
    def _on_token(self, event: TokenEvent) -> None:
        self.output.show_token(event, effect=self._request is not None and self._request.effect)

    @Slot(object)
    def _on_coefficient_applied(self, change: LiveChange) -> None:
        request = self._request
        if request is None or not 0 <= change.index < len(request.vectors):
            return
        self._live_changes.append(change)
        active = request.vectors[change.index]
        row = self.active_vectors.row_by_id(active.id)
        value = row.describe(change.value) if row is not None else f"c {change.value:g}"
        self.output.mark_live_change(active.name, value, change.value)

    @Slot(list)
    def _on_warnings(self, warnings: list[str]) -> None:
        self.output.show_warnings(warnings)

    @Slot(object)
    def _on_done(self, result: GenerationResult) -> None:
        request = self._request
        if request is None or self._ctx.model is None:
            return
        self.output.show_result(result)
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
            self.output.flush()  # the last tokens, before anything reads the panes
            self._set_generating(False)
            self.output.set_exportable(self.transcript is not None)
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

    # ---- files -----------------------------------------------------------------------------------------
    def _ask_save_path(self, title: str, file_name: str, filters: str) -> str:
        path, _ = QFileDialog.getSaveFileName(self, title, str(Path.home() / file_name), filters)
        return path

    @Slot()
    def _choose_transcript_file(self) -> None:
        if path := self._ask_save_path("Save transcript", "transcript.md", "Markdown (*.md);;JSON (*.json)"):
            self.save_transcript(path)

    @Slot()
    def _choose_script_file(self) -> None:
        if path := self._ask_save_path("Export as Python script", "reproduce_generation.py", "Python (*.py)"):
            self.export_script(path)

    def save_transcript(self, path: str | Path) -> None:
        transcript = self.transcript
        if transcript is None:
            return
        self._ctx.tasks.submit(
            lambda: transcript.save(path),
            lambda saved: self._ctx.show_status(f"Saved the transcript to {saved}"),
            lambda message: self._ctx.report_error("Save transcript", message),
        )

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
        self.random_seed.setChecked(bool(settings.value("generate/random_seed", False, type=bool)))
        self.effect.setChecked(bool(settings.value("generate/effect", False, type=bool)))
        self.chat.setChecked(bool(settings.value("generate/chat", False, type=bool)))
        self.active_vectors.read_settings(settings)  # generate/raw_scale, generate/vectors

    def write_settings(self) -> None:
        settings = self._ctx.settings
        settings.setValue("generate/prompt", self.prompt.toPlainText())
        settings.setValue("generate/sampling", json.dumps(asdict(self.sampling())))
        settings.setValue("generate/random_seed", self.random_seed.isChecked())
        settings.setValue("generate/effect", self.effect.isChecked())
        settings.setValue("generate/chat", self.chat.isChecked())
        self.active_vectors.write_settings(settings)


__all__ = ["GeneratePanel"]
