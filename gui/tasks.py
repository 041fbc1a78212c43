"""Short, model-free chores (library listing, rename, combine, import/export) on Qt's global thread pool.

They are independent of the model, so they never queue behind a long generation on the model worker.
"""

from __future__ import annotations

import itertools
import logging
import traceback
from collections.abc import Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from engine.errors import ActAddError

log = logging.getLogger(__name__)


class _Task(QRunnable):
    def __init__(self, runner: TaskRunner, task_id: int, fn: Callable[[], object]):
        super().__init__()
        self._runner, self._id, self._fn = runner, task_id, fn

    def run(self) -> None:
        try:
            value, ok = self._fn(), True
        except ActAddError as exc:
            value, ok = str(exc), False
        except OSError as exc:
            value, ok = f"{exc.strerror or exc}: {exc.filename or ''}".strip(": "), False
        except Exception as exc:
            log.error("background task failed:\n%s", traceback.format_exc())
            value, ok = f"unexpected error ({type(exc).__name__}): {exc}", False
        try:
            self._runner.delivered.emit(self._id, ok, value)
        except RuntimeError:  # "Signal source has been deleted": its window closed while the task ran
            log.debug("a background task finished after its runner was deleted; result dropped")


class TaskRunner(QObject):
    """Runs short, model-free jobs (library file chores) on the global QThreadPool.

    `submit(fn, on_done, on_error)`: `fn` runs on a pool thread; the callbacks run on the GUI thread.
    """

    delivered = Signal(int, bool, object)
    idle = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._ids = itertools.count()
        self._callbacks: dict[int, tuple[Callable, Callable]] = {}
        self._pool = QThreadPool.globalInstance()
        self.delivered.connect(self._deliver)  # queued: emitted on pool threads, received here

    @property
    def pending(self) -> int:
        return len(self._callbacks)

    def submit(
        self,
        fn: Callable[[], object],
        on_done: Callable[[object], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        task_id = next(self._ids)
        self._callbacks[task_id] = (on_done or (lambda value: None), on_error or (lambda message: None))
        self._pool.start(_Task(self, task_id, fn))

    @Slot(int, bool, object)
    def _deliver(self, task_id: int, ok: bool, value: object) -> None:
        on_done, on_error = self._callbacks.pop(task_id, (None, None))
        if on_done is not None:
            (on_done if ok else on_error)(value)
        if not self._callbacks:
            self.idle.emit()

    def wait(self, timeout_ms: int = 1000) -> bool:
        return self._pool.waitForDone(timeout_ms)
