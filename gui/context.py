"""What the panels share: the worker controller, the library, the loaded model's plain-data handle.

Panels never talk to each other directly: they listen to this object's signals (model changed, library
listing refreshed) and report errors and status through it, so the main window decides how to show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Signal, Slot

from engine.fingerprint import ModelFingerprint
from engine.library import Compatibility, Library, Listing, VectorEntry
from engine.models import ModelInfo
from gui.controller import WorkerController
from gui.item_models import INCOMPATIBLE, OK, OTHER_MODEL, Fit
from gui.tasks import TaskRunner

_FIT_OF = {
    Compatibility.OK: OK,
    Compatibility.OTHER_MODEL: OTHER_MODEL,
    Compatibility.INCOMPATIBLE: INCOMPATIBLE,
}


@dataclass
class ModelHandle:
    """The loaded model as the GUI thread sees it: plain data and a private tokenizer copy, no tensors."""

    info: ModelInfo
    fingerprint: ModelFingerprint
    tokenizer: object  # a copy for token previews; the worker keeps its own


@dataclass(frozen=True)
class SteeringChoice:
    """A steering setting chosen elsewhere (a sweep cell) for the Generate tab to take over."""

    vector_key: str  # the library entry's key
    vector_path: str
    coeff: float
    layer: int | None = None  # None: the vector's own layer(s)
    mode: str | None = None  # None: the vector's default mode
    # False when the sweep re-captured the vector at `layer` from its stored prompts and that layer is not
    # one of the vector's own: moving the stored vector there (at_layer) is then a different vector.
    exact: bool = True


class AppContext(QObject):
    model_changed = Signal(object)  # ModelHandle or None
    library_changed = Signal()  # a fresh listing is in `listing`
    library_root_changed = Signal(str)
    error = Signal(str, str)  # title, readable message
    status = Signal(str)  # a status-bar message
    use_vector = Signal(object)  # VectorEntry: add it to the generate panel
    # Library chores that panels holding a vector must follow (emitted when the file operation is done,
    # before the refreshed listing arrives):
    vector_moved = Signal(str, str, str)  # old key, new key, new path: a rename or a move to a collection
    vector_deleted = Signal(str, str)  # key, trash id
    vector_restored = Signal(str, str)  # trash id, the path it is back at
    residual_norms_changed = Signal(object)  # list[float] | None: typical resid_pre norm per layer
    apply_steering = Signal(object)  # SteeringChoice: set the generate panel's vector, layer, c and mode

    def __init__(self, settings: QSettings, library_root: str | Path | None = None, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.controller = WorkerController(self)
        self.tasks = TaskRunner(self)
        self.library = Library(library_root)
        self.listing = Listing(entries=[], bad_files=[])
        self.fits: dict[str, Fit] = {}
        self.model: ModelHandle | None = None
        # The loaded model's typical resid_pre norm per layer ([n_layers]); None until measured (or if
        # the measurement failed: strengths are then shown as raw coefficients only).
        self.residual_norms: list[float] | None = None
        self._listing_generation = 0
        self._norms_for = ""  # the fingerprint id whose residual norms are being measured
        self.controller.model_loaded.connect(self._on_model_loaded)
        self.controller.model_unloaded.connect(self._on_model_unloaded)

    # ---- model ----------------------------------------------------------------------------------------------
    @Slot(object, object)
    def _on_model_loaded(self, info, payload) -> None:
        fingerprint, tokenizer = payload
        self.model = ModelHandle(info=info, fingerprint=fingerprint, tokenizer=tokenizer)
        self._update_fits()
        self._set_residual_norms(None)
        self.model_changed.emit(self.model)
        self.library_changed.emit()
        self._measure_residual_norms(fingerprint)

    @Slot()
    def _on_model_unloaded(self) -> None:
        self.model = None
        self._update_fits()
        self._set_residual_norms(None)
        self.model_changed.emit(None)
        self.library_changed.emit()

    def _measure_residual_norms(self, fingerprint: ModelFingerprint) -> None:
        """Ask the worker for the model's residual norms (measured once per model, then cached on disk)."""
        from gui.jobs import NormsRequest

        self._norms_for = fingerprint.id
        job = self.controller.submit(NormsRequest())
        # bound slots of this QObject: Qt queues the worker thread's emissions to the GUI thread
        job.done.connect(self._on_residual_norms)
        job.failed.connect(self._on_residual_norms_failed)

    @Slot(object)
    def _on_residual_norms(self, result) -> None:
        model = self.model
        if result is not None and model is not None and model.fingerprint.id == self._norms_for:
            self._set_residual_norms([float(x) for x in result.norms])

    @Slot(str)
    def _on_residual_norms_failed(self, message: str) -> None:
        self.show_status(f"Couldn't measure the residual norms ({message}); strengths are shown as raw c")

    def _set_residual_norms(self, norms: list[float] | None) -> None:
        if norms != self.residual_norms:
            self.residual_norms = norms
            self.residual_norms_changed.emit(norms)

    # ---- library ----------------------------------------------------------------------------------------
    def set_library_root(self, root: str | Path) -> None:
        self.library = Library(root)
        self.listing = Listing(entries=[], bad_files=[])
        self.library_root_changed.emit(str(self.library.root))
        self.refresh_library()

    def refresh_library(self) -> None:
        """List the library on a pool thread; `library_changed` fires when the listing is in."""
        self._listing_generation += 1
        generation = self._listing_generation
        library = self.library

        def done(listing) -> None:
            if generation == self._listing_generation:  # a newer refresh (or another root) wins
                self.listing = listing
                self._update_fits()
                self.library_changed.emit()

        self.tasks.submit(library.list, done, lambda message: self.report_error("Library", message))

    def _update_fits(self) -> None:
        fits = {}
        if self.model is not None:
            for entry in self.listing.entries:
                status, reason = self.library.compatibility(entry, self.model.fingerprint)
                fits[entry.key] = Fit(_FIT_OF[status], reason)
        self.fits = fits

    def fit(self, entry: VectorEntry) -> Fit:
        """Whether `entry` fits the loaded model (the engine's one rule), for any entry, listed or not."""
        if self.model is None:
            return Fit(OK, "no model loaded")
        status, reason = self.library.compatibility(entry, self.model.fingerprint)
        return Fit(_FIT_OF[status], reason)

    def entry(self, key: str):
        return next((e for e in self.listing.entries if e.key == key), None)

    def run_library_task(self, fn, done=None, title: str = "Library", refresh: bool = True) -> None:
        """Run a library chore on the pool; refresh the listing afterwards, report errors readably."""

        def on_done(value) -> None:
            if refresh:
                self.refresh_library()
            if done is not None:
                done(value)

        self.tasks.submit(fn, on_done, lambda message: self.report_error(title, message))

    # ---- feedback -------------------------------------------------------------------------------------
    def report_error(self, title: str, message: str) -> None:
        self.error.emit(title, message)

    def show_status(self, message: str) -> None:
        self.status.emit(message)
