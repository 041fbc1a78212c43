"""The model worker: one `QObject` on one `QThread` owns the model, the tokenizer and all torch work.

Qt's worker-object pattern (see the QThread documentation): `WorkerController` owns the thread, creates a
parentless `ModelWorker`, moves it to the thread and talks to it only through queued signals. The worker's
signals follow superqt's `WorkerBaseSignals` names (started, token, finished, errored, aborted) and carry a
job kind ("load", "capture", "generate", "sweep", "unload"). Every exception inside a job is caught and
emitted as `errored` with the engine's user-facing message, so the thread never dies silently.

Two things cross threads without the event loop, both thread-safe by construction:
- stop: the controller sets the running job's `threading.Event` (generation reads it once per token,
  sweeps once per batch, and model loads are waited on in slices of 50 ms);
- live steering: `set_live_coefficient` queues a value that the worker applies with
  `SteeringPlan.set_coefficient` between two tokens, on its own thread, so the GUI thread never touches
  a tensor.

Closing: `shutdown()` cancels everything, quits the thread and waits up to a second. A model load or a
capture runs in a daemon thread that the worker merely waits on, so it can be abandoned at once: its result
is dropped (a stopped capture saves nothing), and the next job waits until it has really ended.

Library chores (listing, rename, combine, import/export) are short and independent of the model; they run
on Qt's global thread pool through `TaskRunner`, so they never queue behind a long generation.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal, Slot

from engine.errors import ActAddError, CancelledError
from engine.generation import SamplingConfig, TokenEvent
from engine.pairs import PromptPair

log = logging.getLogger(__name__)

# Threads whose shutdown timed out; kept referenced so Qt never destroys a running QThread.
_ORPHANS: list[tuple[QThread, QObject]] = []


# ---- requests (plain data, built by the panels) ---------------------------------------------------------
@dataclass
class LoadRequest:
    source: str  # a folder, a cached hub id, or "demo"
    quantize: str = "none"  # none | 8bit | 4bit
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    trust_remote_code: bool = False


@dataclass
class CaptureRequest:
    method: str  # actadd | mean-diff | pca
    layers: list[int]
    name: str
    library_root: str
    positive: str = ""  # actadd: p+
    negative: str = ""  # actadd: p-
    pairs: list[PromptPair] = field(default_factory=list)  # mean-diff / pca
    tags: tuple[str, ...] = ()
    notes: str = ""
    default_coeff: float | None = None  # None: the method's default
    collection: str = ""
    overwrite: bool = False


@dataclass
class ActiveVector:
    """One vector of the generate panel's list; its index in the list is its steer index on row 1."""

    path: str
    name: str
    coeff: float
    mode: str | None = None  # None: the vector's default mode
    at_layer: int | None = None  # move a single-layer vector to another layer
    enabled: bool = True  # disabled vectors stay in the plan at coefficient 0, so they can be enabled live


@dataclass
class GenerateRequest:
    prompt: str
    vectors: list[ActiveVector]
    sampling: SamplingConfig
    chat: bool = False
    effect: bool = False  # per-token KL of the steered row against the unsteered row


@dataclass
class SweepRequest:
    vector_path: str
    coeffs: list[float]
    layers: list[int] | None  # None: the vector's own layers
    prompts: list[str]
    metric: str  # target-words | sentiment | target-prob | perplexity
    targets: list[str] = field(default_factory=list)
    reference_text: str = ""
    samples_per_prompt: int = 1
    sampling: SamplingConfig = field(default_factory=SamplingConfig.paper)
    mode: str | None = None
    allow_other_model: bool = False


# ---- results ------------------------------------------------------------------------------------------
@dataclass
class TokenDelta:
    row: int  # 0: unsteered pane, 1: steered pane
    text: str
    step: int
    kl: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class LiveChange:
    step: int  # the first generated token (0-based) that the new value steers
    index: int  # steer index in the request's vector list
    value: float


@dataclass
class GenerationOutcome:
    texts: list[str]  # per row
    finish_reasons: list[str]
    n_tokens: list[int]
    seconds: float
    tokens_per_second: float
    cancelled: bool
    live_changes: list[LiveChange]


@dataclass
class CaptureOutcome:
    path: str
    name: str
    method: str
    layers: list[int]
    shape: list[int]


class Cancelled(Exception):
    """A job was stopped by the user or by shutdown."""


# ---- the worker -----------------------------------------------------------------------------------------
def default_torch_threads() -> int:
    """Leave one core to the GUI thread: oversubscribed BLAS threads stall the event loop badly."""
    if env := os.environ.get("ACTADD_TORCH_THREADS"):
        return max(1, int(env))
    return max(1, (os.cpu_count() or 2) - 1)


class ModelWorker(QObject):
    """Lives on the worker thread. Slots are called through queued signals from `WorkerController`."""

    started = Signal(str)  # kind
    token = Signal(object)  # TokenDelta
    finished = Signal(str)  # kind; always the last signal of a job
    errored = Signal(str, str)  # kind, readable message
    aborted = Signal(str)  # kind (stopped by the user)
    load_progress = Signal(str, float)  # stage, fraction in [0, 1]
    model_loaded = Signal(object, object)  # ModelInfo, (ModelFingerprint, a tokenizer copy for previews)
    model_unloaded = Signal()
    capture_progress = Signal(int, int)  # prompts done, total (mean-diff and PCA)
    capture_done = Signal(object)  # CaptureOutcome
    generation_done = Signal(object)  # GenerationOutcome (also on stop, with cancelled=True)
    coefficient_applied = Signal(object)  # LiveChange
    sweep_progress = Signal(int, int)  # done, total
    sweep_partial = Signal(object)  # SweepResult with the layers finished so far
    sweep_done = Signal(object)  # the engine's SweepResult (cancelled=True after a stop)
    memory = Signal(dict)  # engine.memory_report()

    def __init__(self):
        super().__init__()
        self.loaded = None  # engine LoadedModel, touched only on this thread
        self.pace_s = 0.0  # minimum seconds per generated token (slow motion for demos and tests)
        self._shutdown = threading.Event()
        self._live_lock = threading.Lock()
        self._live_pending: dict[int, float] = {}
        self._vector_cache: dict[str, tuple[float, object]] = {}
        self._threads_set = False
        self._straggler: threading.Thread | None = None  # an abandoned load or capture still running
        self.original_threads: int | None = None  # torch's thread count before this worker changed it

    # ---- called from other threads (thread-safe, no event loop needed) ---------------------------------
    def request_shutdown(self) -> None:
        self._shutdown.set()

    def queue_live_coefficient(self, index: int, value: float) -> None:
        with self._live_lock:
            self._live_pending[index] = float(value)

    # ---- plumbing -----------------------------------------------------------------------------------------
    def _setup_thread(self) -> None:
        if not self._threads_set:
            import torch

            self.original_threads = torch.get_num_threads()
            torch.set_num_threads(default_torch_threads())
            self._threads_set = True

    def _run(self, kind: str, cancel: threading.Event | None, job: Callable[[], None]) -> None:
        """Run one job with the started/errored/aborted/finished protocol."""
        self._setup_thread()
        self.started.emit(kind)
        try:
            if self._shutdown.is_set() or (cancel is not None and cancel.is_set()):
                raise Cancelled
            self._wait_for_straggler(cancel)
            job()
        except Cancelled:
            self.aborted.emit(kind)
        except ActAddError as exc:
            self.errored.emit(kind, str(exc))
        except MemoryError:
            self.errored.emit(kind, "out of memory; try a smaller model, 4-bit quantization or fewer tokens")
        except Exception as exc:  # a bug, still shown rather than killing the thread
            import torch

            if isinstance(exc, torch.OutOfMemoryError):  # CUDA's is a RuntimeError, not a MemoryError
                self.errored.emit(
                    kind, "out of memory; try a smaller model, 4-bit quantization or fewer tokens"
                )
            else:
                log.error("worker job %s failed:\n%s", kind, traceback.format_exc())
                self.errored.emit(kind, f"unexpected error ({type(exc).__name__}): {exc}")
        finally:
            self.finished.emit(kind)

    def _interruptible(self, fn: Callable[[], object], cancel: threading.Event) -> object:
        """Run `fn` in a daemon thread and wait for it in 50 ms slices; on cancel, abandon it.

        `from_pretrained` cannot be interrupted, so a load that is stopped or outlived by the window simply
        finishes in the background (or dies with the process) and its result is dropped.
        """
        self._wait_for_straggler(cancel)
        box: dict[str, object] = {}

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=target, name="actadd-worker-job", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.05)
            if cancel.is_set() or self._shutdown.is_set():
                self._straggler = thread
                raise Cancelled
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]

    def _wait_for_straggler(self, cancel: threading.Event | None) -> None:
        """Let an abandoned load or capture finish before the next job uses the model (interruptibly)."""
        straggler = self._straggler
        while straggler is not None and straggler.is_alive():
            straggler.join(0.05)
            if (cancel is not None and cancel.is_set()) or self._shutdown.is_set():
                raise Cancelled
        self._straggler = None

    def _need_model(self):
        if self.loaded is None or self.loaded.model is None:
            raise ActAddError("no model is loaded; load one in the Model tab first")
        return self.loaded

    def _vector(self, path: str):
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

    # ---- slots --------------------------------------------------------------------------------------------
    @Slot(object, object)
    def load(self, request: LoadRequest, cancel: threading.Event) -> None:
        def job() -> None:
            from engine.models import load_model, resolve_source, unload

            def progress(stage: str, fraction: float) -> None:
                if cancel.is_set() or self._shutdown.is_set():
                    raise Cancelled  # stops the load at the next stage boundary
                self.load_progress.emit(stage, fraction)

            folder = resolve_source(request.source)  # readable errors for a missing folder or id
            # Free the old model first (two may not fit), unless load_model is sure to refuse the new one.
            if self.loaded is not None and (folder / "config.json").is_file():
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
                ),
                cancel,
            )
            import copy

            self.loaded = loaded
            # The GUI previews tokenization on its own copy: a fast tokenizer is not safe to share.
            self.model_loaded.emit(loaded.info, (loaded.fingerprint, copy.deepcopy(loaded.tokenizer)))
            self._emit_memory()

        self._run("load", cancel, job)

    @Slot()
    def unload(self) -> None:
        def job() -> None:
            from engine.models import unload

            unload(self.loaded)
            self.loaded = None
            self._vector_cache.clear()
            self.model_unloaded.emit()
            self._emit_memory()

        self._run("unload", None, job)

    @Slot()
    def report_memory(self) -> None:
        try:
            self._emit_memory()
        except Exception:  # a failed memory probe is not worth a dialog
            log.debug("memory report failed", exc_info=True)

    @Slot(object, object)
    def capture(self, request: CaptureRequest, cancel: threading.Event) -> None:
        def job() -> None:
            from engine.capture import capture_actadd, capture_mean_diff, capture_pca
            from engine.library import Library

            loaded = self._need_model()
            library = Library(request.library_root)
            library.path_of(request.name, request.collection)  # refuse a bad name before the work
            extra = {"name": request.name, "tags": request.tags, "notes": request.notes}
            if request.default_coeff is not None:
                extra["default_coeff"] = request.default_coeff
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
                    progress=self.capture_progress.emit,
                    cancel=cancel,
                    **extra,
                )
            else:
                raise ActAddError(f"unknown capture method {request.method!r}")
            # A capture on a big model can take seconds: wait for it interruptibly. A stopped capture
            # saves nothing; a mean-diff or PCA capture stops after its current batch, an ActAdd one
            # after its single forward pass, and the next job waits for that.
            try:
                vector = self._interruptible(work, cancel)
            except CancelledError as exc:
                raise Cancelled from exc
            if cancel.is_set() or self._shutdown.is_set():
                raise Cancelled
            path = library.save(
                vector, request.name, collection=request.collection, overwrite=request.overwrite
            )
            self.capture_done.emit(
                CaptureOutcome(
                    path=str(path),
                    name=request.name,
                    method=vector.method,
                    layers=vector.layer_ids,
                    shape=vector.shape,
                )
            )

        self._run("capture", cancel, job)

    @Slot(object, object)
    def generate(self, request: GenerateRequest, cancel: threading.Event) -> None:
        def job() -> None:
            from engine.generation import generate
            from engine.steering import Steer, SteeringPlan
            from engine.vector import check_fits

            loaded = self._need_model()
            steers = []
            for active in request.vectors:
                vector = self._vector(active.path)
                check_fits(vector, loaded.fingerprint, allow_other_model=True)
                coeff = active.coeff if active.enabled else 0.0
                steers.append(Steer(vector, coeff, mode=active.mode, at_layer=active.at_layer))
            # Row 0 is the unsteered pane, row 1 the steered one: one batch, so both share the seed.
            plan = SteeringPlan([[], steers])
            with self._live_lock:
                self._live_pending.clear()
            changes: list[LiveChange] = []
            last_step = [-1]

            def on_token(event: TokenEvent) -> None:
                if event.step != last_step[0]:
                    if self.pace_s and last_step[0] >= 0:
                        time.sleep(self.pace_s)
                    last_step[0] = event.step
                with self._live_lock:
                    pending, self._live_pending = self._live_pending, {}
                for index, value in pending.items():
                    if 0 <= index < len(steers):
                        plan.set_coefficient(1, index, value)
                        change = LiveChange(step=event.step + 1, index=index, value=value)
                        changes.append(change)
                        self.coefficient_applied.emit(change)
                if event.text or event.kl is not None:
                    self.token.emit(
                        TokenDelta(
                            row=event.row, text=event.text, step=event.step, kl=event.kl, top=event.top
                        )
                    )

            result = generate(
                loaded,
                request.prompt,
                plan,
                request.sampling,
                cancel=cancel,
                on_token=on_token,
                chat=request.chat,
                effect_reference_row=0 if request.effect else None,
            )
            self.generation_done.emit(
                GenerationOutcome(
                    texts=[r.text for r in result.rows],
                    finish_reasons=[r.finish_reason for r in result.rows],
                    n_tokens=[len(r.token_ids) for r in result.rows],
                    seconds=result.seconds,
                    tokens_per_second=result.tokens_per_second,
                    cancelled=result.cancelled,
                    live_changes=changes,
                )
            )
            if result.cancelled:
                raise Cancelled

        self._run("generate", cancel, job)

    @Slot(object, object)
    def sweep(self, request: SweepRequest, cancel: threading.Event) -> None:
        def job() -> None:
            from engine.experiments.sweep import SweepResult, SweepSpec, run_sweep

            loaded = self._need_model()

            from engine.experiments.defaults import measure_for_vector

            def spec_for(layers: list[int] | None) -> SweepSpec:
                vector = self._vector(request.vector_path)
                measure = measure_for_vector(vector)
                return SweepSpec(
                    vector=vector,
                    sentiment_sign=measure.sign if measure and measure.metric == "sentiment" else 1,
                    coeffs=list(request.coeffs),
                    layers=layers,
                    prompts=list(request.prompts),
                    metric=request.metric,
                    targets=list(request.targets),
                    reference_text=request.reference_text,
                    samples_per_prompt=request.samples_per_prompt,
                    sampling=request.sampling,
                    mode=request.mode,
                    allow_other_model=request.allow_other_model,
                )

            full = spec_for(request.layers)
            full.validate()
            # One layer per run_sweep call, so the plot can fill in live, layer by layer.
            chunks: list[list[int] | None] = (
                [None] if request.layers is None else [[l] for l in request.layers]
            )
            cells: list = []
            seconds = 0.0
            result = SweepResult(spec=full, cells=[], model=loaded.info.source)
            for k, layers in enumerate(chunks):

                def progress(done: int, total: int, k: int = k) -> None:
                    self.sweep_progress.emit(k * 1000 + (1000 * done) // max(total, 1), 1000 * len(chunks))

                part = run_sweep(loaded, spec_for(layers), progress=progress, cancel=cancel)
                cells.extend(part.cells)
                seconds += part.seconds
                result = SweepResult(
                    spec=full, cells=list(cells), cancelled=part.cancelled, seconds=seconds, model=part.model
                )
                self.sweep_partial.emit(result)
                if cancel.is_set():
                    break
            self.sweep_done.emit(result)
            if cancel.is_set():
                raise Cancelled

        self._run("sweep", cancel, job)


# ---- the controller (GUI thread) ------------------------------------------------------------------------
class WorkerController(QObject):
    """Owns the worker thread. Re-emits the worker's signals on the GUI thread, so any slot is safe."""

    started = Signal(str)
    token = Signal(object)
    finished = Signal(str)
    errored = Signal(str, str)
    aborted = Signal(str)
    load_progress = Signal(str, float)
    model_loaded = Signal(object, object)
    model_unloaded = Signal()
    capture_progress = Signal(int, int)
    capture_done = Signal(object)
    generation_done = Signal(object)
    coefficient_applied = Signal(object)
    sweep_progress = Signal(int, int)
    sweep_partial = Signal(object)
    sweep_done = Signal(object)
    memory = Signal(dict)
    busy_changed = Signal(bool)

    _load = Signal(object, object)
    _unload = Signal()
    _capture = Signal(object, object)
    _generate = Signal(object, object)
    _sweep = Signal(object, object)
    _report_memory = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("actadd-model-worker")
        self.worker = ModelWorker()  # no parent: it is moved to the thread
        self.worker.moveToThread(self._thread)
        self._thread.finished.connect(self.worker.deleteLater)
        for name in (
            "started",
            "token",
            "finished",
            "errored",
            "aborted",
            "load_progress",
            "model_loaded",
            "model_unloaded",
            "capture_progress",
            "capture_done",
            "generation_done",
            "coefficient_applied",
            "sweep_progress",
            "sweep_partial",
            "sweep_done",
            "memory",
        ):
            getattr(self.worker, name).connect(getattr(self, name))  # queued: self lives on the GUI thread
        self._load.connect(self.worker.load)
        self._unload.connect(self.worker.unload)
        self._capture.connect(self.worker.capture)
        self._generate.connect(self.worker.generate)
        self._sweep.connect(self.worker.sweep)
        self._report_memory.connect(self.worker.report_memory)
        self.started.connect(self._on_started)
        self.finished.connect(self._on_finished)
        self._cancels: list[threading.Event] = []  # of jobs queued or running, oldest first
        self._running: str | None = None
        self._pending = 0
        self._closed = False
        self.model_info = None  # ModelInfo of the loaded model (plain data, safe on this thread)
        self.model_loaded.connect(self._remember_model)
        self.model_unloaded.connect(self._forget_model)
        self._thread.start()

    # ---- state ----------------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._pending > 0

    @property
    def running(self) -> str | None:
        """The kind of the job running now, if any."""
        return self._running

    @Slot(object, object)
    def _remember_model(self, info, payload) -> None:
        self.model_info = info

    @Slot()
    def _forget_model(self) -> None:
        self.model_info = None

    @Slot(str)
    def _on_started(self, kind: str) -> None:
        self._running = kind

    @Slot(str)
    def _on_finished(self, kind: str) -> None:
        self._running = None
        if self._cancels:
            self._cancels.pop(0)
        self._pending = max(0, self._pending - 1)
        if self._pending == 0:
            self.busy_changed.emit(False)

    def _submit(self, signal, request=None) -> threading.Event:
        cancel = threading.Event()
        if self._closed:
            cancel.set()
            return cancel
        self._cancels.append(cancel)
        self._pending += 1
        if self._pending == 1:
            self.busy_changed.emit(True)
        if request is None:
            signal.emit()
        else:
            signal.emit(request, cancel)
        return cancel

    # ---- requests ---------------------------------------------------------------------------------------------
    def load(self, request: LoadRequest) -> threading.Event:
        return self._submit(self._load, request)

    def unload(self) -> None:
        self._submit(self._unload)

    def capture(self, request: CaptureRequest) -> threading.Event:
        return self._submit(self._capture, request)

    def generate(self, request: GenerateRequest) -> threading.Event:
        return self._submit(self._generate, request)

    def sweep(self, request: SweepRequest) -> threading.Event:
        return self._submit(self._sweep, request)

    def request_memory(self) -> None:
        """Ask for fresh memory figures; ignored while a job runs (the job reports at its end)."""
        if not self.busy and not self._closed:
            self._report_memory.emit()

    def stop(self) -> None:
        """Stop the running job and drop the queued ones (each still reports aborted and finished)."""
        for cancel in self._cancels:
            cancel.set()

    def set_live_coefficient(self, index: int, value: float) -> None:
        """Change the steered row's coefficient `index` from the next token of the running generation."""
        if self._running == "generate":
            self.worker.queue_live_coefficient(index, value)

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


# ---- short jobs on the thread pool --------------------------------------------------------------------------
class _Job(QRunnable):
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
        self._runner.delivered.emit(self._id, ok, value)


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
        self._pool.start(_Job(self, task_id, fn))

    @Slot(int, bool, object)
    def _deliver(self, task_id: int, ok: bool, value: object) -> None:
        on_done, on_error = self._callbacks.pop(task_id, (None, None))
        if on_done is not None:
            (on_done if ok else on_error)(value)
        if not self._callbacks:
            self.idle.emit()

    def wait(self, timeout_ms: int = 1000) -> bool:
        return self._pool.waitForDone(timeout_ms)
