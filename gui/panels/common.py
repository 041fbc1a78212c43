"""Widget-building helpers the panels share: a margin-free column, the panel's two-part splitter, a
configured QDoubleSpinBox or QSpinBox, and a combo box of the library's vectors that can steer the model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QSpinBox, QSplitter, QVBoxLayout, QWidget

from gui.item_models import INCOMPATIBLE, OTHER_MODEL

if TYPE_CHECKING:
    from gui.context import AppContext


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


def fill_vector_choices(combo: QComboBox, context: AppContext) -> None:
    """Offer the listed vectors that can steer the loaded model (item data: the key; one captured on another
    model of the same shape is marked, and each says why in its tooltip); the current choice stays chosen."""
    current = combo.currentData()
    combo.clear()
    for entry in context.listing.entries:
        fit = context.fit(entry)
        if fit.status == INCOMPATIBLE:
            continue
        combo.addItem(entry.key + ("  (other model)" if fit.status == OTHER_MODEL else ""), entry.key)
        combo.setItemData(combo.count() - 1, fit.reason, Qt.ItemDataRole.ToolTipRole)
    if current is not None and (index := combo.findData(current)) >= 0:
        combo.setCurrentIndex(index)


__all__ = ["bare_column", "double_spin", "fill_vector_choices", "fill_with_splitter", "int_spin"]
