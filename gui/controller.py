"""The GUI thread's side of the model worker: `submit(request) -> Job`.

`WorkerController` owns the worker thread (`gui.worker.ModelWorker`) and hands it one `Job` per request
(`gui.jobs`). A panel keeps the `Job` it submitted and connects to that job's own signals; nothing is
filtered by a job kind. The controller itself only tracks what is app-wide: whether the worker is busy,
the loaded model, memory figures. For observers that want every job (the status bar, scripts, the tests)
it also re-emits each job's life cycle as a feed (`started(kind)`, `token(event)`, `finished(kind)`...).

Closing: `shutdown()` cancels everything, quits the thread and waits up to a second.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from engine.models import ModelInfo
from gui.jobs import (
    CaptureRequest,
    GenerateRequest,
    Job,
    LoadRequest,
    Request,
    SweepRequest,
    UnloadRequest,
)
from gui.worker import ModelWorker

log = logging.getLogger(__name__)

# Threads whose shutdown timed out; kept referenced so Qt never destroys a running QThread.
_ORPHANS: list[tuple[QThread, QObject]] = []


class WorkerController(QObject):
    """Owns the worker thread; lives on the GUI thread, so every signal it emits is safe for any slot."""

    # app-wide state
    model_loaded = Signal(object, object)  # ModelInfo, (ModelFingerprint, a tokenizer copy for previews)
    model_unloaded = Signal()
    memory = Signal(dict)  # engine.memory_report()
    busy_changed = Signal(bool)
    job_submitted = Signal(object)  # Job

    # the feed of every job (each panel listens to its own Job instead)
    started = Signal(str)  # kind
    finished = Signal(str)  # kind; always the last of a job
    errored = Signal(str, str)  # kind, readable message
    aborted = Signal(str)  # kind
    token = Signal(object)  # engine TokenEvent
    coefficient_applied = Signal(object)  # LiveChange
    load_progress = Signal(str, float)  # stage, fraction in [0, 1]
    capture_progress = Signal(int, int)  # prompts done, total
    sweep_progress = Signal(int, int)  # done, total
    sweep_partial = Signal(object)  # SweepResult so far
    capture_done = Signal(object)  # CaptureOutcome
    generation_done = Signal(object)  # GenerationOutcome
    sweep_done = Signal(object)  # SweepResult

    _dispatch = Signal(object)  # Job -> this object, on the next pass of the event loop
    _run = Signal(object)  # Job -> the worker thread
    _report_memory = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("actadd-model-worker")
        self.worker = ModelWorker()  # no parent: it is moved to the thread
        self.worker.moveToThread(self._thread)
        self._thread.finished.connect(self.worker.deleteLater)
        self.worker.model_loaded.connect(self.model_loaded)  # queued: self lives on the GUI thread
        self.worker.model_unloaded.connect(self.model_unloaded)
        self.worker.memory.connect(self.memory)
        self._run.connect(self.worker.run)
        # Queued even though both ends live here: the caller of `submit` connects to the job first.
        self._dispatch.connect(self._start, Qt.ConnectionType.QueuedConnection)
        self._report_memory.connect(self.worker.report_memory)
        self._jobs: list[Job] = []  # submitted and not finished, oldest first
        self._feeds: dict[Job, _Feed] = {}
        # Finished jobs stay referenced for a few more jobs, so the last reference to a job (and so its
        # deletion) is dropped here on the GUI thread, not by the worker thread still returning from it.
        self._retired: deque[Job] = deque(maxlen=4)
        self._closed = False
        self.model_info: ModelInfo | None = None  # of the loaded model (plain data, safe on this thread)
        self.model_loaded.connect(self._remember_model)
        self.model_unloaded.connect(self._forget_model)
        self._thread.start()

    # ---- state ----------------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self._jobs)

    def running(self, kind: str) -> Job | None:
        """The oldest unfinished job of a kind (the one the worker runs first)."""
        return next((job for job in self._jobs if job.kind == kind), None)

    @Slot(object, object)
    def _remember_model(self, info: ModelInfo, payload: object) -> None:
        self.model_info = info

    @Slot()
    def _forget_model(self) -> None:
        self.model_info = None

    # ---- submitting -------------------------------------------------------------------------------------------
    def submit(self, request: Request) -> Job:
        """Queue a request for the worker; connect to the returned job's signals for its results.

        The job goes to the worker on the next pass of the event loop, so the caller's connections are
        in place before its first signal. After `shutdown` the job is stopped at once (it reports nothing).
        """
        job = Job(request)  # Python-owned: alive while anyone (panel, worker, straggler) holds it
        if self._closed:
            job.stop()
            return job
        self._jobs.append(job)
        if len(self._jobs) == 1:
            self.busy_changed.emit(True)
        self.job_submitted.emit(job)
        self._dispatch.emit(job)
        return job

    @Slot(object)
    def _start(self, job: Job) -> None:
        self._feeds[job] = _Feed(self, job)  # after the submitter's connections: its slots run first
        self._run.emit(job)

    def load(self, request: LoadRequest) -> Job:
        return self.submit(request)

    def unload(self) -> Job:
        return self.submit(UnloadRequest())

    def capture(self, request: CaptureRequest) -> Job:
        return self.submit(request)

    def generate(self, request: GenerateRequest) -> Job:
        return self.submit(request)

    def sweep(self, request: SweepRequest) -> Job:
        return self.submit(request)

    def request_memory(self) -> None:
        """Ask for fresh memory figures; ignored while a job runs (the job reports at its end)."""
        if not self.busy and not self._closed:
            self._report_memory.emit()

    def stop(self) -> None:
        """Stop the running job and drop the queued ones (each still reports aborted and finished)."""
        for job in self._jobs:
            job.stop()

    def set_live_coefficient(self, index: int, value: float) -> None:
        """Change the steered row's coefficient `index` from the next token of the running generation
        (panels address a vector by its id through their own job: `Job.set_coefficient`)."""
        if (job := self.running("generate")) is not None:
            job.set_coefficient_at(index, value)

    def _finished(self, job: Job) -> None:
        if job in self._jobs:
            self._jobs.remove(job)
        if not self._jobs:
            self.busy_changed.emit(False)
        self.finished.emit(job.kind)
        self._feeds.pop(job, None)
        self._retired.append(job)

    # ---- closing ---------------------------------------------------------------------------------------------
    def shutdown(self, timeout_ms: int = 1000) -> bool:
        """Cancel everything, quit the thread and wait; True if it ended within `timeout_ms`."""
        if self._closed:
            return not self._thread.isRunning()
        self._closed = True
        self.stop()
        self.worker.request_shutdown()
        self._thread.quit()
        if self._thread.wait(timeout_ms):
            if self.worker.original_threads is not None:  # the thread count is process-wide: give it back
                import torch

                torch.set_num_threads(self.worker.original_threads)
            return True
        log.warning("the model worker did not stop within %d ms; leaving it to finish", timeout_ms)
        _ORPHANS.append((self._thread, self.worker))
        return False


def wait_for_orphans(timeout_ms: int = 30_000) -> None:
    """At exit: give timed-out worker threads a last chance, so Qt never destroys a running thread."""
    deadline = time.monotonic() + timeout_ms / 1000
    for thread, _ in _ORPHANS:
        thread.wait(max(0, int((deadline - time.monotonic()) * 1000)))


class _Feed(QObject):
    """Re-emits one job's signals as the controller's feed. Its slots are bound methods of a QObject on the
    GUI thread, so Qt queues the worker thread's emissions to them; it knows its job, so no `sender()`."""

    def __init__(self, controller: WorkerController, job: Job):
        super().__init__()
        self._controller, self._job = controller, job
        job.started.connect(self._started)
        job.failed.connect(self._failed)
        job.aborted.connect(self._aborted)
        job.progress.connect(self._progress)
        job.done.connect(self._done)
        job.finished.connect(self._finished)
        job.token.connect(controller.token)
        job.coefficient_applied.connect(controller.coefficient_applied)
        job.partial.connect(controller.sweep_partial)

    @Slot()
    def _started(self) -> None:
        self._controller.started.emit(self._job.kind)

    @Slot(str)
    def _failed(self, message: str) -> None:
        self._controller.errored.emit(self._job.kind, message)

    @Slot()
    def _aborted(self) -> None:
        self._controller.aborted.emit(self._job.kind)

    @Slot(object)
    def _progress(self, progress: tuple) -> None:
        c = self._controller
        signal = {"load": c.load_progress, "capture": c.capture_progress, "sweep": c.sweep_progress}
        if (feed := signal.get(self._job.kind)) is not None:  # a suggest job's progress stays on its Job
            feed.emit(*progress)

    @Slot(object)
    def _done(self, value: object) -> None:
        c = self._controller
        signal = {"capture": c.capture_done, "generate": c.generation_done, "sweep": c.sweep_done}
        if (done := signal.get(self._job.kind)) is not None:
            done.emit(value)

    @Slot()
    def _finished(self) -> None:
        self._controller._finished(self._job)
