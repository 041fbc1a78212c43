"""Qt Model/View models: the vector library table and the capture panel's pair table.

Both are checked with pytest-qt's `qtmodeltester`. `data()` returns None for any role it does not serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor, QPalette
from PySide6.QtWidgets import QApplication

from engine.pairs import PromptPair

_Index = QModelIndex | QPersistentModelIndex
_ROOT = QModelIndex()  # the invalid (root) index, as a default argument
ENTRY_ROLE = Qt.ItemDataRole.UserRole + 1  # the VectorEntry of a row
SORT_ROLE = Qt.ItemDataRole.UserRole + 2  # a sortable value (created time as ISO text, layer as int)
COMPAT_ROLE = Qt.ItemDataRole.UserRole + 3  # "ok" | "other-model" | "incompatible"

OK, OTHER_MODEL, INCOMPATIBLE = "ok", "other-model", "incompatible"


@dataclass(frozen=True)
class Fit:
    """How a library vector fits the loaded model."""

    status: str  # OK | OTHER_MODEL | INCOMPATIBLE
    reason: str = ""


def _layers_text(layers) -> str:
    layers = sorted(int(l) for l in (layers or []))
    if not layers:
        return ""
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}–{layers[-1]}"
    return ", ".join(str(l) for l in layers)


def _model_text(entry) -> str:
    fingerprint = getattr(entry, "fingerprint", None)
    if fingerprint is None:
        return "unknown"
    hint = getattr(fingerprint, "model_hint", "") or getattr(fingerprint, "architecture", "")
    return f"{hint} ({fingerprint.architecture}, d={fingerprint.hidden_size})" if hint else str(fingerprint)


class VectorTableModel(QAbstractTableModel):
    """One row per library vector; incompatible rows are greyed out, with the reason as tooltip."""

    COLUMNS = ("Name", "Method", "Layers", "Model", "Tags", "Created")
    TOOLTIPS = (
        "The vector's name in the library (collection/name)",
        "How it was captured: actadd (one prompt pair), mean-diff or pca (many pairs), combined, imported",
        "The decoder layers the vector is added at (resid_pre of these blocks)",
        "The model the vector was captured on",
        "Your tags",
        "When it was captured (UTC)",
    )

    def __init__(self, parent=None):
        super().__init__(parent)
        self._entries: list[Any] = []
        self._fits: dict[str, Fit] = {}

    # ---- content ------------------------------------------------------------------------------------------
    def set_entries(self, entries: list, fits: dict[str, Fit] | None = None) -> None:
        self.beginResetModel()
        self._entries = list(entries)
        self._fits = dict(fits or {})
        self.endResetModel()

    def entries(self) -> list:
        return list(self._entries)

    def entry(self, row: int):
        return self._entries[row] if 0 <= row < len(self._entries) else None

    def fit(self, entry) -> Fit:
        return self._fits.get(entry.key, Fit(OK))

    def row_of(self, key: str) -> int:
        return next((i for i, e in enumerate(self._entries) if e.key == key), -1)

    # ---- Qt overrides ---------------------------------------------------------------------------------------
    def rowCount(self, parent: _Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._entries)

    def columnCount(self, parent: _Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.TOOLTIPS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self._entries):
            return None
        entry = self._entries[index.row()]
        column = index.column()
        fit = self.fit(entry)
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(entry, column)
        if role == SORT_ROLE:
            if column == 2:
                return min(entry.layers) if entry.layers else -1
            return self._display(entry, column).lower()
        if role == Qt.ItemDataRole.ToolTipRole:
            if fit.status != OK:
                return fit.reason
            return entry.notes or None
        if role == Qt.ItemDataRole.ForegroundRole:
            if fit.status == INCOMPATIBLE:
                palette = QApplication.palette() if QApplication.instance() else QPalette()
                return QBrush(palette.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text))
            if fit.status == OTHER_MODEL and column == 3:
                return QBrush(QColor("#b26a00"))
            return None
        if role == ENTRY_ROLE:
            return entry
        if role == COMPAT_ROLE:
            return fit.status
        return None

    def _display(self, entry, column: int) -> str:
        if column == 0:
            return f"{entry.collection}/{entry.name}" if entry.collection else entry.name
        if column == 1:
            return entry.method
        if column == 2:
            return _layers_text(entry.layers)
        if column == 3:
            return _model_text(entry)
        if column == 4:
            return ", ".join(entry.tags)
        return (entry.created or "").replace("T", " ").removesuffix("+00:00")


class VectorFilterProxy(QSortFilterProxyModel):
    """Filters the vector table by free text (name, tags, notes, prompts) and by method."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._text = ""
        self._method = ""
        self._tag = ""
        self._compatible_only = False
        self.setSortRole(SORT_ROLE)
        self.setSortCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)

    def _refilter(self, change) -> None:
        """Apply `change` to the filter state; Qt 6.10 replaced invalidateFilter with begin/end calls."""
        if hasattr(self, "beginFilterChange"):
            self.beginFilterChange()
            change()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:  # Qt < 6.10
            change()
            self.invalidateFilter()

    def set_text(self, text: str) -> None:
        self._refilter(lambda: setattr(self, "_text", text.strip().lower()))

    def set_method(self, method: str) -> None:
        self._refilter(lambda: setattr(self, "_method", method))

    def set_tag(self, tag: str) -> None:
        self._refilter(lambda: setattr(self, "_tag", tag))

    def set_compatible_only(self, on: bool) -> None:
        self._refilter(lambda: setattr(self, "_compatible_only", on))

    def filterAcceptsRow(self, source_row: int, source_parent: _Index) -> bool:
        model = self.sourceModel()
        if not isinstance(model, VectorTableModel):
            return True
        entry = model.entry(source_row)
        if entry is None:
            return False
        if self._method and entry.method != self._method:
            return False
        if self._tag and self._tag not in entry.tags:
            return False
        if self._compatible_only and model.fit(entry).status == INCOMPATIBLE:
            return False
        if not self._text:
            return True
        haystack = " ".join(
            [
                entry.name,
                entry.collection,
                entry.method,
                " ".join(entry.tags),
                entry.notes or "",
                str(entry.prompts),
            ]
        ).lower()
        return all(word in haystack for word in self._text.split())


class PairTableModel(QAbstractTableModel):
    """Editable (positive, negative) prompt pairs for mean-diff and PCA capture."""

    COLUMNS = ("Positive (p+)", "Negative (p−)")

    def __init__(self, pairs: list[PromptPair] | None = None, parent=None):
        super().__init__(parent)
        self._rows: list[list[str]] = [[p.positive, p.negative] for p in pairs or []]

    def set_pairs(self, pairs: list[PromptPair]) -> None:
        self.beginResetModel()
        self._rows = [[p.positive, p.negative] for p in pairs]
        self.endResetModel()

    def pairs(self) -> list[PromptPair]:
        """The non-empty rows, as engine pairs."""
        return [PromptPair(p, n) for p, n in self._rows if p.strip() or n.strip()]

    def rowCount(self, parent: _Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = _ROOT) -> int:
        return 0 if parent.isValid() else 2

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self.COLUMNS[section] if 0 <= section < 2 else None
        return str(section + 1) if 0 <= section < len(self._rows) else None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self._rows) or not 0 <= index.column() < 2:
            return None
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return self._rows[index.row()][index.column()]
        return None

    def setData(self, index: _Index, value, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.EditRole or not index.isValid() or not 0 <= index.column() < 2:
            return False
        if not 0 <= index.row() < len(self._rows):
            return False
        self._rows[index.row()][index.column()] = str(value)
        self.dataChanged.emit(index, index, [Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole])
        return True

    def flags(self, index: _Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEditable

    def insertRows(self, row: int, count: int, parent: _Index = _ROOT) -> bool:
        if parent.isValid() or count < 1 or not 0 <= row <= len(self._rows):
            return False
        self.beginInsertRows(QModelIndex(), row, row + count - 1)  # inclusive range
        self._rows[row:row] = [["", ""] for _ in range(count)]
        self.endInsertRows()
        return True

    def removeRows(self, row: int, count: int, parent: _Index = _ROOT) -> bool:
        if parent.isValid() or count < 1 or row < 0 or row + count > len(self._rows):
            return False
        self.beginRemoveRows(QModelIndex(), row, row + count - 1)
        del self._rows[row : row + count]
        self.endRemoveRows()
        return True
