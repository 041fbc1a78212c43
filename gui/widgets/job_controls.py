"""Run, Stop and a progress bar for one worker job at a time (a sweep, a settings search).

`launch` builds the owner's request and submits it (or `start` follows a job submitted elsewhere); from
then on these controls follow the job: Run is disabled and Stop enabled while it runs, its `(done, total, ...)` progress
fills the bar, and when the job's last signal (`finished`) arrives Run is enabled again if the owner says
it can run (`set_ready`).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QHBoxLayout, QProgressBar, QPushButton, QVBoxLayout, QWidget

from engine.errors import ActAddError
from gui.context import AppContext
from gui.jobs import Job, Request

STEPS = 1000  # the bar's resolution


class JobControls(QWidget):
    def __init__(self, run_text: str, run_tip: str, stop_tip: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.run_button = QPushButton(run_text)
        self.run_button.setToolTip(run_tip)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip(stop_tip)
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, STEPS)
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        self._job: Job | None = None
        self._ready = False
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        self.set_ready(False)

    def is_running(self) -> bool:
        return self._job is not None

    def set_ready(self, ready: bool) -> None:
        """Whether a job could start now (a model and a vector are there); Run follows it when idle."""
        self._ready = ready
        self.run_button.setEnabled(ready and self._job is None)

    def launch(self, context: AppContext, build: Callable[[], Request], title: str) -> Job | None:
        """Build a request and submit it, unless a job runs already. A request that can't be built (no
        vector chosen, an unreadable file, a setting the job can't use) is reported under `title`."""
        if self.is_running():
            return None
        try:
            request = build()
        except (ValueError, ActAddError) as exc:
            context.report_error(title, str(exc))
            return None
        job = context.controller.submit(request)
        self.start(job)
        return job

    def start(self, job: Job) -> None:
        self._job = job
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.progress.setValue(0)
        job.progress.connect(self._on_progress)
        job.finished.connect(self._on_finished)

    def complete(self) -> None:
        """Fill the bar: the job has its whole answer."""
        self.progress.setValue(STEPS)

    @Slot()
    def stop(self) -> None:
        if self._job is not None:
            self._job.stop()

    @Slot(object)
    def _on_progress(self, progress: tuple) -> None:
        done, total = progress[0], progress[1]
        self.progress.setValue(round(STEPS * done / max(1, total)))

    @Slot()
    def _on_finished(self) -> None:
        self._job = None
        self.stop_button.setEnabled(False)
        self.set_ready(self._ready)
