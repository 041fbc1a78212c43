"""`AlignmentPreview`: how p+ and p− line up token by token before an ActAdd capture.

The rows come from `engine.tokens.alignment_preview` (the engine's one alignment rule: BOS first, the
shorter prompt right-padded with space tokens); this widget only shows them, the pads in yellow.
"""

from __future__ import annotations

from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from engine.errors import ActAddError
from engine.tokens import alignment_preview

PAD_BRUSH = QBrush(QColor("#fff2b3"))
NO_MODEL = "Load a model to preview the tokens."


def token_label(tokenizer, token: str) -> str:
    """A readable form of one token: byte-level markers decoded, spaces shown as '␣'."""
    try:
        text = tokenizer.convert_tokens_to_string([token])
    except Exception:
        text = token
    return text.replace(" ", "␣").replace("\n", "↵") or token


class AlignmentPreview(QTableWidget):
    """A (position, p+ token, p− token) table; `note` says how many positions and pads (or what's wrong)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(0, 3, parent)
        self.setHorizontalHeaderLabels(["Pos", "p+ token", "p− token"])
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setToolTip(
            "How p+ and p− line up token by token; yellow cells are the space tokens that pad the shorter one"
        )
        self.note = QLabel(NO_MODEL)
        self.note.setWordWrap(True)

    def show_pair(self, tokenizer, positive: str, negative: str) -> None:
        """Fill the table for this pair under `tokenizer` (None: no model loaded, an empty table)."""
        self.setRowCount(0)
        if tokenizer is None:
            self.note.setText(NO_MODEL)
            return
        try:
            rows = alignment_preview(tokenizer, positive, negative)
        except ActAddError as exc:
            self.note.setText(str(exc))
            return
        self.setRowCount(len(rows))
        pads = 0
        for i, row in enumerate(rows):
            cells = [
                (str(row.position), False),
                (token_label(tokenizer, row.positive), row.positive_is_pad),
                (token_label(tokenizer, row.negative), row.negative_is_pad),
            ]
            for column, (text, is_pad) in enumerate(cells):
                item = QTableWidgetItem(text)
                if is_pad:
                    pads += 1
                    item.setBackground(PAD_BRUSH)
                    item.setToolTip("space padding: the shorter prompt is padded with ' ' (the paper's rule)")
                self.setItem(i, column, item)
        note = f"{len(rows)} positions (position 0 is the shared BOS, so the vector is 0 there)"
        if pads:
            note += f"; {pads} space pad{'s' if pads > 1 else ''} (yellow)"
        self.note.setText(note)

    def rows(self) -> list[tuple[str, str, str]]:
        """The table as shown: (position, p+ token, p− token) per row."""
        return [(self._cell(r, 0), self._cell(r, 1), self._cell(r, 2)) for r in range(self.rowCount())]

    def _cell(self, row: int, column: int) -> str:
        item = self.item(row, column)
        return item.text() if item is not None else ""


__all__ = ["PAD_BRUSH", "AlignmentPreview", "token_label"]
