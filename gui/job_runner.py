"""The thread side of one job: the signal protocol, Stop, the model lock, abandoned work.

`JobRunner` is the base of `gui.worker.ModelWorker`, the one `QObject` on the worker thread (Qt's
worker-object pattern: `gui.controller.WorkerController` moves it to its `QThread` and hands it `Job`s
through a queued signal). It runs one job at a time: it emits the job's `started`, calls the handler
registered for the request's type (`_handlers`, filled by the subclass), turns every exception into
`failed` with a readable message (so the thread never dies silently) or `aborted` on Stop, and always
emits `finished` last.

Two things cross threads without the event loop, both thread-safe by construction:
- stop: the job's `threading.Event` (generation reads it once per token, sweeps once per batch, and model
  loads are waited on in short slices);
- live steering: `Job.set_coefficient` queues a value that the handler applies between two tokens.

A model load or a capture runs in a daemon thread that the runner merely waits on (`_interruptible`), so it
can be abandoned at once on stop or close: its result is dropped, and the next job waits until it has
really ended (`_wait_for_straggler`). `model_lock` is held while a job runs; other users of the loaded
model (the Serve tab's server) take it too, so their forward passes never overlap with the worker's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from PySide6.QtCore import QObject, Slot

from engine.errors import ActAddError, CancelledError
from engine.threads import use_app_threads
from gui.jobs import Job

log = logging.getLogger(__name__)
OUT_OF_MEMORY = "out of memory; try a smaller model, 4-bit quantization or fewer tokens"
Handler = Callable[[Job, Any], None]  # (the job, its request); reports through the job's signals


class JobRunner(QObject):
    """Runs jobs on the thread it lives on; a subclass registers one handler per request type."""

    def __init__(self) -> None:
        super().__init__()
        self._handlers: dict[type, Handler] = {}  # request type -> handler (filled by the subclass)
        self._shutdown = threading.Event()
        self._threads_set = False
        self._straggler: threading.Thread | None = None  # an abandoned load or capture still running
        self.original_threads: int | None = None  # torch's thread count before this worker changed it
        self.model_lock = threading.Lock()
        self._holding_lock = False  # this thread holds model_lock for the running job
        self._lock_handed_off = False  # ...and handed it to an abandoned load or capture

    # ---- called from other threads (thread-safe, no event loop needed) ---------------------------------
    def request_shutdown(self) -> None:
        self._shutdown.set()

    # ---- the protocol -----------------------------------------------------------------------------------
    def _setup_thread(self) -> None:
        if not self._threads_set:
            import torch

            self.original_threads = torch.get_num_threads()
            use_app_threads()  # one core left to the GUI thread: oversubscribed BLAS threads stall the event loop
            self._threads_set = True

    def _stopped(self, job: Job) -> bool:
        return job.cancel.is_set() or self._shutdown.is_set()

    @Slot(object)
    def run(self, job: Job) -> None:
        """Run one job with the started / done | failed | aborted / finished protocol."""
        self._setup_thread()
        job.started.emit()
        try:
            if self._stopped(job):
                raise CancelledError("stopped before it started")
            self._wait_for_straggler(job)
            with self._model_held(job):
                self._handlers[type(job.request)](job, job.request)
        except CancelledError:
            job.aborted.emit()
        except ActAddError as exc:
            job.failed.emit(str(exc))
        except MemoryError:
            job.failed.emit(OUT_OF_MEMORY)
        except Exception as exc:  # a bug, still shown rather than killing the thread
            import torch

            if isinstance(exc, torch.OutOfMemoryError):  # CUDA's is a RuntimeError, not a MemoryError
                job.failed.emit(OUT_OF_MEMORY)
            else:
                log.error("worker job %s failed:\n%s", job.kind, traceback.format_exc())
                job.failed.emit(f"unexpected error ({type(exc).__name__}): {exc}")
        finally:
            job.finished.emit()

    def _interruptible(self, fn: Callable[[], Any], job: Job) -> Any:
        """Run `fn` in a daemon thread and wait for it in 50 ms slices; on cancel, abandon it.

        `from_pretrained` cannot be interrupted, so a load that is stopped or outlived by the window simply
        finishes in the background (or dies with the process) and its result is dropped.
        """
        self._wait_for_straggler(job)
        box: dict[str, Any] = {}
        handoff = threading.Lock()

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc
            finally:
                with handoff:
                    box["done"] = True
                    if box.get("holds_lock"):
                        self.model_lock.release()  # the abandoned work was still using the model

        thread = threading.Thread(target=target, name="actadd-worker-job", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.05)
            if self._stopped(job):
                # The abandoned work keeps the model lock until it really ends, so the server's forward
                # passes never overlap with it either.
                with handoff:
                    if not box.get("done") and self._holding_lock:
                        box["holds_lock"], self._lock_handed_off = True, True
                self._straggler = thread
                raise CancelledError("stopped")
        if "error" in box:
            raise box["error"]
        return box["value"]

    @contextlib.contextmanager
    def _model_held(self, job: Job) -> Iterator[None]:
        """Hold `model_lock` for the job, waiting for it in 50 ms slices so Stop and close still work."""
        while not self.model_lock.acquire(timeout=0.05):
            if self._stopped(job):
                raise CancelledError("stopped")
        self._holding_lock = True
        try:
            yield
        finally:
            self._holding_lock = False
            if self._lock_handed_off:  # an abandoned load or capture releases it when it ends
                self._lock_handed_off = False
            else:
                self.model_lock.release()

    def _wait_for_straggler(self, job: Job) -> None:
        """Let an abandoned load or capture finish before the next job uses the model (interruptibly)."""
        straggler = self._straggler
        while straggler is not None and straggler.is_alive():
            straggler.join(0.05)
            if self._stopped(job):
                raise CancelledError("stopped")
        self._straggler = None
