"""The status bar's permanent labels: what the model worker does, memory, the loaded model."""

from __future__ import annotations

from PySide6.QtCore import QObject, Slot
from PySide6.QtWidgets import QLabel, QStatusBar

from engine.model_stats import format_megabytes
from gui.context import AppContext
from gui.jobs import Job
from gui.panels.model_info import display_name

BUSY_TEXT = {  # by Job.kind; another kind reads "<kind>…"
    "load": "loading the model…",
    "unload": "unloading…",
    "capture": "capturing…",
    "generate": "generating…",
    "sweep": "sweeping…",
    "suggest": "suggesting settings…",
}


class WorkerStatus(QObject):
    """Three labels at the right of `bar`, fed by the controller's and the context's app-wide signals:
    `job_started` (the worker began a job), `busy_changed` (back to idle), `memory`, `model_changed`."""

    def __init__(self, bar: QStatusBar, context: AppContext):
        super().__init__(bar)
        self.worker_label = QLabel("idle")
        self.worker_label.setToolTip("What the model worker thread is doing")
        self.memory_label = QLabel("")
        self.memory_label.setToolTip("Resident memory of the app / CUDA memory allocated")
        self.model_label = QLabel("No model")
        self.model_label.setToolTip("The loaded model")
        for label in (self.worker_label, self.memory_label, self.model_label):
            bar.addPermanentWidget(label)
        controller = context.controller
        controller.job_started.connect(self._on_job_started)
        controller.busy_changed.connect(self._on_busy_changed)
        controller.memory.connect(self._on_memory)
        context.model_changed.connect(self._on_model_changed)

    @Slot(object)
    def _on_job_started(self, job: Job) -> None:
        self.worker_label.setText(BUSY_TEXT.get(job.kind, job.kind + "…"))

    @Slot(bool)
    def _on_busy_changed(self, busy: bool) -> None:
        if not busy:
            self.worker_label.setText("idle")

    @Slot(dict)
    def _on_memory(self, report: dict) -> None:
        text = f"RAM {format_megabytes(report.get('rss_mb'))}"
        if "vram_allocated_mb" in report:
            text += f" · VRAM {format_megabytes(report['vram_allocated_mb'])}"
        self.memory_label.setText(text)

    @Slot(object)
    def _on_model_changed(self, handle) -> None:
        if handle is None:
            self.model_label.setText("No model")
            return
        info = handle.info
        name = display_name(info)  # a .gguf by its file name, not its converted cache folder
        self.model_label.setText(f"{name} · {info.architecture} · {info.n_layers} layers · {info.device}")
