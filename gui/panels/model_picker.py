"""The Model tab's picker: the models already on this machine (`engine.model_store.list_models`), filterable.

Listing reads headers only, but it walks several stores on disk, so it runs on the task pool
(`gui.tasks.TaskRunner`), never on the GUI thread. Rows that can't be opened stay visible, greyed, with the
reason as their tooltip; double-click or Open on an openable row asks the panel to load it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
    Slot,
)
from PySide6.QtGui import QBrush, QColor, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QWidget,
)

from engine.model_stats import format_megabytes
from engine.model_store import ModelEntry, list_models
from gui.tasks import TaskRunner
from gui.widgets.filtered_table import lay_out_filtered_table

COLUMNS = ("Name", "Source", "Architecture", "Parameters", "Quantization", "Size")
GREY = QBrush(QColor(128, 128, 128))
_Index = QModelIndex | QPersistentModelIndex


def format_params(n: int | None) -> str:
    if not n:
        return "–"
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


class ModelTableModel(QAbstractTableModel):
    """`ModelEntry` rows; Qt.UserRole gives the sort key, Qt.UserRole + 1 the entry itself."""

    ENTRY_ROLE = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.entries: list[ModelEntry] = []

    def set_entries(self, entries: list[ModelEntry]) -> None:
        self.beginResetModel()
        self.entries = list(entries)
        self.endResetModel()

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self.entries)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        entry = self.entries[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (
                entry.name,
                entry.source,
                entry.architecture or "–",
                format_params(entry.n_params),
                entry.quantization or "–",
                format_megabytes(entry.size_bytes / 2**20),
            )[column]
        if role == Qt.ItemDataRole.UserRole:  # numeric columns sort by number, not by text
            values = (entry.name, entry.source, entry.architecture or "", entry.n_params or 0)
            return (*values, entry.quantization or "", entry.size_bytes)[column]
        if role == Qt.ItemDataRole.ToolTipRole:
            return entry.path if entry.openable else f"Can't be opened: {entry.reason}"
        if role == Qt.ItemDataRole.ForegroundRole and not entry.openable:
            return GREY
        if role == self.ENTRY_ROLE:
            return entry
        return None


class ModelPicker(QWidget):
    """Filter box + table of the models found; `open_requested(path)` when the user opens an openable row."""

    open_requested = Signal(str)
    listed = Signal(int)  # number of rows after a refresh
    message = Signal(str)  # something for the status bar

    def __init__(self, tasks: TaskRunner, parent=None) -> None:
        super().__init__(parent)
        self._tasks = tasks
        # list_models' keyword arguments (the tests point it at fake stores); empty: the real stores
        self.list_kwargs: dict[str, Any] = {}
        self.lister: Callable[..., list[ModelEntry]] = list_models
        self._generation = 0
        self._listed_once = False

        self.model = ModelTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setFilterKeyColumn(-1)  # match any column: name, source, architecture, quantization…
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)

        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter: name, source, architecture, quantization…")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Look again for models on this computer")
        self.refresh_button.clicked.connect(self.refresh)
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Load the selected model")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self.open_selected)
        self.summary = QLabel("")

        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.setToolTip("")
        self.table.doubleClicked.connect(self._open_index)
        self.table.selectionModel().selectionChanged.connect(self._on_selection)

        lay_out_filtered_table(
            self, (self.filter, self.refresh_button, self.open_button), self.table, (self.summary,)
        )

    # ---- listing ---------------------------------------------------------------------------------------------
    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._listed_once:  # lazily: only once the user can see the picker
            self._listed_once = True
            self.refresh()

    @Slot()
    def refresh(self) -> None:
        """List the models on a pool thread; the newest refresh wins."""
        self._listed_once = True
        self._generation += 1
        generation = self._generation
        kwargs, lister = dict(self.list_kwargs), self.lister
        self.summary.setText("Looking for models…")
        self.refresh_button.setEnabled(False)

        def done(entries: object) -> None:
            if generation != self._generation:
                return
            self.refresh_button.setEnabled(True)
            self.model.set_entries(list(entries))  # type: ignore[call-overload]
            rows = self.model.entries
            closed = sum(not e.openable for e in rows)
            self.summary.setText(
                f"{len(rows)} model(s) found" + (f", {closed} can't be opened (greyed)" if closed else "")
            )
            self._on_selection()
            self.listed.emit(len(rows))

        def failed(text: str) -> None:
            if generation == self._generation:
                self.refresh_button.setEnabled(True)
                self.summary.setText(f"Could not list the models: {text}")

        self._tasks.submit(lambda: lister(**kwargs), done, failed)

    # ---- opening --------------------------------------------------------------------------------------------
    def entry_at(self, row: int) -> ModelEntry:
        """The entry shown at `row` of the (filtered, sorted) table."""
        return self.proxy.index(row, 0).data(ModelTableModel.ENTRY_ROLE)

    def visible_names(self) -> list[str]:
        return [self.entry_at(r).name for r in range(self.proxy.rowCount())]

    def selected(self) -> ModelEntry | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].data(ModelTableModel.ENTRY_ROLE) if rows else None

    @Slot()
    def _on_selection(self, *_: object) -> None:
        entry = self.selected()
        self.open_button.setEnabled(entry is not None and entry.openable)
        self.open_button.setToolTip(
            "Load the selected model"
            if entry is None or entry.openable
            else f"Can't be opened: {entry.reason}"
        )

    @Slot()
    def open_selected(self) -> None:
        entry = self.selected()
        if entry is not None:
            self._open(entry)

    @Slot(QModelIndex)
    def _open_index(self, index: QModelIndex) -> None:
        self._open(index.siblingAtColumn(0).data(ModelTableModel.ENTRY_ROLE))

    def _open(self, entry: ModelEntry) -> None:
        if not entry.openable:
            self.message.emit(f"{entry.name} can't be opened: {entry.reason}")
            return
        self.open_requested.emit(entry.path)
