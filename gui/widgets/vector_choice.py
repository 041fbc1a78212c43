"""Choosing a library vector for the loaded model: the one way a combo box lists the vectors that fit.

Generate's "Add" box and the Sweep tab's vector box use it.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox

from gui.context import AppContext
from gui.item_models import INCOMPATIBLE, OTHER_MODEL

OTHER_MODEL_MARK = "  (other model)"


def fill_with_fitting_vectors(combo: QComboBox, context: AppContext) -> None:
    """List in `combo` the library's vectors that can steer the loaded model, by key (the item data), each
    with why it fits as its tooltip; one made on another model of the same shape is marked. The current
    choice stays chosen while it is still listed."""
    current = combo.currentData()
    combo.clear()
    for entry in context.listing.entries:
        fit = context.fit(entry)
        if fit.status == INCOMPATIBLE:
            continue
        combo.addItem(entry.key + (OTHER_MODEL_MARK if fit.status == OTHER_MODEL else ""), entry.key)
        combo.setItemData(combo.count() - 1, fit.reason, Qt.ItemDataRole.ToolTipRole)
    if current is not None and (index := combo.findData(current)) >= 0:
        combo.setCurrentIndex(index)


__all__ = ["fill_with_fitting_vectors"]
