"""The Library tab's detail view of one vector, with its editable tags and notes."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QWidget

from engine.library import VectorEntry
from gui.item_models import INCOMPATIBLE, OTHER_MODEL, Fit

FIELDS = ("Fit", "Method", "Shape", "Layers", "Norms", "Model", "Default", "Created", "Prompts", "File")


def prompt_summary(prompts: dict) -> str:
    if "positive" in prompts:
        return f"p+ {prompts['positive']!r}, p− {prompts.get('negative', '')!r}"
    if "pairs" in prompts:
        pairs = prompts["pairs"]
        return (
            f"{len(pairs)} pairs, e.g. {pairs[0]['positive']!r} / {pairs[0]['negative']!r}" if pairs else ""
        )
    return json.dumps(prompts, ensure_ascii=False)[:200]


class VectorDetails(QGroupBox):
    def __init__(self, parent: QWidget | None = None):
        super().__init__("Details", parent)
        self._title = QLabel("Select a vector")
        self._title.setStyleSheet("font-size: 15px; font-weight: bold;")
        self._title.setWordWrap(True)
        self.fields: dict[str, QLabel] = {}
        form = QFormLayout(self)
        form.addRow(self._title)
        for key in FIELDS:
            label = QLabel("")
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.fields[key] = label
            form.addRow(key + ":", label)
        self.fields["Fit"].setTextFormat(Qt.TextFormat.RichText)
        self.tags = QLineEdit()
        self.tags.setToolTip("Comma-separated tags")
        self.notes = QPlainTextEdit()
        self.notes.setFixedHeight(70)
        self.notes.setToolTip("Free-form notes, saved in the vector file")
        self.save_button = QPushButton("Save tags and notes")
        self.save_button.setToolTip("Rewrite the vector's tags and notes (atomic)")
        form.addRow("Tags:", self.tags)
        form.addRow("Notes:", self.notes)
        form.addRow(self.save_button)

    def show_entry(self, entry: VectorEntry | None, fit: Fit | None = None) -> None:
        if entry is None or fit is None:
            self._title.setText("Select a vector")
            for label in self.fields.values():
                label.setText("")
            self.tags.setText("")
            self.notes.setPlainText("")
            return
        colour = {INCOMPATIBLE: "#a33", OTHER_MODEL: "#b26a00"}.get(fit.status, "#2a7a2a")
        self._title.setText(entry.key)
        fp = entry.fingerprint
        values = {
            "Fit": f"<span style='color:{colour}'>{fit.status}</span>: {fit.reason}",
            "Method": entry.method,
            "Shape": " × ".join(map(str, entry.shape))
            + (" (per position)" if entry.is_positional else " (direction)"),
            "Layers": ", ".join(map(str, entry.layers)),
            "Norms": "…",
            "Model": f"{fp.model_hint or '?'} ({fp.architecture}, {fp.n_layers} layers, d={fp.hidden_size})"
            if fp
            else "not recorded",
            "Default": f"c = {entry.default_coeff:g}, mode {entry.default_mode}",
            "Created": entry.created,
            "Prompts": prompt_summary(entry.prompts or {}),
            "File": str(entry.path),
        }
        for key, value in values.items():
            self.fields[key].setText(value)
        self.tags.setText(", ".join(entry.tags))
        self.notes.setPlainText(entry.notes)

    def show_norms(self, norms: dict, relative: dict | str | None = None) -> None:
        """The norm per layer; with `relative` (engine.strength.relative_norm_report against the loaded
        model's residual norms), also each layer's norm as a multiple of the typical residual there."""
        text = ", ".join(f"L{l}: {n:.3g}" for l, n in norms.items())
        if isinstance(relative, dict):
            text += "\n× typical residual here (the vector's default mode): " + ", ".join(
                f"L{l}: {r:.2f}" for l, r in relative.items()
            )
        elif isinstance(relative, str):
            text += f"\n(not comparable with the loaded model: {relative})"
        self.fields["Norms"].setText(text)
        self.fields["Norms"].setToolTip(
            "The vector's L2 norm per layer (per position for an ActAdd vector: the RMS over positions). "
            "'× typical residual' is the strength c = 1 amounts to on the loaded model, in the vector's "
            "default mode (front adds each position's row, all adds one direction: a Generate row in "
            "another mode shows its own ratio)."
            if relative is not None
            else "The vector's L2 norm per layer"
        )
