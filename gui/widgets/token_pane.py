"""`TokenPane`: a read-only text pane that streams generated tokens, highlighted by steering's effect."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QTimer, Slot
from PySide6.QtGui import QColor, QFont, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QTextEdit, QToolTip

KL_FULL = 2.0  # nats of KL that get the full highlight colour
MAX_ALPHA = 150  # the strongest highlight, still easy to read on


class TokenPane(QTextEdit):
    """A read-only pane that streams text; tokens may carry a highlight and a tooltip.

    Qt lays out a whole paragraph again after each insert, so one insert costs O(paragraph) (measured in
    bench/README.md). Tokens are therefore queued and inserted once per
    pass of the event loop, in one edit block (one layout). When tokens come faster than the GUI lays
    them out, more of them share each layout instead of piling up behind it.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setAcceptRichText(False)
        font = QFont("DejaVu Sans Mono")
        font.setStyleHint(QFont.StyleHint.Monospace)
        self.setFont(font)
        self._generated: list[str] = []
        self._pending: list[tuple[str, QTextCharFormat]] = []
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(0)  # the next pass of the event loop, after the queued tokens
        self._flush_timer.timeout.connect(self.flush)

    def clear_text(self, prompt: str = "") -> None:
        self._pending.clear()
        self._flush_timer.stop()
        self.clear()
        self._generated = []
        if prompt:
            fmt = QTextCharFormat()
            fmt.setForeground(QColor("#808080"))
            self._queue(prompt, fmt)
            self.flush()

    def generated_text(self) -> str:
        return "".join(self._generated)

    def _queue(self, text: str, fmt: QTextCharFormat) -> None:
        self._pending.append((text, fmt))
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    @Slot()
    def flush(self) -> None:
        """Insert every queued piece of text now, as one edit (one layout of the paragraph)."""
        self._flush_timer.stop()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.beginEditBlock()
        for text, fmt in pending:
            cursor.insertText(text, fmt)
        cursor.endEditBlock()
        self.setTextCursor(cursor)
        self.ensureCursorVisible()

    def append_token(self, text: str, kl: float | None = None, top: list | None = None) -> None:
        if not text:
            return
        self._generated.append(text)
        fmt = QTextCharFormat()
        if kl is not None:
            alpha = int(MAX_ALPHA * min(1.0, max(0.0, kl) / KL_FULL))
            if alpha:
                fmt.setBackground(QColor(255, 140, 0, alpha))
            alternatives = ", ".join(f"{tok!r} {p:.0%}" for tok, p in (top or [])[:5])
            fmt.setToolTip(
                f"KL {kl:.3f} nats from the unsteered model on this same text\n"
                f"without steering, this would likely be: {alternatives}"
            )
        self._queue(text, fmt)

    def append_marker(self, text: str, tooltip: str = "a live coefficient change took effect here") -> None:
        fmt = QTextCharFormat()
        fmt.setForeground(QColor("#1f5fbf"))
        fmt.setFontWeight(QFont.Weight.Bold)
        fmt.setToolTip(tooltip)
        self._queue(text, fmt)

    def viewportEvent(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            cursor = self.cursorForPosition(event.pos())
            if not cursor.atEnd():
                cursor.movePosition(QTextCursor.MoveOperation.NextCharacter)
            tip = cursor.charFormat().toolTip()
            if tip:
                QToolTip.showText(event.globalPos(), tip, self)
            else:
                QToolTip.hideText()
            return True
        return super().viewportEvent(event)
