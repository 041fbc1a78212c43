"""The Library tab's undo bar: what was just moved to the trash, and an Undo button.

It remembers the last delete (its trash id and key) until it is undone or replaced. It sits in space
reserved for it (kept when hidden), so showing it moves nothing around it.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QWidget

from gui.widgets.buttons import push_button


class UndoBar(QFrame):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("QFrame { background: #fff6d5; }")
        self.label = QLabel("")
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.button = push_button("Undo", "Restore the last deleted vector from the trash", enabled=False)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 2)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.button)
        policy = self.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.setSizePolicy(policy)
        self.setVisible(False)
        self._trash_id: str | None = None
        self._key = ""

    def show_deleted(self, keys: list[str], trash_ids: list[str]) -> None:
        """`keys` went to the trash as `trash_ids`; Undo will restore the last of them."""
        self._trash_id = trash_ids[-1] if trash_ids else None
        self._key = keys[-1]
        self.button.setEnabled(self._trash_id is not None)
        self.label.setText(f"Deleted {keys[-1]}")
        self.label.setToolTip(f"Moved {', '.join(keys)} to the library's trash")
        self.setVisible(self._trash_id is not None)

    def take(self) -> tuple[str, str] | None:
        """The last delete to undo, `(trash_id, key)`, once; the bar hides. None when there is none."""
        if self._trash_id is None:
            return None
        last = self._trash_id, self._key
        self._trash_id = None
        self.button.setEnabled(False)
        self.setVisible(False)
        return last
