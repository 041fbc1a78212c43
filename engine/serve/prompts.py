"""Requests -> prompt token ids, with the model's limits checked before a request joins a batch.

A completion prompt is tokenized as `python main.py generate` does (one BOS, engine.generation.prompt_ids).
Chat messages go through the tokenizer's chat template as engine/chat.py renders it (the app's Chat tab and
`generate --chat`): one user message gives exactly the ids of `generate --chat`, and front vectors start
at the last user message. A model without a chat template (the demo model, tiny test models) gets a plain
transcript ("User: ...\nAssistant:") so that chat front ends still work with it.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.architectures import context_limit
from engine.chat import ChatTurn, RenderedChat, render_chat
from engine.errors import InvalidInputError
from engine.generation import front_refusal_of, prompt_ids
from engine.models import LoadedModel
from engine.serve.schemas import ChatMessage
from engine.steering import Steer, SteeringPlan
from engine.tokens import encode

_ROLE_NAMES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}


def transcript(messages: Sequence[ChatMessage]) -> str:
    """The fallback rendering for models without a chat template; ends with the assistant's turn."""
    lines = [f"{_ROLE_NAMES[m.role]}: {m.text()}" for m in messages]
    return "\n".join([*lines, "Assistant:"])


def chat_prompt(loaded: LoadedModel, messages: Sequence[ChatMessage]) -> RenderedChat | list[int]:
    """The prompt of a chat request: rendered as the app's Chat tab and `generate --chat` render it
    (engine/chat.py: no extra BOS, front vectors start at the last user message), or the plain transcript
    for a model without a chat template."""
    if not any(m.text().strip() for m in messages):
        raise InvalidInputError("the messages are empty")
    if not loaded.info.has_chat_template:
        return encode(loaded.tokenizer, transcript(messages))
    system = "\n\n".join(m.text() for m in messages if m.role in ("system", "developer"))
    turns = [ChatTurn(m.role, m.text()) for m in messages if m.role in ("user", "assistant")]
    try:
        return render_chat(loaded.tokenizer, system, turns)
    except InvalidInputError:
        raise
    except Exception as exc:  # templates raise their own errors (e.g. "roles must alternate")
        raise InvalidInputError(f"this model's chat template refused the messages: {exc}") from exc


def completion_ids(loaded: LoadedModel, prompt: str) -> list[int]:
    return prompt_ids(loaded, prompt, chat=False)


def check_fits_model(loaded: LoadedModel, prompt: RenderedChat | list[int], steers: list[Steer]) -> None:
    """Refuse, before batching, what `generate` would refuse for the whole batch."""
    ids = prompt.ids if isinstance(prompt, RenderedChat) else prompt
    limit = context_limit(loaded.model.config)
    if limit is not None and len(ids) >= limit:
        raise InvalidInputError(f"the prompt has {len(ids)} tokens; this model's context is {limit}")
    if (reason := front_refusal_of(prompt, SteeringPlan([steers]).max_front_tokens(0))) is not None:
        raise InvalidInputError(reason)
