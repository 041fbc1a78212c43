"""The Library tab's dialogs: a new name, a file to import or export to, the weights of a combination,
and a vector to restore from the trash."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QInputDialog,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.library import VectorEntry


class CombineDialog(QDialog):
    """Coefficients for `a·v1 + b·v2 + ...` and the new vector's name."""

    def __init__(self, keys: list[str], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Combine vectors")
        form = QFormLayout(self)
        self._spins: list[tuple[str, QDoubleSpinBox]] = []
        for key in keys:
            spin = QDoubleSpinBox()
            spin.setRange(-1000, 1000)
            spin.setDecimals(2)
            spin.setValue(1.0)
            spin.setToolTip("This vector's weight in the sum")
            self._spins.append((key, spin))
            form.addRow(f"{key} ×", spin)
        self.name = QLineEdit("combined")
        self.name.setToolTip("The new vector's name")
        form.addRow("New name:", self.name)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def terms(self) -> list[tuple[float, str]]:
        return [(spin.value(), key) for key, spin in self._spins]


class TrashDialog(QDialog):
    """The deleted vectors, newest first; Restore returns the chosen one's trash id."""

    def __init__(self, entries: list[VectorEntry], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Trash")
        layout = QVBoxLayout(self)
        self.items = QListWidget()
        for entry in entries:
            item = QListWidgetItem(trash_label(entry))
            item.setData(Qt.ItemDataRole.UserRole, entry.trash_id)
            self.items.addItem(item)
        if not entries:
            self.items.addItem("The trash is empty")
        layout.addWidget(self.items)
        buttons = QDialogButtonBox()
        restore = buttons.addButton("Restore", QDialogButtonBox.ButtonRole.AcceptRole)
        restore.setEnabled(bool(entries))
        buttons.addButton(QDialogButtonBox.StandardButton.Close)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    @classmethod
    def choose(cls, entries: list[VectorEntry], parent: QWidget | None = None) -> str | None:
        dialog = cls(entries, parent)
        if dialog.exec() == QDialog.DialogCode.Accepted and dialog.items.currentItem() is not None:
            return dialog.items.currentItem().data(Qt.ItemDataRole.UserRole) or None
        return None


def trash_label(entry) -> str:
    name = f"{entry.collection}/{entry.name}" if entry.collection else entry.name
    return f"{name}  (deleted {entry.deleted.replace('T', ' ')})"


IMPORT_FILTER = "Vector files (*.zip *.gguf *.npy *.npz *.safetensors);;All files (*)"
EXPORT_FILTER = {"zip": "Bundle (*.zip)", "gguf": "llama.cpp control vector (*.gguf)"}


def ask_name(parent: QWidget, title: str, label: str, default: str) -> str | None:
    """A name typed into a one-line dialog, stripped; None when cancelled or left empty."""
    name, ok = QInputDialog.getText(parent, title, label, text=default)
    return name.strip() if ok and name.strip() else None


def ask_import_path(parent: QWidget) -> str:
    """A vector file to import; "" when cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, "Import vectors", str(Path.home()), IMPORT_FILTER)
    return path


def ask_export_path(parent: QWidget, keys: list[str], kind: str) -> str:
    """Where to export `keys` as `kind` ("zip" or "gguf"); "" when cancelled."""
    default = (keys[0].replace("/", "-") if len(keys) == 1 else "vectors") + f".{kind}"
    path, _ = QFileDialog.getSaveFileName(parent, "Export", str(Path.home() / default), EXPORT_FILTER[kind])
    return path
