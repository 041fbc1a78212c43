"""The Chat tab: a conversation under the model's chat template, steered on every assistant turn.

Each assistant turn is one `ChatRequest`: the system prompt and every turn so far, rendered with the chat
template (engine/chat.py), then streamed token by token through the job's signals. The steering vectors
are the Generate tab's active ones (the window hands this panel a way to read them), so a vector is set up
once; front-mode vectors start at the user's latest message, and the panel shows which tokens they land on.
The answer is its own turn: it is never glued to the user's words.
"""

from __future__ import annotations

import html
import random
from collections.abc import Callable, Sequence

from PySide6.QtCore import Slot
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine.chat import ChatTurn, front_landing, render_chat
from engine.errors import ActAddError
from engine.generation import GenerationResult, TokenEvent
from gui.context import AppContext
from gui.jobs import ActiveVector, ChatRequest, Job
from gui.panels.common import bare_column, fill_with_splitter
from gui.widgets.sampling_form import SamplingForm

# The Generate tab's active vector rows (gui.widgets.vector_row.VectorRow), read when a turn starts.
VectorRows = Callable[[], Sequence]
NO_TEMPLATE = "This model's tokenizer has no chat template: load an instruct/chat model to chat."


def parse_stop_strings(text: str) -> tuple[str, ...]:
    """One stop string per line; a literal `\\n` stands for a newline (so a stop can span lines)."""
    return tuple(line.replace("\\n", "\n") for line in text.splitlines() if line)


class ChatPanel(QWidget):
    def __init__(self, context: AppContext, vector_rows: VectorRows | None = None, parent=None):
        super().__init__(parent)
        self._ctx = context
        self._vector_rows: VectorRows = vector_rows or (lambda: [])
        self.turns: list[ChatTurn] = []  # finished turns, user and assistant alternating
        self._pending: ChatTurn | None = None  # the user turn being answered
        self._answer = ""  # the assistant's text streamed so far
        self._job: Job | None = None
        self.outcome: GenerationResult | None = None  # of the latest turn (tests, transcripts)

        # ---- settings (left) ------------------------------------------------------------------------------
        self.system = QPlainTextEdit()
        self.system.setPlaceholderText("System prompt (empty: the template's own default, if it has one)")
        self.system.setToolTip("Sent as the system message before every turn; edit it at any time")
        self.system.setMaximumHeight(90)
        self.stop_strings = QPlainTextEdit()
        self.stop_strings.setPlaceholderText("Stop strings, one per line (\\n for a newline)")
        self.stop_strings.setToolTip("The answer is cut before the first of these strings")
        self.stop_strings.setMaximumHeight(60)
        self.steering_note = QLabel()
        self.steering_note.setWordWrap(True)
        self.front_note = QLabel()
        self.front_note.setWordWrap(True)
        self.front_note.setStyleSheet("color: #555; font-size: 11px;")
        steering_box = QGroupBox("Steering (every assistant turn)")
        steering_layout = QVBoxLayout(steering_box)
        steering_layout.addWidget(self.steering_note)
        steering_layout.addWidget(self.front_note)
        self.sampling_form = SamplingForm()
        self.sampling_form.max_tokens.setValue(128)
        left, left_layout = bare_column()
        for title, widget in (("System prompt", self.system), ("Stop strings", self.stop_strings)):
            box = QGroupBox(title)
            QVBoxLayout(box).addWidget(widget)
            left_layout.addWidget(box)
        left_layout.addWidget(steering_box)
        left_layout.addWidget(self.sampling_form)
        left_layout.addStretch(1)

        # ---- conversation (right) ---------------------------------------------------------------------------
        self.template_note = QLabel(NO_TEMPLATE)
        self.template_note.setWordWrap(True)
        self.view = QTextBrowser()
        self.view.setToolTip("The conversation; the answer streams into the last turn")
        self.message = QPlainTextEdit()
        self.message.setPlaceholderText("Your message")
        self.message.setMaximumHeight(80)
        self.message.textChanged.connect(self.update_steering_note)
        self.send_button = QPushButton("Send")
        self.send_button.setToolTip("Send the message; the assistant answers with the active vectors")
        self.send_button.clicked.connect(self.send)
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.setToolTip(
            "Answer the last message again, with the seed shown (same unless changed)"
        )
        self.regenerate_button.clicked.connect(self.regenerate)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop before the next token; the partial answer stays")
        self.stop_button.clicked.connect(self.stop)
        self.clear_button = QPushButton("New chat")
        self.clear_button.setToolTip("Forget the turns (the system prompt stays)")
        self.clear_button.clicked.connect(self.clear)
        buttons = QHBoxLayout()
        for button in (self.send_button, self.regenerate_button, self.stop_button, self.clear_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        right, right_layout = bare_column()
        right_layout.addWidget(self.template_note)
        right_layout.addWidget(self.view, 1)
        right_layout.addWidget(self.message)
        right_layout.addLayout(buttons)
        fill_with_splitter(self, left, right, stretch=(2, 5), sizes=[380, 900])

        context.model_changed.connect(self._on_model_changed)
        self._on_model_changed(context.model)
        self._read_settings()

    # ---- settings (written as they change, so no window code is needed) --------------------------------
    def _read_settings(self) -> None:
        settings = self._ctx.settings
        self.system.setPlainText(str(settings.value("chat/system", "")))
        self.stop_strings.setPlainText(str(settings.value("chat/stop", "")))
        self.system.textChanged.connect(lambda: settings.setValue("chat/system", self.system.toPlainText()))
        self.stop_strings.textChanged.connect(
            lambda: settings.setValue("chat/stop", self.stop_strings.toPlainText())
        )

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.update_steering_note()  # the Generate tab's vectors may have changed meanwhile

    # ---- state -------------------------------------------------------------------------------------------
    def is_generating(self) -> bool:
        return self._job is not None

    def has_template(self) -> bool:
        model = self._ctx.model
        return model is not None and model.info.has_chat_template

    def _update_buttons(self) -> None:
        ready = self.has_template() and not self.is_generating()
        self.send_button.setEnabled(ready)
        self.regenerate_button.setEnabled(ready and bool(self.turns) and self.turns[-1].role == "assistant")
        self.stop_button.setEnabled(self.is_generating())
        self.clear_button.setEnabled(not self.is_generating())
        self.message.setEnabled(self.has_template())

    @Slot(object)
    def _on_model_changed(self, handle) -> None:
        self.template_note.setVisible(not self.has_template())
        self._update_buttons()
        self.update_steering_note()

    def active_vectors(self) -> list[ActiveVector]:
        return [row.active_vector() for row in self._vector_rows()]

    @Slot()
    def update_steering_note(self) -> None:
        """Say which vectors steer the next turn and which tokens a front vector lands on."""
        rows = list(self._vector_rows())
        vectors = [row.active_vector() for row in rows]
        on = [v for v in vectors if v.enabled and v.coeff != 0]
        self.steering_note.setText(
            "From the Generate tab: "
            + ", ".join(f"{v.name} (c={v.coeff:g}, {v.mode or 'default'} mode)" for v in on)
            if on
            else "No active vectors: turns are unsteered. Add vectors in the Generate tab."
        )
        fronts = [
            row.entry.shape[0]
            for row, v in zip(rows, vectors, strict=True)
            if v in on and (v.mode or row.entry.default_mode) == "front" and len(row.entry.shape) == 2
        ]
        self.front_note.setText(self.front_preview(max(fronts)) if fronts else "")

    def front_preview(self, n_tokens: int) -> str:
        """Which tokens of the next prompt a front vector of `n_tokens` positions lands on."""
        model = self._ctx.model
        text = self.message.toPlainText()
        if model is None or not self.has_template() or not text.strip():
            return "Front vectors start at the first token of your message."
        try:
            rendered = render_chat(
                model.tokenizer, self.system.toPlainText(), [*self.turns, ChatTurn("user", text)]
            )
            landing = front_landing(model.tokenizer, rendered, n_tokens)
        except ActAddError as exc:
            return f"Front mode: {exc}"
        tokens = " ".join(f"[{html.escape(repr(l.token)[1:-1])}]" for l in landing)
        return f"Front vectors land on tokens {landing[0].prompt_position}–{landing[-1].prompt_position}: {tokens}"

    # ---- the conversation ------------------------------------------------------------------------------
    def show_conversation(self) -> None:
        parts = []
        shown = [*self.turns, *([self._pending] if self._pending is not None else [])]
        for turn in shown:
            parts.append(self._bubble(turn.role, turn.content))
        if self._pending is not None:
            parts.append(self._bubble("assistant", self._answer + " ▌"))
        self.view.setHtml("".join(parts))
        bar = self.view.verticalScrollBar()
        bar.setValue(bar.maximum())

    @staticmethod
    def _bubble(role: str, text: str) -> str:
        colour = "#e8f0fe" if role == "user" else "#f1f3f4"
        body = html.escape(text).replace("\n", "<br>")
        who = "You" if role == "user" else "Assistant"
        return (
            f'<table width="100%" cellpadding="6" style="margin-bottom:6px"><tr><td bgcolor="{colour}">'
            f"<b>{who}</b><br>{body}</td></tr></table>"
        )

    def transcript_text(self) -> str:
        """The conversation as plain text, one `role: content` block per turn."""
        return "\n\n".join(f"{t.role}: {t.content}" for t in self.turns)

    @Slot()
    def send(self) -> None:
        text = self.message.toPlainText()
        if not text.strip() or self.is_generating():
            return
        if not self.has_template():
            self._ctx.report_error("Chat", NO_TEMPLATE)
            return
        if self.sampling_form.random_seed.isChecked():
            self.sampling_form.seed.setValue(random.randrange(2**31 - 1))
        self.message.clear()
        self._start(ChatTurn("user", text))

    @Slot()
    def regenerate(self) -> None:
        """Drop the last answer and answer the same message again, with the seed shown in the form."""
        if self.is_generating() or len(self.turns) < 2 or self.turns[-1].role != "assistant":
            return
        user = self.turns[-2]
        del self.turns[-2:]
        self._start(user)

    @Slot()
    def stop(self) -> None:
        if self._job is not None:
            self._job.stop()

    @Slot()
    def clear(self) -> None:
        if not self.is_generating():
            self.turns.clear()
            self.show_conversation()
            self._update_buttons()

    def _start(self, user: ChatTurn) -> None:
        sampling = self.sampling_form.sampling()
        sampling.stop = parse_stop_strings(self.stop_strings.toPlainText())
        request = ChatRequest(
            system=self.system.toPlainText(),
            turns=[*self.turns, user],
            vectors=self.active_vectors(),
            sampling=sampling,
        )
        self._pending, self._answer, self.outcome = user, "", None
        self._job = job = self._ctx.controller.submit(request)
        job.token.connect(self._on_token)
        job.done.connect(self._on_done)
        job.failed.connect(self._on_failed)
        job.finished.connect(self._on_finished)
        self._update_buttons()
        self.show_conversation()
        self._ctx.show_status("Answering…")

    @Slot(object)
    def _on_token(self, event: TokenEvent) -> None:
        if event.row == 0:
            self._answer += event.text
            self.show_conversation()

    @Slot(object)
    def _on_done(self, outcome: GenerationResult) -> None:
        self.outcome = outcome

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._ctx.report_error("Chat failed", message)

    @Slot()
    def _on_finished(self) -> None:
        pending, outcome = self._pending, self.outcome
        self._job, self._pending = None, None
        if pending is not None and outcome is not None:
            # The answer as the engine cut it (stop strings), even when stopped part-way.
            self.turns += [pending, ChatTurn("assistant", outcome.rows[0].text)]
            self._ctx.show_status("Answer stopped" if outcome.cancelled else "Done")
        elif pending is not None and not self.message.toPlainText():
            self.message.setPlainText(pending.content)  # failed: give the message back to edit
        self.show_conversation()
        self._update_buttons()


__all__ = ["ChatPanel", "parse_stop_strings"]
