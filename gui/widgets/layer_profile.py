"""`LayerProfile`: the typical residual-stream norm entering each layer of the loaded model, as bars.

Measured on the worker (`NormsRequest`, one forward pass over neutral text, cached per model by the
engine); the chosen capture layers are drawn orange, and clicking a bar picks that layer.
"""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from engine.residual_norms import ResidualNorms
from gui.context import AppContext, ModelHandle
from gui.jobs import Job, NormsRequest


class LayerProfile(QGroupBox):
    """The "Layer profile (residual norm)" box: the bar chart, a Measure button and a note."""

    layer_clicked = Signal(int)  # a bar was clicked: capture at this layer

    def __init__(self, context: AppContext, parent: QWidget | None = None):
        super().__init__("Layer profile (residual norm)", parent)
        self._ctx = context
        self.profile: ResidualNorms | None = None  # the loaded model's layer profile, once measured
        self.job: Job | None = None  # the measurement in flight
        self._model: ModelHandle | None = None  # the model the profile was measured on
        self._chosen: set[int] = set()

        self.figure = Figure(figsize=(4, 1.8), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(150)
        self.canvas.setToolTip(
            "Typical residual-stream norm entering each layer, on neutral text; the chosen layers are "
            "orange. Click a bar to capture at that layer."
        )
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.button = QPushButton("Measure layer profile")
        self.button.setToolTip(
            "One forward pass over a neutral text on the worker (cached per model afterwards)"
        )
        self.button.clicked.connect(self.measure)
        self.note = QLabel("Load a model, then measure its layer profile.")
        self.note.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.canvas)
        row = QHBoxLayout()
        row.addWidget(self.button)
        row.addWidget(self.note, 1)
        layout.addLayout(row)
        self._draw()

    def set_model(self, handle: ModelHandle | None, visible: bool) -> None:
        """A model was loaded (or unloaded): the old profile goes; measured at once if the tab is shown."""
        if handle is self._model:
            return
        self.profile, self._model = None, None
        self.note.setText(
            "Measure the layer profile of this model."
            if handle
            else "Load a model, then measure its layer profile."
        )
        self.button.setEnabled(handle is not None and self.job is None)
        self._draw()
        if handle is not None and visible:
            self.measure()

    def measure_if_missing(self) -> None:
        """Measured when first needed: the tab is shown with a model that has no profile yet."""
        if self._ctx.model is not None and self._model is not self._ctx.model:
            self.measure()

    @Slot()
    def measure(self) -> None:
        if self._ctx.model is None or self.job is not None:
            return
        self.button.setEnabled(False)
        self.note.setText("Measuring…")
        model = self._ctx.model
        job = self.job = self._ctx.controller.submit(NormsRequest())
        job.done.connect(lambda norms: self._on_measured(model, norms))
        job.failed.connect(lambda message: self.note.setText("Could not measure: " + message))
        job.aborted.connect(lambda: self.note.setText("Measurement stopped."))
        job.finished.connect(self._on_finished)

    def _on_measured(self, model: ModelHandle | None, norms: ResidualNorms) -> None:
        if model is not self._ctx.model:  # another model was loaded meanwhile
            return
        self.profile, self._model = norms, model
        where = "from the cache" if norms.cached else f"measured on {norms.n_tokens} tokens"
        self.note.setText(f"{len(norms.norms)} layers, {where}.")
        self._draw()

    @Slot()
    def _on_finished(self) -> None:
        self.job = None
        self.button.setEnabled(self._ctx.model is not None)

    def set_chosen(self, layers: list[int]) -> None:
        """The layers the capture will use: their bars are orange."""
        self._chosen = set(layers)
        self._draw()

    def _draw(self) -> None:
        fig = self.figure
        fig.clear()
        ax = fig.add_subplot()
        if self.profile is None:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "no profile yet", ha="center", va="center", color="grey")
        else:
            norms = self.profile.norms
            colors = ["tab:orange" if layer in self._chosen else "tab:blue" for layer in range(len(norms))]
            ax.bar(range(len(norms)), norms, color=colors)
            ax.set_xlabel("layer", fontsize=8)
            ax.set_ylabel("‖resid_pre‖", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_ylim(bottom=0)
        self.canvas.draw_idle()

    def colors(self) -> list[str]:
        """The bars' colours, layer by layer (orange: chosen), as drawn."""
        from matplotlib.colors import to_hex

        axes = self.figure.get_axes()
        return [to_hex(bar.get_facecolor()) for bar in axes[0].patches] if axes else []

    def _on_click(self, event) -> None:
        if self.profile is None or event.inaxes is None or event.xdata is None:
            return
        layer = round(event.xdata)
        if 0 <= layer < len(self.profile.norms):
            self.layer_clicked.emit(layer)


__all__ = ["LayerProfile"]
