"""Widget-building helpers the panels share: a margin-free column, the panel's two-part splitter, a
configured QDoubleSpinBox or QSpinBox, and a combo box of the library's vectors that can steer the model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QDoubleSpinBox, QSpinBox, QSplitter, QVBoxLayout, QWidget

if TYPE_CHECKING:
    pass


def bare_column() -> tuple[QWidget, QVBoxLayout]:
    """A widget and its vertical layout, with no margins (for nesting inside a splitter or a page)."""
    widget = QWidget()
    layout = QVBoxLayout(widget)
    layout.setContentsMargins(0, 0, 0, 0)
    return widget, layout


def fill_with_splitter(
    panel: QWidget, first: QWidget, second: QWidget, stretch: tuple[int, int], sizes: list[int] | None = None
) -> QSplitter:
    """Lay `panel` out as one horizontal splitter holding `first` and `second`."""
    splitter = QSplitter()
    splitter.addWidget(first)
    splitter.addWidget(second)
    splitter.setStretchFactor(0, stretch[0])
    splitter.setStretchFactor(1, stretch[1])
    if sizes is not None:
        splitter.setSizes(sizes)
    layout = QVBoxLayout(panel)
    layout.addWidget(splitter)
    return splitter


def double_spin(
    low: float,
    high: float,
    tip: str,
    *,
    decimals: int = 2,
    step: float | None = None,
    value: float | None = None,
) -> QDoubleSpinBox:
    """A QDoubleSpinBox over [low, high] with a tooltip; `step` and `value` only when given."""
    spin = QDoubleSpinBox()
    spin.setRange(low, high)
    if step is not None:
        spin.setSingleStep(step)
    spin.setDecimals(decimals)
    if value is not None:
        spin.setValue(value)
    spin.setToolTip(tip)
    return spin


def int_spin(low: int, high: int, tip: str, *, value: int | None = None) -> QSpinBox:
    """A QSpinBox over [low, high] with a tooltip; `value` only when given."""
    spin = QSpinBox()
    spin.setRange(low, high)
    if value is not None:
        spin.setValue(value)
    spin.setToolTip(tip)
    return spin


__all__ = ["bare_column", "double_spin", "fill_with_splitter", "int_spin"]
