"""The Sweep tab's "Suggest settings": one click finds a working (layer, coefficient) for the chosen vector.

The search is the engine's (`engine.experiments.suggest`, the same one as `sweep --suggest`): a coarse layer
sweep at coefficients scaled to the model's residual norm, then a refinement at the best layers, stopping
early once the answer is clear. It runs on the worker as a `SuggestRequest`; Stop abandons it and suggests
nothing. The result names the layer, coefficient and mode, the score with its 95% interval beside the
unsteered score, whether the setting stays coherent and whether the effect is clear of sampling noise, and
the cost in forward passes.

"Apply to Generate" hands the setting to the Generate tab (`AppContext.apply_steering`). When the search
steered a vector the library does not hold as is (it re-captured the vector at another layer from its
stored prompts), that vector is saved first, as `NAME-L<layer>-suggested` beside the original, so Generate
steers exactly what was measured.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QGroupBox, QLabel, QPushButton, QVBoxLayout, QWidget

from engine.experiments.suggest import Suggestion
from gui.context import AppContext, SteeringChoice
from gui.item_models import OK
from gui.jobs import SuggestRequest
from gui.widgets.job_controls import JobControls

TITLE = "Suggest settings"
IDLE_TEXT = "Let the engine search layers and coefficients for the chosen vector and metric."


def describe_suggestion(found: Suggestion) -> str:
    """The suggestion as the box shows it: the setting, its score against no steering, its verdict, its cost."""
    coherent = (
        "coherent text"
        if found.coherent
        else "NOT coherent: no setting tried stayed in bounds (the mildest one is shown)"
    )
    clear = (
        "a clear effect (its interval lies above the unsteered one)"
        if found.clear_effect
        else "no clear effect (within sampling noise of the unsteered text)"
    )
    return (
        f"Suggested: layer {found.layer}, c = {found.coeff:g}, mode {found.mode} "
        f"(strength {found.strength:g}n: {found.strength:g} typical residual norms)\n"
        f"{found.metric} {found.score:.2f} (95% CI {found.ci_low:.2f}–{found.ci_high:.2f}); "
        f"unsteered {found.baseline:.2f} (95% CI {found.baseline_ci[0]:.2f}–{found.baseline_ci[1]:.2f})\n"
        f"{coherent}; {clear}\n"
        f"Cost: {found.forward_passes} forward passes for {len(found.tried)} settings "
        f"(the full grid: {found.grid_forward_passes})" + ("; stopped early" if found.stopped_early else "")
    )


class SuggestBox(QGroupBox):
    """Suggest, Stop, progress, the result and "Apply to Generate"; `build_request` reads the tab's form."""

    def __init__(
        self, context: AppContext, build_request: Callable[[], SuggestRequest], parent: QWidget | None = None
    ):
        super().__init__(TITLE, parent)
        self._ctx = context
        self._build_request = build_request
        self.suggestion: Suggestion | None = None  # the last finished search's answer
        self._request: SuggestRequest | None = None  # ...and its request
        self._pending: SteeringChoice | None = None  # a saved suggestion waiting for the listing
        self.controls = JobControls(
            TITLE,
            "A coarse layer sweep, then a coefficient refinement at the best layers, on the worker. It uses the "
            "vector, metric, targets, mode, prompts, samples, tokens and seed above; with 'Sweep layers' on, "
            "it searches that layer range, otherwise layers spread over the model's depth",
            "Stop the search; nothing is suggested",
        )
        self.suggest_button, self.stop_button = self.controls.run_button, self.controls.stop_button
        self.progress = self.controls.progress
        self.suggest_button.clicked.connect(self.run)
        self.result_label = QLabel(IDLE_TEXT)
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.apply_button = QPushButton("Apply to Generate")
        self.apply_button.setToolTip("Steer the Generate tab with the suggested layer, coefficient and mode")
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self.apply_to_generate)
        layout = QVBoxLayout(self)
        layout.addWidget(self.controls)
        layout.addWidget(self.result_label)
        layout.addWidget(self.apply_button)
        context.library_changed.connect(self._apply_pending)

    def set_ready(self, ready: bool) -> None:
        self.controls.set_ready(ready)

    def is_running(self) -> bool:
        return self.controls.is_running()

    # ---- the search ---------------------------------------------------------------------------------------
    @Slot()
    def run(self) -> None:
        job = self.controls.launch(self._ctx, self._build_request, TITLE)
        if job is None:
            return
        assert isinstance(job.request, SuggestRequest)
        self._request, self.suggestion = job.request, None
        self.apply_button.setEnabled(False)
        self.result_label.setText("Searching…")
        self._ctx.show_status("Suggesting settings…")
        job.progress.connect(self._on_progress)
        job.done.connect(self._on_done)
        job.failed.connect(self._on_failed)
        job.aborted.connect(self._on_aborted)
        job.finished.connect(self._on_finished)

    @Slot()
    def stop(self) -> None:
        self.controls.stop()

    @Slot(object)
    def _on_progress(self, progress: tuple) -> None:
        line = progress[2] if len(progress) > 2 else ""
        self.result_label.setText("Searching…" + (f"\nlast: {line}" if line else ""))

    @Slot(object)
    def _on_done(self, found: Suggestion) -> None:
        self.suggestion = found
        self.result_label.setText(describe_suggestion(found))
        self.controls.complete()
        self.apply_button.setEnabled(True)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.result_label.setText(f"The search failed: {message}")
        self._ctx.report_error(TITLE, message)

    @Slot()
    def _on_aborted(self) -> None:
        self.result_label.setText("Stopped: nothing suggested.")

    @Slot()
    def _on_finished(self) -> None:
        self._ctx.show_status(
            "Settings suggested" if self.suggestion is not None else "No settings suggested"
        )

    # ---- apply --------------------------------------------------------------------------------------------
    @Slot()
    def apply_to_generate(self) -> None:
        found, request = self.suggestion, self._request
        if found is None or request is None:
            return
        entry = self._ctx.entry(request.vector_key)
        if entry is None:
            self._ctx.show_status(f"{request.vector_key} is no longer in the library")
            return
        stored = request.spec.vector
        # Steered as stored: moved to the layer (no prompts to re-capture from), or its own single layer
        # re-captured on the model it was captured on (the same tensor).
        if found.vector is stored or (
            stored.layer_ids == [found.layer] and self._ctx.fit(entry).status == OK
        ):
            self._send(SteeringChoice(entry.key, str(entry.path), found.coeff, found.layer, found.mode))
            return
        library, name = self._ctx.library, f"{entry.name}-L{found.layer}-suggested"
        vector = found.vector.replace(default_coeff=found.coeff, default_mode=found.mode)

        def save():
            return library.save(vector, name, collection=entry.collection, overwrite=True)

        def saved(path) -> None:
            self._pending = SteeringChoice(
                library.key_of(path), str(path), found.coeff, found.layer, found.mode
            )
            self._apply_pending()

        self._ctx.run_library_task(save, saved, title=TITLE)

    @Slot()
    def _apply_pending(self) -> None:
        """Send a saved suggestion once the library listing holds it (Generate takes listed vectors)."""
        pending = self._pending
        if pending is not None and self._ctx.entry(pending.vector_key) is not None:
            self._pending = None
            self._send(pending)

    def _send(self, choice: SteeringChoice) -> None:
        self._ctx.apply_steering.emit(choice)
        self._ctx.show_status(
            f"Generate: {choice.vector_key} at layer {choice.layer}, c = {choice.coeff:g}, mode {choice.mode}"
        )
