"""The layout of a table with its filters above it and its notes below it (the Library's vector table, the
Model tab's picker)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget


def lay_out_filtered_table(
    owner: QWidget, filters: Sequence[QWidget], table: QWidget, notes: Sequence[QWidget]
) -> None:
    """Lay `owner` out, margin-free, as a row of `filters` (the first one stretches) over `table` (which
    takes the spare height) over `notes`, one a line."""
    row = QHBoxLayout()
    row.addWidget(filters[0], 1)
    for widget in filters[1:]:
        row.addWidget(widget)
    layout = QVBoxLayout(owner)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addLayout(row)
    layout.addWidget(table, 1)
    for widget in notes:
        layout.addWidget(widget)
