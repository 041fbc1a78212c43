"""`LayerRange`: "from [a] to [b] of 0–N", the decoder layers a capture reads, always a valid range.

A single-layer range moves with its first layer ("from 6" with "to 7" left behind silently made a 2-layer
vector); a wider range keeps its last layer, clamped so it never ends before it starts. `count` says in
words what the range makes.
"""

from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSpinBox, QWidget


class LayerRange(QWidget):
    changed = Signal()  # either end moved (also while the other end follows)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.first = QSpinBox()
        self.first.setToolTip("The first decoder layer to capture at (resid_pre of that block)")
        self.last = QSpinBox()
        self.last.setToolTip("The last layer; equal to the first for a single-layer vector")
        self._previous_first = 0
        self.first.valueChanged.connect(self._on_first_changed)
        self.last.valueChanged.connect(self._on_last_changed)
        self.first.valueChanged.connect(self.changed)
        self.last.valueChanged.connect(self.changed)
        self._depth = QLabel("(no model)")
        self.count = QLabel("")  # placed by the panel, under the range
        self.count.setToolTip("How many layers the captured vector will have")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.first)
        layout.addWidget(QLabel("to"))
        layout.addWidget(self.last)
        layout.addWidget(self._depth)
        layout.addStretch(1)

    @Slot(int)
    def _on_first_changed(self, first: int) -> None:
        last = self.last.value()
        if last == self._previous_first or last < first:
            last = first
        self._previous_first = first
        self.last.setValue(last)
        self._update_count()

    @Slot(int)
    def _on_last_changed(self, last: int) -> None:
        if last < self.first.value():
            self.first.setValue(last)  # moves "to" along with it (a single layer)
        self._update_count()

    def _update_count(self) -> None:
        first, last = self.first.value(), self.last.value()
        n = last - first + 1
        self.count.setText(
            f"→ a single-layer vector at layer {first}"
            if n == 1
            else f"→ a {n}-layer vector (layers {first}–{last}, each its own direction)"
        )

    def layers(self) -> list[int]:
        return list(range(self.first.value(), self.last.value() + 1))

    def set_layers(self, first: int, last: int | None = None) -> None:
        self.first.setValue(first)
        self.last.setValue(last if last is not None else first)
        self._update_count()

    def set_depth(self, depth: int) -> None:
        """The loaded model's number of layers (0: no model); a fresh range starts a quarter of the way in."""
        for spin in (self.first, self.last):
            spin.setRange(0, max(0, depth - 1))
        if not depth:
            self._depth.setText("(no model)")
            return
        self._depth.setText(f"of 0–{depth - 1}")
        if self.first.value() == 0 and self.last.value() == 0 and depth > 2:
            self.set_layers(min(depth - 1, max(1, depth // 4)))


__all__ = ["LayerRange"]
