"""Conversations rendered with the tokenizer's chat template, and where ActAdd's front lands in them.

Rendering: `apply_chat_template(..., add_generation_prompt=True)` on the system prompt and the turns. The
template brings its own markers (SmolLM2's `<|im_start|>`, Llama's and Gemma's BOS in the template text),
so nothing is added on top: transformers tokenizes the rendered text with `add_special_tokens=False`, and
the plain-text BOS rule (`engine.tokens.bos_rule`) does not apply here.

Front alignment under a template: a rendered prompt begins with the template's boilerplate (often a
hidden default system prompt, e.g. SmolLM2's "You are a helpful AI assistant named SmolLM…"), so counting
the front from the first token would put the vector on that boilerplate. Here the front is counted from
the first token of the LAST user message's content: the vector lands on the user's own words, in every
assistant turn (each turn's prompt pass is the whole conversation so far). When that token cannot be
located (a template that rewrites the message), `front_offset` is None and front mode is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.errors import InvalidInputError
from engine.vocab_check import check_ids_in_range

ROLES = ("system", "user", "assistant")
# Stands in for the last user message to find where the template puts it (no template rewrites this).
_SENTINEL = "\u2063ACTADD-USER-MESSAGE\u2063"


@dataclass(frozen=True)
class ChatTurn:
    role: str  # "user" or "assistant"
    content: str


@dataclass(frozen=True)
class RenderedChat:
    """A conversation's prompt ids, and the token where the front of an ActAdd vector starts."""

    ids: list[int]
    front_offset: int | None  # token index of the last user message's first token; None: not located
    text: str = ""  # the rendered template text
    messages: list[dict] = field(default_factory=list)  # what went into the template

    @property
    def user_tokens(self) -> int:
        """Tokens from the front offset to the end of the prompt (what a front vector may cover)."""
        return 0 if self.front_offset is None else len(self.ids) - self.front_offset


def conversation(system: str, turns: Sequence[ChatTurn]) -> list[dict]:
    """The template's messages: the system prompt (when not blank) first, then the turns in order."""
    if not turns or turns[-1].role != "user":
        raise InvalidInputError("a chat prompt must end with a user message")
    if bad := [t.role for t in turns if t.role not in ("user", "assistant")]:
        raise InvalidInputError(f"unknown chat role {bad[0]!r}; turns are user or assistant")
    if not turns[-1].content.strip():
        raise InvalidInputError("the message is empty")
    messages = [{"role": "system", "content": system}] if system.strip() else []
    return messages + [{"role": t.role, "content": t.content} for t in turns]


def _render_text(tokenizer, messages: list[dict]) -> str:
    try:
        return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    except Exception as exc:  # templates raise their own errors (e.g. "roles must alternate")
        raise InvalidInputError(f"this model's chat template refused the conversation: {exc}") from exc


def _char_start(tokenizer, messages: list[dict], text: str) -> int | None:
    """Where the last user message's content starts in the rendered `text`, or None."""
    content = messages[-1]["content"]
    probe = [*messages[:-1], {"role": "user", "content": _SENTINEL}]
    marked = _render_text(tokenizer, probe)
    at = marked.find(_SENTINEL)
    if at < 0 or marked[:at] != text[:at]:
        return None
    # Some templates trim the message (Gemma's `| trim`): the first character kept is the first non-space.
    for candidate in (content, content.lstrip()):
        if candidate and text.startswith(candidate, at):
            return at
    return None


def _token_at(tokenizer, ids: list[int], text: str, char: int) -> int | None:
    """The index of the token of `ids` (the tokenized `text`) that contains character `char`."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(encoded["input_ids"]) == ids:
            for index, (start, end) in enumerate(encoded["offset_mapping"]):
                if end > char and end > start:
                    return index
            return None
    except (NotImplementedError, ValueError, TypeError):
        pass  # a slow tokenizer has no offsets: fall back to the prefix's ids
    prefix = list(tokenizer(text[:char], add_special_tokens=False)["input_ids"])
    return len(prefix) if ids[: len(prefix)] == prefix and len(prefix) < len(ids) else None


def render_chat(tokenizer, system: str, turns: Sequence[ChatTurn]) -> RenderedChat:
    """The prompt ids of a conversation under the tokenizer's chat template, ending in the assistant's cue."""
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidInputError("this model's tokenizer has no chat template")
    messages = conversation(system, turns)
    text = _render_text(tokenizer, messages)
    try:
        rendered = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
    except Exception as exc:
        raise InvalidInputError(f"this model's chat template refused the conversation: {exc}") from exc
    ids = [int(i) for i in rendered["input_ids"]]
    check_ids_in_range(tokenizer, ids)
    char = _char_start(tokenizer, messages, text)
    offset = _token_at(tokenizer, ids, text, char) if char is not None else None
    return RenderedChat(ids=ids, front_offset=offset, text=text, messages=messages)


def front_refusal(rendered: RenderedChat, n_vector_tokens: int) -> str | None:
    """Why a front vector of `n_vector_tokens` cannot act on this rendered chat, or None when it can."""
    if rendered.front_offset is None:
        return (
            "front mode under this chat template needs the start of your message, which could not be "
            "located in the rendered prompt; use mode all (or generated) for chat"
        )
    if n_vector_tokens > rendered.user_tokens:
        return (
            f"the ActAdd vector has {n_vector_tokens} tokens but your message and the assistant cue have "
            f"only {rendered.user_tokens}; front injection needs a message at least as long as the vector "
            "(lengthen the message or use mode all)"
        )
    return None


@dataclass(frozen=True)
class FrontLanding:
    vector_position: int  # position i of the ActAdd vector
    prompt_position: int  # the rendered prompt's token that receives it
    token: str


def front_landing(tokenizer, rendered: RenderedChat, n_vector_tokens: int) -> list[FrontLanding]:
    """Which rendered tokens a front vector's positions land on (the token preview under a template)."""
    if (reason := front_refusal(rendered, n_vector_tokens)) is not None:
        raise InvalidInputError(reason)
    assert rendered.front_offset is not None  # front_refusal checked it
    return [
        FrontLanding(
            i,
            rendered.front_offset + i,
            tokenizer.convert_ids_to_tokens(rendered.ids[rendered.front_offset + i]),
        )
        for i in range(n_vector_tokens)
    ]
