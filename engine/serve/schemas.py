"""The request bodies the server accepts: OpenAI's chat and completion requests plus the `steering` field.

Models are strict (no "4" for 4, no NaN or infinity: Python's json module reads `NaN` literals) and
ignore the fields that OpenAI clients send but this engine has no use for (`user`, `logit_bias`...).
Values are range-checked here; what depends on the loaded model (layers, context length, vectors that fit)
is checked when the request is resolved (engine.serve.steering_spec, engine.serve.prompts).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from engine.generation import MAX_NEW_TOKENS_LIMIT, SamplingConfig
from engine.vector import MODES

MAX_STEERING_ENTRIES = 8
MAX_STOP_STRINGS = 4
MAX_MESSAGES = 256
MAX_SEED = 2**63 - 1


def _utf8(text: str) -> str:
    # json.loads turns "\ud800" escapes into lone surrogates, which no tokenizer can encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text is not valid UTF-8 (a lone surrogate escape)") from exc
    return text


Text = Annotated[str, AfterValidator(_utf8)]
Mode = Literal["front", "all", "generated", "ablate"]
assert set(Mode.__args__) == set(MODES)  # type: ignore[attr-defined]  # one list of modes: engine.vector's


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class SteeringEntry(_Strict):
    """One library vector acting on this request: `{"vector": "love-hate", "coeff": 4, "layer": 6}`."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")

    vector: Text = Field(min_length=1, max_length=400)  # a library key, never a path
    coeff: float | None = Field(default=None, ge=-1e6, le=1e6)  # None: the vector's default coefficient
    layer: int | None = Field(default=None, ge=0, le=4096)  # move a single-layer vector to this layer
    mode: Mode | None = None  # None: the vector's default mode


class _Sampling(_Strict):
    model: Text = Field(min_length=1, max_length=2000)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    stop: Text | list[Annotated[Text, Field(min_length=1, max_length=200)]] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int | None = Field(default=None, ge=1, le=1)  # one choice per request
    stream: bool = False
    stream_options: dict | None = None  # {"include_usage": true} adds a usage chunk at the end
    steering: list[SteeringEntry] = Field(default_factory=list, max_length=MAX_STEERING_ENTRIES)

    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS or any(not s or len(s) > 200 for s in stops):
            raise ValueError(f"stop takes up to {MAX_STOP_STRINGS} strings of 1-200 characters")
        return tuple(stops)

    def sampling(self, default_max_tokens: int) -> SamplingConfig:
        """The engine's sampling settings. OpenAI's defaults: temperature 1, top_p 1, no penalties."""
        return SamplingConfig(
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            max_new_tokens=self.max_tokens or default_max_tokens,
            stop=self.stop_strings(),
            seed=self.seed,
        )

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class TextPart(_Strict):
    type: Literal["text"]
    text: Text


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS_LIMIT)

    def sampling(self, default_max_tokens: int) -> SamplingConfig:
        config = super().sampling(default_max_tokens)
        if self.max_completion_tokens is not None and self.max_tokens is None:
            config.max_new_tokens = self.max_completion_tokens  # the newer name of max_tokens
        return config


class CompletionRequest(_Sampling):
    prompt: Text | list[Text] = Field(min_length=1)
    echo: bool = False

    def prompt_text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise ValueError("send one prompt per request (a list of prompts is not supported)")
            return self.prompt[0]
        return self.prompt
