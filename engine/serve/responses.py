"""OpenAI-shaped response bodies: completions, chat completions, their stream chunks and errors."""

from __future__ import annotations

import time
import uuid
from typing import Any

# The engine's finish reasons -> OpenAI's ("stop" covers both end-of-text and a stop string).
FINISH = {"stop": "stop", "eos": "stop", "length": "length", "cancelled": "stop"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def chat_completion(rid: str, model: str, text: str, finish: str, use: dict) -> dict:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": FINISH[finish],
                "logprobs": None,
            }
        ],
        "usage": use,
    }


def chat_chunk(
    rid: str, model: str, delta: Any, finish: str | None = None, use: dict | None = None, choices=True
) -> dict:
    body: dict = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    body["choices"] = (
        [{"index": 0, "delta": delta, "finish_reason": FINISH[finish] if finish else None, "logprobs": None}]
        if choices
        else []
    )
    if use is not None:
        body["usage"] = use
    return body


def completion(rid: str, model: str, text: str, finish: str, use: dict) -> dict:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": FINISH[finish], "logprobs": None}],
        "usage": use,
    }


def completion_chunk(
    rid: str, model: str, text: Any, finish: str | None = None, use: dict | None = None, choices=True
) -> dict:
    body: dict = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model}
    body["choices"] = (
        [{"index": 0, "text": text, "finish_reason": FINISH[finish] if finish else None, "logprobs": None}]
        if choices
        else []
    )
    if use is not None:
        body["usage"] = use
    return body
