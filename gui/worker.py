"""The model worker: the one `QObject` on the worker thread that owns the model, the tokenizer and all
torch work, with one handler per request type (`gui.jobs`).

The thread side of a job (the started / done | failed | aborted / finished protocol, Stop, the model lock,
abandoned loads and captures) is `gui.job_runner.JobRunner`, its base. A handler reads its request, calls
the engine and reports through the job's own signals (`Job.progress`, `token`, `partial`, `done`...); it
raises `CancelledError` when stopped. A new request is one handler method plus one line in `_handlers`.

Live steering: `Job.set_coefficient` queues a value that `_generate` applies with
`SteeringPlan.set_coefficient` between two tokens, on this thread, so the GUI thread never touches a tensor.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal, Slot

from engine.errors import ActAddError, CancelledError
from engine.generation import TokenEvent
from engine.models import LoadedModel
from engine.steering import Steer
from engine.vector import SteeringVector
from gui.job_runner import JobRunner
from gui.jobs import (
    ActiveVector,
    CaptureOutcome,
    CaptureRequest,
    ChatRequest,
    GenerateRequest,
    Job,
    LiveChange,
    LoadRequest,
    NormsRequest,
    SuggestRequest,
    SweepRequest,
    UnloadRequest,
)

log = logging.getLogger(__name__)


class ModelWorker(JobRunner):
    """Lives on the worker thread; `run` is called through a queued signal from the controller."""

    # The model is app-wide state, not one job's: these stay on the worker.
    model_loaded = Signal(object, object)  # ModelInfo, (ModelFingerprint, a tokenizer copy for previews)
    model_unloaded = Signal()
    memory = Signal(dict)  # engine.memory_report()

    def __init__(self) -> None:
        super().__init__()
        self.loaded: LoadedModel | None = None  # touched only on this thread
        self.pace_s = 0.0  # minimum seconds per generated token (slow motion for demos and tests)
        self._vector_cache: dict[str, tuple[float, SteeringVector]] = {}
        self._handlers = {
            LoadRequest: self._load,
            UnloadRequest: self._unload,
            NormsRequest: self._norms,
            CaptureRequest: self._capture,
            GenerateRequest: self._generate,
            ChatRequest: self._chat,
            SweepRequest: self._sweep,
            SuggestRequest: self._suggest,
        }

    # ---- shared by the handlers -----------------------------------------------------------------------------------------
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
        if warnings:
            job.warnings.emit(warnings)
        job.take_live_changes()  # values queued before the plan existed are in the request already
        last_step = -1

        def on_token(event: TokenEvent) -> None:
            nonlocal last_step
            if event.step != last_step:
                if self.pace_s and last_step >= 0:
                    time.sleep(self.pace_s)
                last_step = event.step
            for index, value in job.take_live_changes().items():
                plan.set_coefficient(1, index, value)
                job.coefficient_applied.emit(LiveChange(step=event.step + 1, index=index, value=value))
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
        job.done.emit(result)
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
        job.done.emit(result)
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
