"""The requests the panels send to the model worker, and the `Job` that each request becomes.

Requests are plain data that carry the engine's own types as they are (`SamplingConfig`, `SweepSpec`,
`PromptPair`); results arrive as the engine's types too (`TokenEvent`, `GenerationResult`, `SweepResult`).
Only what the GUI adds is declared here: a vector of the Generate tab with its stable id, a live
coefficient change, and where a capture was saved.

A `Job` is one request in flight, like napari's `_qt/qthreading` workers: a `QObject` on the GUI thread
that owns its signals. The worker thread emits them (Qt queues each emission to the GUI thread), so a
panel connects to the job it submitted and never filters global signals by a job kind.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Signal

from engine.chat import ChatTurn
from engine.experiments.suggest import SuggestSpec
from engine.experiments.sweep import SweepSpec
from engine.generation import SamplingConfig
from engine.pairs import PromptPair


# ---- requests (plain data, built by the panels) ---------------------------------------------------------
@dataclass
class LoadRequest:
    source: str  # a folder, a cached hub id, or "demo"
    quantize: str = "none"  # none | 8bit | 4bit
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    trust_remote_code: bool = False


@dataclass
class UnloadRequest:
    pass


@dataclass
class NormsRequest:
    """Measure (or read from the cache) the loaded model's typical residual norm per layer
    (`engine.residual_norms`); the job's result is a `ResidualNorms`."""


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
    """One vector of the Generate tab; `id` addresses it in a running generation (live changes)."""

    path: str
    name: str
    coeff: float
    mode: str | None = None  # None: the vector's default mode
    at_layer: int | None = None  # move a single-layer vector to another layer
    enabled: bool = True  # disabled vectors stay in the plan at coefficient 0, so they can be enabled live
    id: int = 0  # stable while the panel shows the vector (VectorRow.vector_id)
    method: str = ""  # from its library entry, for the transcript
    layers: list[int] = field(default_factory=list)
    # Set when the row's slider is a normalised strength: `coeff` is then the raw c resolved from it
    # (engine.strength.resolve_strength), and `profile` holds a multi-layer vector's per-layer factors.
    strength: float | None = None
    profile: dict[int, float] | None = None


@dataclass
class GenerateRequest:
    prompt: str
    vectors: list[ActiveVector]
    sampling: SamplingConfig
    chat: bool = False
    effect: bool = False  # per-token KL of the steered row against the unsteered row

    def steer_index(self, vector_id: int) -> int | None:
        """The position of a vector in the steered row's plan, by its id."""
        return next((i for i, v in enumerate(self.vectors) if v.id == vector_id), None)


@dataclass
class ChatRequest:
    """One assistant turn of the Chat tab: the whole conversation so far is its prompt (engine/chat.py)."""

    system: str
    turns: list[ChatTurn]  # ends with the user's message
    vectors: list[ActiveVector]  # applied to every assistant turn; front starts at the last user message
    sampling: SamplingConfig


@dataclass
class SweepRequest:
    spec: SweepSpec  # the engine's sweep, vector included; `layers` are run one per call, live
    vector_path: str  # where the vector came from, for the exported script


@dataclass
class SuggestRequest:
    """Suggest settings (`engine.experiments.suggest`): the job's progress is (tokens done, the most the
    search can take, its latest line), its result a `Suggestion`."""

    spec: SuggestSpec  # the engine's search, vector included
    vector_key: str  # the library entry searched, for "Apply to Generate"
    vector_path: str


Request = (
    LoadRequest
    | UnloadRequest
    | NormsRequest
    | CaptureRequest
    | GenerateRequest
    | ChatRequest
    | SweepRequest
    | SuggestRequest
)


# ---- what the GUI adds to the engine's results -----------------------------------------------------------
@dataclass
class LiveChange:
    step: int  # the first generated token (0-based) that the new value steers
    index: int  # steer index in the request's vector list (what SteeringPlan.set_coefficient takes)
    value: float


@dataclass
class CaptureOutcome:
    path: str
    name: str
    method: str
    layers: list[int]
    shape: list[int]


# ---- a request in flight ------------------------------------------------------------------------------
KINDS = {
    LoadRequest: "load",
    UnloadRequest: "unload",
    NormsRequest: "norms",
    CaptureRequest: "capture",
    GenerateRequest: "generate",
    ChatRequest: "chat",
    SweepRequest: "sweep",
    SuggestRequest: "suggest",
}


class Job(QObject):
    """One submitted request. Signals, in order: `started`; then any of `progress` / `partial` /
    `warnings` / `token` / `coefficient_applied`; then `done` (its result), `failed` (a readable message)
    or `aborted`; and last `finished`, always. A stopped generation or sweep emits `done` with what it
    made so far, then `aborted`."""

    started = Signal()
    progress = Signal(object)  # load: (stage, fraction); capture, sweep: (done, total); suggest: (.., line)
    warnings = Signal(list)  # generate: readable warnings about the active vectors (BOS rule, other model)
    token = Signal(object)  # engine TokenEvent (generate, chat)
    coefficient_applied = Signal(object)  # LiveChange (generate), once the worker applied it
    partial = Signal(object)  # SweepResult with the layers finished so far (sweep)
    # load: ModelInfo; unload: None; norms: ResidualNorms; capture: CaptureOutcome;
    # generate, chat: engine GenerationResult; sweep: SweepResult; suggest: engine Suggestion
    done = Signal(object)
    failed = Signal(str)
    aborted = Signal()  # stopped by the user or by shutdown
    finished = Signal()

    def __init__(self, request: Request, parent: QObject | None = None):
        super().__init__(parent)
        self.request = request
        self.kind = KINDS[type(request)]  # a label for the status bar and the log, never a filter
        self.cancel = threading.Event()  # read by the engine between tokens / batches
        self._live_lock = threading.Lock()
        self._live_pending: dict[int, float] = {}  # steer index -> new coefficient

    def stop(self) -> None:
        self.cancel.set()

    def set_coefficient(self, vector_id: int, value: float) -> None:
        """Generate jobs: steer the vector `vector_id` with `value` from the next token on.

        Thread-safe: the worker takes the pending values between two tokens (`take_live_changes`)."""
        if isinstance(self.request, GenerateRequest):
            index = self.request.steer_index(vector_id)
            if index is not None:
                self.set_coefficient_at(index, value)

    def set_coefficient_at(self, index: int, value: float) -> None:
        """The same, by the vector's position in the request (scripts and tests)."""
        if isinstance(self.request, GenerateRequest) and 0 <= index < len(self.request.vectors):
            with self._live_lock:
                self._live_pending[index] = float(value)

    def take_live_changes(self) -> dict[int, float]:
        with self._live_lock:
            pending, self._live_pending = self._live_pending, {}
        return pending
