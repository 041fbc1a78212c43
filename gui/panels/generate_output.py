"""`GenerateOutput`: the Generate tab's output side: run buttons, the two token panes, speed and exports.

It shows one generation as it streams (row 0 of the batch in the unsteered pane, row 1 in the steered one,
with the per-token effect when asked) and what came back (warnings, tokens per second). It decides
nothing: `GeneratePanel` owns the request and the job, and calls in here.
"""

from __future__ import annotations

import time

from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QSplitter, QVBoxLayout, QWidget

from engine.generation import GenerationResult, TokenEvent
from gui.panels.common import bare_column
from gui.widgets.token_pane import KL_FULL, TokenPane

LEGEND = (
    "Orange: how far steering moved the distribution this token was drawn from (KL from the "
    f"unsteered model reading the same text; full colour at {KL_FULL:g} nats). Hover a token for "
    "what the unsteered model would likely have written there. Blue ⟨vector → value⟩: a live change took effect there."
)
STEERED_ROW = 1  # the batch row the steered pane shows (row 0: unsteered)


class GenerateOutput(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._started_at = 0.0
        self._tokens = 0  # tokens shown so far, all panes together

        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Generate both panes in one batch (Ctrl+Enter)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop before the next token (Esc)")
        self.stop_button.setEnabled(False)
        self.regenerate_button = QPushButton("Regenerate (same seed)")
        self.regenerate_button.setToolTip("Run again with the last seed and the current settings")
        self.regenerate_button.setEnabled(False)
        self.effect = QCheckBox("Show the effect")
        self.effect.setToolTip(
            "Colour each steered token by KL(steered || unsteered) on the same text (one extra row); "
            "hover for the unsteered model's alternatives"
        )
        self.speed = QLabel("")
        self.speed.setToolTip("Generated tokens per second, both panes together")
        buttons = QHBoxLayout()
        for widget in (self.generate_button, self.stop_button, self.regenerate_button, self.effect):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        buttons.addWidget(self.speed)

        self.unsteered = TokenPane()
        self.steered = TokenPane()
        self.unsteered.setToolTip("Row 0 of the batch: no steering")
        self._panes = (self.unsteered, self.steered)
        panes = QSplitter()
        for title, pane in (("Unsteered", self.unsteered), ("Steered", self.steered)):
            box, box_layout = bare_column()
            label = QLabel(f"<b>{title}</b>")
            box_layout.addWidget(label)
            box_layout.addWidget(pane, 1)
            panes.addWidget(box)
        self._legend = QLabel(LEGEND)
        self._legend.setWordWrap(True)
        self._legend.setStyleSheet("color: #555; font-size: 11px;")
        self.save_button = QPushButton("Save transcript…")
        self.save_button.setToolTip("Markdown or JSON with every setting needed to reproduce it")
        self.save_button.setEnabled(False)
        self.script_button = QPushButton("Export Python script…")
        self.script_button.setToolTip("A short script using the engine API that reproduces this generation")
        self.script_button.setEnabled(False)
        exports = QHBoxLayout()
        exports.addWidget(self._legend, 1)
        exports.addWidget(self.save_button)
        exports.addWidget(self.script_button)

        self.warnings_label = QLabel("")
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setStyleSheet("color: #a35a00;")
        self.warnings_label.setVisible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)  # as a bare column: it sits inside the panel's splitter
        layout.addLayout(buttons)
        layout.addWidget(self.warnings_label)
        layout.addWidget(panes, 1)
        layout.addLayout(exports)

    def set_generating(self, on: bool, can_regenerate: bool) -> None:
        self.generate_button.setEnabled(not on)
        self.regenerate_button.setEnabled(not on and can_regenerate)
        self.stop_button.setEnabled(on)
        self.effect.setEnabled(not on)

    def start(self, shown_prompt: str) -> None:
        """Empty panes showing the prompt, no warnings, the speed counter from zero."""
        self.warnings_label.setVisible(False)
        self.unsteered.clear_text(shown_prompt)
        self.steered.clear_text(shown_prompt)
        self._tokens = 0
        self._started_at = time.perf_counter()
        self.speed.setText("starting…")

    def show_token(self, event: TokenEvent, effect: bool) -> None:
        """One streamed token into its row's pane; the steered row coloured by its KL when `effect`."""
        if event.row >= len(self._panes):
            return
        show_effect = effect and event.row == STEERED_ROW
        self._panes[event.row].append_token(event.text, event.kl if show_effect else None, event.top)
        if event.text:
            self._tokens += 1  # every row's tokens count, however many rows there are
            elapsed = time.perf_counter() - self._started_at
            if elapsed > 0 and self._tokens % 8 == 0:
                self.speed.setText(f"{self._tokens / elapsed:.1f} tokens/s")

    def mark_live_change(self, name: str, value: str, raw: float) -> None:
        """Where a live change took effect in the steered pane: `value` as the row shows it, `raw` its c."""
        self.steered.append_marker(
            f"⟨{name} → {value}⟩",
            f"Live change: from this token on, {name} steers at {value} (raw c = {raw:g}); "
            "0 means off. Front-mode vectors act on the prompt only, so a live change doesn't move them.",
        )

    def show_warnings(self, warnings: list[str]) -> None:
        if warnings:
            self.warnings_label.setText("\n".join(f"⚠ {w}" for w in warnings))
            self.warnings_label.setVisible(True)

    def show_result(self, result: GenerationResult) -> None:
        self.speed.setText(
            f"{result.tokens_per_second:.1f} tokens/s · {result.n_new_tokens} tokens in {result.seconds:.2f} s"
            + (" · stopped" if result.cancelled else "")
        )

    def flush(self) -> None:
        for pane in self._panes:
            pane.flush()  # the last tokens, before anything reads the panes

    def set_exportable(self, on: bool) -> None:
        self.save_button.setEnabled(on)
        self.script_button.setEnabled(on)


__all__ = ["GenerateOutput"]
