"""The Library tab's left column: the filter row over the vector table, and the notes under it (files the
listing skipped, the library folder).

The rows are `gui.item_models.VectorTableModel` behind a `VectorFilterProxy`; this widget owns the view's
side: which tags the tag filter offers, selecting a row by its key, and which keys are visible and selected.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QWidget,
)

from engine.library import Listing, VectorEntry
from engine.vector import METHODS
from gui.item_models import ENTRY_ROLE, Fit, VectorFilterProxy, VectorTableModel
from gui.widgets.buttons import push_button
from gui.widgets.filtered_table import lay_out_filtered_table

SHOWN_BAD_FILES = 3  # the unreadable files named under the table; the rest are counted


class LibraryTable(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter by name, tag, notes, prompts…")
        self.search.setClearButtonEnabled(True)
        self.search.setToolTip(
            "Every word must appear somewhere in the vector's name, tags, notes or prompts"
        )
        self.method = QComboBox()
        self.method.addItem("all methods", "")
        for method in METHODS:
            self.method.addItem(method, method)
        self.method.setToolTip("Show only vectors made this way")
        self.tag = QComboBox()
        self.tag.addItem("all tags", "")
        self.tag.setToolTip("Show only vectors with this tag")
        self.fits_only = QCheckBox("fits the model")
        self.fits_only.setToolTip("Hide vectors that can't be used on the loaded model")
        self.refresh_button = push_button("Refresh", "Re-read the library folder")

        self.model = VectorTableModel(self)
        self.proxy = VectorFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(5, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setAlternatingRowColors(True)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.search.textChanged.connect(self.proxy.set_text)
        self.method.currentIndexChanged.connect(lambda _: self.proxy.set_method(self.method.currentData()))
        self.tag.currentIndexChanged.connect(lambda _: self.proxy.set_tag(self.tag.currentData() or ""))
        self.fits_only.toggled.connect(self.proxy.set_compatible_only)
        self.root_label = QLabel("")
        self.root_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.bad_label = QLabel("")
        self.bad_label.setWordWrap(True)
        self.bad_label.setStyleSheet("color: #a33;")

        lay_out_filtered_table(
            self,
            (self.search, self.method, self.tag, self.fits_only, self.refresh_button),
            self.table,
            (self.bad_label, self.root_label),
        )

    def show_listing(self, listing: Listing, fits: dict[str, Fit]) -> None:
        """Show `listing` (the selection is cleared); the tag filter offers its tags and keeps its choice."""
        self.model.set_entries(listing.entries, fits)
        tags = sorted({t for e in listing.entries for t in e.tags}, key=str.casefold)
        current_tag = self.tag.currentData()
        self.tag.blockSignals(True)
        self.tag.clear()
        self.tag.addItem("all tags", "")
        for tag in tags:
            self.tag.addItem(tag, tag)
        index = self.tag.findData(current_tag) if current_tag else 0
        self.tag.setCurrentIndex(max(0, index))
        self.tag.blockSignals(False)
        bad = listing.bad_files
        if bad:
            shown = "; ".join(f"{Path(b.path).name}: {b.reason}" for b in bad[:SHOWN_BAD_FILES])
            more = f" (+{len(bad) - SHOWN_BAD_FILES} more)" if len(bad) > SHOWN_BAD_FILES else ""
            self.bad_label.setText(f"Skipped {len(bad)} unreadable file(s): {shown}{more}")
        else:
            self.bad_label.setText("")
        self.table.resizeColumnsToContents()

    def show_root(self, root: object) -> None:
        self.root_label.setText(f"Library: {root}")

    def select(self, key: str) -> bool:
        """Select the row of `key` alone and scroll to it; False when it is not listed or filtered out."""
        row = self.model.row_of(key)
        if row < 0:
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():
            return False
        self.table.selectionModel().select(
            index,
            QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
        )
        self.table.scrollTo(index)
        return True

    def selected_entries(self) -> list[VectorEntry]:
        rows = {i.row() for i in self.table.selectionModel().selectedRows()}
        return [self.proxy.index(r, 0).data(ENTRY_ROLE) for r in sorted(rows)]

    def selected_keys(self) -> list[str]:
        return [e.key for e in self.selected_entries()]

    def visible_keys(self) -> list[str]:
        return [self.proxy.index(r, 0).data(ENTRY_ROLE).key for r in range(self.proxy.rowCount())]
