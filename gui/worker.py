"""The model worker: one `QObject` on one `QThread` owns the model, the tokenizer and all torch work.

Qt's worker-object pattern (see the QThread documentation): `gui.controller.WorkerController` owns the
thread, creates a parentless `ModelWorker`, moves it to the thread and hands it `Job`s through a queued
signal. The worker runs one job at a time and reports through the job's own signals (`gui.jobs.Job`):
started, then progress / token / partial, then done, failed or aborted, and always finished last. Every
exception inside a job is caught and reported as `failed` with the engine's user-facing message, so the
thread never dies silently.

Two things cross threads without the event loop, both thread-safe by construction:
- stop: the job's `threading.Event` (generation reads it once per token, sweeps once per batch, and model
  loads are waited on in short slices);
- live steering: `Job.set_coefficient` queues a value that the worker applies with
  `SteeringPlan.set_coefficient` between two tokens, on its own thread, so the GUI thread never touches
  a tensor.

A model load or a capture runs in a daemon thread that the worker merely waits on, so it can be abandoned
at once on stop or close: its result is dropped (a stopped capture saves nothing), and the next job waits
until it has really ended.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from engine.errors import ActAddError, CancelledError
from engine.generation import TokenEvent
from engine.models import LoadedModel
from engine.steering import Steer
from engine.threads import use_app_threads
from engine.vector import SteeringVector
from gui.jobs import (
    ActiveVector,
    CaptureOutcome,
    CaptureRequest,
    ChatRequest,
    GenerateRequest,
    GenerationOutcome,
    Job,
    LiveChange,
    LoadRequest,
    NormsRequest,
    SuggestRequest,
    SweepRequest,
    UnloadRequest,
)

log = logging.getLogger(__name__)
OUT_OF_MEMORY = "out of memory; try a smaller model, 4-bit quantization or fewer tokens"


class ModelWorker(QObject):
    """Lives on the worker thread; `run` is called through a queued signal from the controller."""

    # The model is app-wide state, not one job's: these stay on the worker.
    model_loaded = Signal(object, object)  # ModelInfo, (ModelFingerprint, a tokenizer copy for previews)
    model_unloaded = Signal()
    memory = Signal(dict)  # engine.memory_report()

    def __init__(self) -> None:
        super().__init__()
        self.loaded: LoadedModel | None = None  # touched only on this thread
        self.pace_s = 0.0  # minimum seconds per generated token (slow motion for demos and tests)
        self._shutdown = threading.Event()
        self._vector_cache: dict[str, tuple[float, SteeringVector]] = {}
        self._threads_set = False
        self._straggler: threading.Thread | None = None  # an abandoned load or capture still running
        self.original_threads: int | None = None  # torch's thread count before this worker changed it
        self._handlers: dict[type, Callable[[Job, Any], None]] = {
            LoadRequest: self._load,
            UnloadRequest: self._unload,
            NormsRequest: self._norms,
            CaptureRequest: self._capture,
            GenerateRequest: self._generate,
            ChatRequest: self._chat,
            SweepRequest: self._sweep,
            SuggestRequest: self._suggest,
        }
        # Held while a job runs; other users of the loaded model (the Serve tab's server) take it too, so
        # their forward passes never run concurrently with this worker's.
        self.model_lock = threading.Lock()
        self._holding_lock = False  # this thread holds model_lock for the running job
        self._lock_handed_off = False  # ...and handed it to an abandoned load or capture

    # ---- called from other threads (thread-safe, no event loop needed) ---------------------------------
    def request_shutdown(self) -> None:
        self._shutdown.set()

    # ---- plumbing -----------------------------------------------------------------------------------------
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

    def _need_model(self) -> LoadedModel:
        if self.loaded is None or self.loaded.model is None:
            raise ActAddError("no model is loaded; load one in the Model tab first")
        return self.loaded

    def _vector(self, path: str) -> SteeringVector:
        from engine.vector import load_vector

        mtime = Path(path).stat().st_mtime if Path(path).exists() else -1.0
        cached = self._vector_cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        vector = load_vector(Path(path))
        self._vector_cache[path] = (mtime, vector)
        return vector

    def _emit_memory(self) -> None:
        from engine.models import memory_report

        self.memory.emit(memory_report(self.loaded))

    @Slot()
    def report_memory(self) -> None:
        try:
            self._emit_memory()
        except Exception:  # a failed memory probe is not worth a dialog
            log.debug("memory report failed", exc_info=True)

    # ---- the jobs -----------------------------------------------------------------------------------------
    def _load(self, job: Job, request: LoadRequest) -> None:
        from engine.models import load_model, resolve_source, unload

        def progress(stage: str, fraction: float) -> None:
            if self._stopped(job):
                raise CancelledError("stopped")  # stops the load at the next stage boundary
            job.progress.emit((stage, fraction))

        folder = resolve_source(request.source)  # readable errors for a missing folder or id
        # Free the old model first (two may not fit), unless load_model is sure to refuse the new one.
        if self.loaded is not None and (
            (folder / "config.json").is_file() or folder.is_file()
        ):  # a folder or a .gguf
            unload(self.loaded)
            self.loaded = None
            self._vector_cache.clear()
            self.model_unloaded.emit()
        loaded = self._interruptible(
            lambda: load_model(
                request.source,
                quantize=request.quantize,
                device=request.device,
                dtype=request.dtype,
                trust_remote_code=request.trust_remote_code,
                progress=progress,
                cancel=job.cancel,  # a .gguf's one-time conversion stops between tensors
            ),
            job,
        )
        self.loaded = loaded
        # The GUI previews tokenization on its own copy: a fast tokenizer is not safe to share.
        self.model_loaded.emit(loaded.info, (loaded.fingerprint, copy.deepcopy(loaded.tokenizer)))
        job.done.emit(loaded.info)
        self._emit_memory()

    def _unload(self, job: Job, request: UnloadRequest) -> None:
        from engine.models import unload

        unload(self.loaded)
        self.loaded = None
        self._vector_cache.clear()
        self.model_unloaded.emit()
        job.done.emit(None)
        self._emit_memory()

    def _norms(self, job: Job, request: NormsRequest) -> None:
        from engine.residual_norms import residual_norms

        # One forward pass over a short neutral text the first time; read from the cache after that.
        job.done.emit(residual_norms(self._need_model()))

    def _capture(self, job: Job, request: CaptureRequest) -> None:
        from engine.capture import capture_actadd, capture_mean_diff, capture_pca
        from engine.library import Library

        loaded = self._need_model()
        library = Library(request.library_root)
        library.path_of(request.name, request.collection)  # refuse a bad name before the work
        extra: dict[str, Any] = {"name": request.name, "tags": request.tags, "notes": request.notes}
        if request.default_coeff is not None:
            extra["default_coeff"] = request.default_coeff
        work: Callable[[], SteeringVector]
        if request.method == "actadd":
            work = lambda: capture_actadd(  # noqa: E731
                loaded, request.positive, request.negative, request.layers, **extra
            )
        elif request.method in ("mean-diff", "pca"):
            capture = capture_mean_diff if request.method == "mean-diff" else capture_pca
            work = lambda: capture(  # noqa: E731
                loaded,
                request.pairs,
                request.layers,
                progress=lambda done, total: self._stopped(job) or job.progress.emit((done, total)),
                cancel=job.cancel,
                **extra,
            )
        else:
            raise ActAddError(f"unknown capture method {request.method!r}")
        # A capture on a big model can take seconds: wait for it interruptibly. A stopped capture
        # saves nothing; a mean-diff or PCA capture stops after its current batch, an ActAdd one
        # after its single forward pass, and the next job waits for that.
        vector = self._interruptible(work, job)
        if self._stopped(job):
            raise CancelledError("stopped")
        path = library.save(vector, request.name, collection=request.collection, overwrite=request.overwrite)
        job.done.emit(
            CaptureOutcome(
                path=str(path),
                name=request.name,
                method=vector.method,
                layers=vector.layer_ids,
                shape=vector.shape,
            )
        )

    def _steers(self, loaded: LoadedModel, vectors: list[ActiveVector]) -> tuple[list[Steer], list[str]]:
        """The request's active vectors as engine Steers (a disabled one at c = 0), and their warnings."""
        from engine.tokens import legacy_bos_warning
        from engine.vector import check_fits

        steers: list[Steer] = []
        warnings: list[str] = []
        for active in vectors:
            vector = self._vector(active.path)
            warnings += check_fits(vector, loaded.fingerprint, allow_other_model=True)
            if warning := legacy_bos_warning(vector, loaded.tokenizer):
                warnings.append(warning)
            steers.append(
                Steer(
                    vector,
                    active.coeff if active.enabled else 0.0,
                    mode=active.mode,
                    at_layer=active.at_layer,
                    profile=active.profile,
                    strength=active.strength if active.enabled else None,
                )
            )
        return steers, warnings

    def _generate(self, job: Job, request: GenerateRequest) -> None:
        from engine.generation import generate
        from engine.steering import SteeringPlan

        loaded = self._need_model()
        steers, warnings = self._steers(loaded, request.vectors)
        # Row 0 is the unsteered pane, row 1 the steered one: one batch, so both share the seed.
        plan = SteeringPlan([[], steers])
        job.take_live_changes()  # values queued before the plan existed are in the request already
        changes: list[LiveChange] = []
        last_step = -1

        def on_token(event: TokenEvent) -> None:
            nonlocal last_step
            if event.step != last_step:
                if self.pace_s and last_step >= 0:
                    time.sleep(self.pace_s)
                last_step = event.step
            for index, value in job.take_live_changes().items():
                plan.set_coefficient(1, index, value)
                change = LiveChange(step=event.step + 1, index=index, value=value)
                changes.append(change)
                job.coefficient_applied.emit(change)
            if event.text or event.kl is not None:
                job.token.emit(event)

        result = generate(
            loaded,
            request.prompt,
            plan,
            request.sampling,
            cancel=job.cancel,
            on_token=on_token,
            chat=request.chat,
            effect_rows=[1] if request.effect else (),  # KL against an unsteered shadow on the same text
        )
        job.done.emit(GenerationOutcome(result=result, live_changes=changes, warnings=warnings))
        if result.cancelled:
            raise CancelledError("stopped")

    def _chat(self, job: Job, request: ChatRequest) -> None:
        """One assistant turn: the conversation rendered with the chat template, one steered row."""
        from engine.chat import render_chat
        from engine.generation import generate

        loaded = self._need_model()
        steers, _ = self._steers(loaded, request.vectors)
        rendered = render_chat(loaded.tokenizer, request.system, request.turns)

        def on_token(event: TokenEvent) -> None:
            if self.pace_s:
                time.sleep(self.pace_s)
            if event.text:
                job.token.emit(event)

        result = generate(loaded, rendered, [steers], request.sampling, cancel=job.cancel, on_token=on_token)
        job.done.emit(GenerationOutcome(result=result, live_changes=[]))
        if result.cancelled:
            raise CancelledError("stopped")

    def _sweep(self, job: Job, request: SweepRequest) -> None:
        from engine.experiments.sweep import SweepResult, run_sweep

        loaded = self._need_model()
        full = request.spec
        full.validate()
        # One layer per run_sweep call, so the plot can fill in live, layer by layer.
        chunks: list[list[int] | None] = [None] if full.layers is None else [[l] for l in full.layers]
        cells: list = []
        seconds = 0.0
        result = SweepResult(spec=full, cells=[], model=loaded.info.source)
        for k, layers in enumerate(chunks):

            def progress(done: int, total: int, k: int = k) -> None:
                job.progress.emit((k * 1000 + (1000 * done) // max(total, 1), 1000 * len(chunks)))

            part = run_sweep(
                loaded, dataclasses.replace(full, layers=layers), progress=progress, cancel=job.cancel
            )
            cells.extend(part.cells)
            seconds += part.seconds
            result = SweepResult(
                spec=full, cells=list(cells), cancelled=part.cancelled, seconds=seconds, model=part.model
            )
            job.partial.emit(result)
            if job.cancel.is_set():
                break
        job.done.emit(result)
        if job.cancel.is_set():
            raise CancelledError("stopped")

    def _suggest(self, job: Job, request: SuggestRequest) -> None:
        """Suggest settings; a stopped search reports nothing (a partial search's answer is not the answer)."""
        from engine.experiments.suggest import suggest

        loaded = self._need_model()
        state: dict[str, Any] = {"done": 0, "total": 1, "line": ""}

        def progress(done: int, total: int) -> None:
            state.update(done=done, total=total)
            job.progress.emit((done, total, state["line"]))

        def log(line: str) -> None:
            state["line"] = line
            job.progress.emit((state["done"], state["total"], line))

        try:
            found = suggest(loaded, request.spec, log=log, progress=progress, cancel=job.cancel)
        except ActAddError:
            if job.cancel.is_set():  # "cancelled before any setting was measured"
                raise CancelledError("stopped") from None
            raise
        if job.cancel.is_set():
            raise CancelledError("stopped")
        job.done.emit(found)
