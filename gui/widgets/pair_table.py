"""`PairTable`: the Capture tab's editable table of contrastive prompt pairs (mean-diff and PCA).

Rows are added, removed, edited in place or imported from a JSONL/CSV file (read off the GUI thread by
`engine.pairs.read_pairs`). A pair with one side empty is refused by the engine's one rule
(`engine.pairs.check_pair`), named by the row number the table shows.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from engine.pairs import PromptPair, check_pair, read_pairs
from gui.context import AppContext
from gui.item_models import PairTableModel


class PairTable(QWidget):
    """The table, its Add / Remove / Import buttons and a live count of the pairs."""

    imported = Signal()  # pairs were read from a file into the table

    def __init__(self, context: AppContext, parent: QWidget | None = None):
        super().__init__(parent)
        self._ctx = context
        self.model = PairTableModel(parent=self)
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.view.setToolTip("Contrastive pairs; double-click a cell to edit it")
        add_row = QPushButton("Add pair")
        add_row.setToolTip("Append an empty pair to edit")
        add_row.clicked.connect(lambda: self.model.insertRows(self.model.rowCount(), 1))
        remove_row = QPushButton("Remove")
        remove_row.setToolTip("Remove the selected pairs")
        remove_row.clicked.connect(self._remove_selected)
        import_button = QPushButton("Import JSONL/CSV…")
        import_button.setToolTip(
            'A .jsonl with {"positive": ..., "negative": ...} per line, or a 2-column CSV'
        )
        import_button.clicked.connect(self._choose_file)
        self.note = QLabel("0 pairs")

        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)  # a page of the panel's stack: its margins are the page's
        column.addWidget(self.view, 1)
        buttons = QHBoxLayout()
        for widget in (add_row, remove_row, import_button):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        buttons.addWidget(self.note)
        column.addLayout(buttons)
        for signal in (
            self.model.rowsInserted,
            self.model.rowsRemoved,
            self.model.modelReset,
            self.model.dataChanged,  # every edit of a cell, not only added or removed rows
        ):
            signal.connect(self._update_count)

    @Slot()
    def _update_count(self) -> None:
        pairs = self.model.pairs()
        half = len(self.half_filled_rows())
        text = f"{len(pairs)} pair{'s' if len(pairs) != 1 else ''}"
        if half:
            text += f" ({half} half-filled)"
        self.note.setText(text)

    def pair_rows(self) -> list[tuple[int, PromptPair]]:
        """(the row number the table shows, its pair) for every row with any text; blank rows are skipped."""
        model = self.model
        rows = []
        for row in range(model.rowCount()):
            positive, negative = (str(model.data(model.index(row, c)) or "") for c in (0, 1))
            if positive.strip() or negative.strip():
                number = int(model.headerData(row, Qt.Orientation.Vertical) or row + 1)
                rows.append((number, PromptPair(positive, negative)))
        return rows

    def half_filled_rows(self) -> list[int]:
        """The shown row numbers of pairs with one side empty (or only spaces)."""
        return [n for n, p in self.pair_rows() if not (p.positive.strip() and p.negative.strip())]

    def check_pairs(self) -> None:
        """Refuse a half-filled row, naming it as the table numbers it (the engine's one rule)."""
        for number, pair in self.pair_rows():
            blanked = PromptPair(
                pair.positive.strip() and pair.positive, pair.negative.strip() and pair.negative
            )
            check_pair(blanked, f"pair row {number}")

    @Slot()
    def _remove_selected(self) -> None:
        rows = sorted({i.row() for i in self.view.selectionModel().selectedIndexes()}, reverse=True)
        for row in rows:
            self.model.removeRows(row, 1)

    @Slot()
    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import prompt pairs", str(Path.home()), "Pair files (*.jsonl *.json *.csv);;All files (*)"
        )
        if path:
            self.import_pairs(path)

    def import_pairs(self, path: str | Path) -> None:
        def done(pairs) -> None:
            self.model.set_pairs(pairs)
            self.imported.emit()
            self._ctx.show_status(f"Imported {len(pairs)} pairs from {Path(path).name}")

        # Reading a file is I/O: off the GUI thread.
        self._ctx.tasks.submit(
            lambda: read_pairs(Path(path)),
            done,
            lambda message: self._ctx.report_error("Import pairs", message),
        )


__all__ = ["PairTable"]
