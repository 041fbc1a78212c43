"""A push button built in one call: its text, its tooltip, what a click does, and whether it starts enabled.

The panels make dozens of buttons; each was the same four lines (make, tooltip, connect, enable), which
the `duplicates` tool reports as copies between panels. Connecting stays explicit where a click needs
arguments (a lambda) or another object's slot."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QPushButton


def push_button(
    text: str, tip: str, on_click: Callable[..., object] | None = None, *, enabled: bool = True
) -> QPushButton:
    """A QPushButton reading `text`, with tooltip `tip`, calling `on_click()` when clicked."""
    button = QPushButton(text)
    button.setToolTip(tip)
    if on_click is not None:
        button.clicked.connect(on_click)
    button.setEnabled(enabled)
    return button


__all__ = ["push_button"]
