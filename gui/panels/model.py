"""The Model tab: pick a folder, a cached hub id or the demo model; load with progress; show what is loaded."""

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

from engine.devices import available_devices
from engine.model_stats import format_megabytes
from gui.context import AppContext
from gui.jobs import Job, LoadRequest, UnloadRequest

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
    "tokenizer": "Loading the tokenizer…",
    "weights": "Loading the weights…",
    "checking": "Checking the decoder blocks…",
    "ready": "Ready",
}


_mb = format_megabytes  # the one size format, shared with the status bar


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
        self._browse = QPushButton("Browse…")
        self._browse.setToolTip("Choose a local Hugging Face model folder")
        self._browse.clicked.connect(self.browse)
        self._demo = QPushButton("Demo model")
        self._demo.setToolTip("The small GPT-2 trained for this app; works offline on any CPU")
        self._demo.clicked.connect(lambda: self.set_source("demo"))

        self._quantize = QComboBox()
        self._quantize.addItems(["none", "8bit", "4bit"])
        self._quantize.setToolTip("bitsandbytes quantization: 8bit or 4bit need a CUDA GPU and save memory")
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
        self._cancel.setToolTip("Stop loading (the partial load is dropped)")
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
        row.addWidget(self._browse)
        row.addWidget(self._demo)
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

        self._info_labels: dict[str, QLabel] = {}
        info_box = QGroupBox("Loaded model")
        info_form = QFormLayout(info_box)
        for key, label, tip in (
            ("source", "Source", "What was asked for"),
            ("path", "Folder", "Where the files were read from"),
            ("architecture", "Architecture", "The Hugging Face model_type"),
            ("layers", "Layers", "Decoder blocks; vectors are added at the input of one or more of them"),
            ("hidden", "Hidden size", "Width of the residual stream, the length of a steering direction"),
            ("params", "Parameters", "Number of weights"),
            ("dtype", "Dtype / device", "Dtype of the hidden states and the device of the embeddings"),
            ("quantize", "Quantization", "bitsandbytes quantization in use"),
            ("blocks", "Blocks at", "Where the decoder blocks were found in the module tree"),
            ("chat", "Chat template", "Whether the tokenizer ships a chat template (Generate can use it)"),
            ("ram", "RAM (process)", "Resident memory of this app"),
            ("weights", "Model weights", "Memory taken by the weights"),
            ("vram", "VRAM", "CUDA memory allocated / reserved by torch"),
        ):
            value = QLabel("–")
            value.setToolTip(tip)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self._info_labels[key] = value
            info_form.addRow(label + ":", value)

        guide = QLabel(GETTING_STARTED)
        guide.setWordWrap(True)
        guide.setTextFormat(Qt.TextFormat.RichText)
        guide_box = QGroupBox("Getting started")
        QVBoxLayout(guide_box).addWidget(guide)

        guide.setAlignment(Qt.AlignmentFlag.AlignTop)
        lower = QHBoxLayout()
        lower.addWidget(info_box, 1)
        lower.addWidget(guide_box, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(pick)
        layout.addLayout(lower)
        layout.addStretch(1)

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

    @Slot()
    def browse(self) -> None:
        start = self.source() if Path(self.source()).is_dir() else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder", start)
        if folder:
            self.set_source(folder)

    @Slot()
    def load(self) -> None:
        source = self.source() or "demo"
        self.load_source(source)

    def load_source(self, source: str) -> Job:
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
        return job

    @Slot()
    def cancel(self) -> None:
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

    def _set_busy(self, busy: bool) -> None:
        self.load_button.setEnabled(not busy)
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

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.progress.setValue(0)
        self.progress.setFormat("Load failed")
        self._ctx.report_error("Could not load the model", message)

    @Slot()
    def _on_aborted(self) -> None:
        self.progress.setValue(0)
        self.progress.setFormat("Load cancelled")

    @Slot(object)
    def _on_model_changed(self, handle) -> None:
        if handle is None:
            for label in self._info_labels.values():
                label.setText("–")
            self.progress.setValue(0)
            self.progress.setFormat("No model loaded")
            self._set_busy(self._loading)
            return
        info = handle.info
        self._remember(info.source)
        self.progress.setValue(100)
        self.progress.setFormat(f"Loaded {Path(info.path).name}")
        text = {
            "source": info.source,
            "path": info.path,
            "architecture": info.architecture,
            "layers": f"{info.n_layers}  (0–{info.n_layers - 1})",
            "hidden": str(info.hidden_size),
            "params": f"{info.n_params / 1e6:.2f} M",
            "dtype": f"{info.dtype} on {info.device}",
            "quantize": info.quantize,
            "blocks": info.block_path,
            "chat": "yes" if info.has_chat_template else "no",
        }
        for key, value in text.items():
            self._info_labels[key].setText(value)
        self._set_busy(False)
        self._ctx.show_status(f"Loaded {info.architecture} from {info.path}")

    @Slot(dict)
    def _on_memory(self, report: dict) -> None:
        self._info_labels["ram"].setText(_mb(report.get("rss_mb")))
        self._info_labels["weights"].setText(_mb(report.get("weights_mb")))
        if "vram_allocated_mb" in report:
            self._info_labels["vram"].setText(
                f"{_mb(report['vram_allocated_mb'])} allocated / {_mb(report['vram_reserved_mb'])} reserved"
            )
        else:
            self._info_labels["vram"].setText("no CUDA GPU")

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
