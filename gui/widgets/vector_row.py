"""`VectorRow`: one active vector of the Generate tab, with its live coefficient slider."""

from __future__ import annotations

import itertools

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.library import VectorEntry
from engine.vector import MODES
from gui.jobs import ActiveVector
from gui.panels.common import double_spin

MODE_TIPS = {
    "front": "ActAdd: add c·vector at the first prompt positions only (the paper); live changes can't act on it",
    "all": "Add c·direction at every position, prompt and generated (CAA / repeng style)",
    "generated": "Add c·direction only at generated positions",
    "ablate": "Remove the component along the direction (c = 1: fully)",
}
SLIDER_STEPS = 10  # slider ticks per unit of coefficient
_ids = itertools.count(1)


class VectorRow(QFrame):
    """One active vector: enable box, coefficient slider + field, layer and mode."""

    # (vector id, effective coefficient: the value, or 0 when disabled); the id addresses the vector in a
    # running generation, whatever rows are added or removed around it
    coefficient_changed = Signal(int, float)
    remove_requested = Signal()

    def __init__(self, entry: VectorEntry, depth: int, other_model: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.entry = entry
        self.vector_id = next(_ids)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.enabled = QCheckBox(entry.key)
        self.enabled.setChecked(True)
        self.enabled.setToolTip("Include this vector in the steered pane (toggling works live)")
        if other_model:
            self.enabled.setText(f"{entry.key} ⚠")
            self.enabled.setToolTip(other_model)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setToolTip("Coefficient c: how strongly the vector is added (negative: the opposite way)")
        self.spin = double_spin(-1000.0, 1000.0, "Coefficient c, typed exactly", decimals=1, step=0.5)
        limit = max(10.0, 3.0 * abs(entry.default_coeff))
        self.slider.setRange(int(-limit * SLIDER_STEPS), int(limit * SLIDER_STEPS))
        self.layer = QSpinBox()
        self.layer.setToolTip("The layer the vector is added at (a single-layer vector can be moved)")
        if len(entry.layers) == 1:
            self.layer.setRange(0, max(0, depth - 1))
            self.layer.setValue(entry.layers[0])
        else:
            self.layer.setEnabled(False)
            self.layer.setSpecialValueText(f"{entry.layers[0]}–{entry.layers[-1]}")
            self.layer.setToolTip("A multi-layer vector acts at all of its layers")
        self.mode = QComboBox()
        for mode in MODES:
            self.mode.addItem(mode)
            self.mode.setItemData(self.mode.count() - 1, MODE_TIPS[mode], Qt.ItemDataRole.ToolTipRole)
        if not entry.is_positional:  # a [hidden] direction has no positions to put at the front
            self.mode.model().item(0).setEnabled(False)
        self.mode.setCurrentText(entry.default_mode)
        self.mode.setToolTip(MODE_TIPS[entry.default_mode])
        self.mode.currentTextChanged.connect(lambda m: self.mode.setToolTip(MODE_TIPS[m]))
        remove = QToolButton()
        remove.setText("✕")
        remove.setToolTip("Remove from the active vectors")
        remove.clicked.connect(self.remove_requested)

        self.slider.valueChanged.connect(self._slider_moved)
        self.spin.valueChanged.connect(self._spin_changed)
        self.enabled.toggled.connect(lambda _: self._emit_coefficient())
        self.set_coefficient(entry.default_coeff)

        top = QHBoxLayout()
        top.addWidget(self.enabled, 1)
        top.addWidget(QLabel("layer"))
        top.addWidget(self.layer)
        top.addWidget(self.mode)
        top.addWidget(remove)
        bottom = QHBoxLayout()
        bottom.addWidget(QLabel("c"))
        bottom.addWidget(self.slider, 1)
        bottom.addWidget(self.spin)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addLayout(bottom)

    def coefficient(self) -> float:
        return self.spin.value()

    def effective_coefficient(self) -> float:
        return self.spin.value() if self.enabled.isChecked() else 0.0

    def set_coefficient(self, value: float) -> None:
        self.spin.setValue(value)

    @Slot(int)
    def _slider_moved(self, position: int) -> None:
        value = position / SLIDER_STEPS
        if abs(value - self.spin.value()) > 1e-9:
            self.spin.setValue(value)

    @Slot(float)
    def _spin_changed(self, value: float) -> None:
        position = round(value * SLIDER_STEPS)
        if position > self.slider.maximum() or position < self.slider.minimum():
            limit = abs(position)
            self.slider.setRange(-limit, limit)
        self.slider.blockSignals(True)
        self.slider.setValue(position)
        self.slider.blockSignals(False)
        self._emit_coefficient()

    def _emit_coefficient(self) -> None:
        self.coefficient_changed.emit(self.vector_id, self.effective_coefficient())

    def set_streaming(self, streaming: bool) -> None:
        """Mode and layer shape the steering plan: they can't change while it runs."""
        self.mode.setEnabled(not streaming)
        self.layer.setEnabled(not streaming and len(self.entry.layers) == 1)

    def active_vector(self) -> ActiveVector:
        at_layer = None
        if len(self.entry.layers) == 1 and self.layer.value() != self.entry.layers[0]:
            at_layer = self.layer.value()
        return ActiveVector(
            path=str(self.entry.path),
            name=self.entry.key,
            coeff=self.coefficient(),
            mode=self.mode.currentText(),
            at_layer=at_layer,
            enabled=self.enabled.isChecked(),
            id=self.vector_id,
            method=self.entry.method,
            layers=list(self.entry.layers),
        )
