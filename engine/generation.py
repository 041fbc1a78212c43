"""Streaming, per-row steered generation on top of transformers' `generate`.

One call generates every row of a batch together: side-by-side steered/unsteered panes are rows 0 and 1,
a coefficient sweep is one row per coefficient. Text arrives through `on_token` as per-row deltas from a
`BaseStreamer`; cancellation is a `StoppingCriteria` that reads a `threading.Event` once per token, and
a check of the same event before every decoder block while passes are slow (`engine.cancellation`), so
Stop ends a long pass.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from engine.architectures import context_limit
from engine.cancellation import BlockChecks, StoppedBetweenBlocks, cancel_between_blocks
from engine.chat import ChatTurn, RenderedChat, front_refusal, render_chat
from engine.effect import EffectRecorder
from engine.errors import ActAddError, InvalidInputError
from engine.models import LoadedModel
from engine.sampling import resolve_row_seeds, sampling_processors
from engine.steering import Steer, SteeringPlan
from engine.tokens import encode, pad_batch

MAX_NEW_TOKENS_LIMIT = 8192


@dataclass
class SamplingConfig:
    temperature: float = 1.0  # 0 means greedy decoding
    top_p: float = 1.0  # nucleus sampling mass (1.0: off)
    top_k: int = 0  # keep the k most likely tokens (0: off)
    repetition_penalty: float = 1.0  # transformers' multiplicative penalty (1.0: off)
    frequency_penalty: float = 0.0  # OpenAI-style: logit -= penalty * count in the generated text
    presence_penalty: float = 0.0  # OpenAI-style: logit -= penalty once a token is in the generated text
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()  # stop strings; the text is cut before them
    seed: int | None = 0  # every row samples from its own generator seeded with this; None: a random seed

    @classmethod
    def paper(cls, **overrides) -> SamplingConfig:
        """The ActAdd paper's sampling: temperature 1.0, top_p 0.3, frequency penalty 1.0, seed 0."""
        return cls(**{"temperature": 1.0, "top_p": 0.3, "frequency_penalty": 1.0, "seed": 0, **overrides})

    def validate(self) -> None:
        numbers = {k: v for k, v in asdict(self).items() if isinstance(v, float)}
        if bad := [k for k, v in numbers.items() if not math.isfinite(v)]:
            raise InvalidInputError(f"{bad[0]} must be a finite number")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise InvalidInputError(
                "need temperature >= 0, 0 < top_p <= 1, top_k >= 0 and repetition_penalty > 0"
            )
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise InvalidInputError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT}")


@dataclass
class TokenEvent:
    row: int
    text: str  # the new text of this row since the last event (may be "" while a character is incomplete)
    token_id: int
    step: int  # 0-based index of the generated token
    # With `effect_rows`: KL(steered || unsteered) in nats of the raw next-token distributions this token
    # was drawn from, on the same context (engine/effect.py), and the unsteered model's most likely
    # tokens there with their probabilities. None and [] for rows that are not measured.
    kl: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class RowResult:
    text: str  # the generated continuation only
    token_ids: list[int]
    prompt_token_ids: list[int]
    finish_reason: str  # "length", "eos", "stop" or "cancelled"
    effect: list[float] | None = None  # KL per token of token_ids, for rows in generate's effect_rows


@dataclass
class GenerationResult:
    rows: list[RowResult]
    seconds: float
    cancelled: bool

    @property
    def n_new_tokens(self) -> int:
        return sum(len(r.token_ids) for r in self.rows)

    @property
    def tokens_per_second(self) -> float:
        return self.n_new_tokens / self.seconds if self.seconds > 0 else 0.0


TokenCallback = Callable[[TokenEvent], None]


class CancelCriteria(StoppingCriteria):
    """Stops every row before the next token once `event` is set; tells `checks` (the per-block Stop check,
    engine/cancellation.py) that a token is done, so that it stays only while tokens are slow."""

    def __init__(self, event: threading.Event, checks: BlockChecks | None = None):
        self.event = event
        self.checks = checks

    def __call__(self, input_ids: Tensor, scores, **kwargs) -> Tensor:
        if self.checks is not None:
            self.checks.token_done()
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def stop_holdback(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters might be the start of a stop string (and must not be shown yet)."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                longest = max(longest, k)
                break
    return longest


class RowStreamer(BaseStreamer):
    """Receives `[batch]` token ids per step from `generate` and emits per-row text deltas."""

    def __init__(
        self, tokenizer, n_rows: int, stops: Sequence[str], on_token: TokenCallback | None, effect=None
    ):
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stops if s)
        self.on_token = on_token
        self.effect = effect  # EffectRecorder or None
        self.eos_ids = {tokenizer.eos_token_id} - {None}
        self.ids: list[list[int]] = [[] for _ in range(n_rows)]
        self.effects: list[list[float]] = [[] for _ in range(n_rows)]  # KL of each token of ids[row]
        self.texts = [""] * n_rows  # full decoded text (cut at a stop string once found)
        self.shown = [0] * n_rows  # characters of texts[row] already emitted
        self.finish: list[str | None] = [None] * n_rows
        self.step = 0
        self._prompt_seen = False

    def put(self, value: Tensor) -> None:
        if not self._prompt_seen:  # the first call carries the prompt ids
            self._prompt_seen = True
            return
        tokens = value.view(-1).tolist()[: len(self.ids)]  # [batch]; shadow rows at the end are not shown
        for row, token in enumerate(tokens):
            if self.finish[row] is not None:
                continue  # generate pads finished rows
            kl, top = self.effect.describe(row) if self.effect is not None else (None, [])
            if token in self.eos_ids:
                self.finish[row] = "eos"
                self._emit(row, token, final=True, kl=kl, top=top)
                continue
            self.ids[row].append(token)
            if kl is not None:
                self.effects[row].append(kl)
            text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
            hits = [text.find(s, max(0, self.shown[row] - len(s))) for s in self.stops]
            hits = [h for h in hits if h >= 0]
            if hits:
                text, self.finish[row] = text[: min(hits)], "stop"
            self.texts[row] = text
            self._emit(row, token, final=self.finish[row] is not None, kl=kl, top=top)
        self.step += 1

    def _emit(self, row: int, token: int, final: bool, kl: float | None, top: list) -> None:
        text = self.texts[row]
        end = len(text) if final else len(text) - stop_holdback(text, self.stops)
        if not final:
            # An incomplete multi-byte character decodes to U+FFFD, one per byte with a byte-fallback
            # tokenizer (Llama, Gemma): hold back every trailing one until the character is complete.
            end = min(end, len(text.rstrip("\ufffd")))
        delta = text[self.shown[row] : end]
        self.shown[row] = max(self.shown[row], end)
        if self.on_token is not None:
            self.on_token(TokenEvent(row=row, text=delta, token_id=token, step=self.step, kl=kl, top=top))

    def end(self) -> None:
        for row in range(len(self.texts)):
            if self.shown[row] < len(self.texts[row]) and self.on_token is not None:
                self.on_token(
                    TokenEvent(row=row, text=self.texts[row][self.shown[row] :], token_id=-1, step=self.step)
                )
                self.shown[row] = len(self.texts[row])


def _chat_prompt(loaded: LoadedModel, prompt: str) -> RenderedChat:
    if not loaded.info.has_chat_template:
        raise InvalidInputError("this model's tokenizer has no chat template; turn the chat toggle off")
    return render_chat(loaded.tokenizer, "", [ChatTurn("user", prompt)])


def front_refusal_of(prompt: RenderedChat | Sequence[int], needed: int) -> str | None:
    """Why a front vector of `needed` tokens can't act on this prompt row, or None: THE rule, shared by
    `generate` and the server's checks before a request joins a batch."""
    if isinstance(prompt, RenderedChat):
        return front_refusal(prompt, needed) if needed else None
    if needed > len(prompt):
        return (
            f"the ActAdd vector has {needed} tokens but the prompt has only {len(prompt)}; front injection "
            "needs a prompt at least as long as the vector (lengthen the prompt or use mode all)"
        )
    return None


def prompt_ids(loaded: LoadedModel, prompt: str, chat: bool = False) -> list[int]:
    """The token ids of a user prompt: plain text as `tokens.encode` begins it, or the chat template's."""
    if not prompt or not prompt.strip():
        raise InvalidInputError("the prompt is empty")
    if not chat:
        return encode(loaded.tokenizer, prompt)
    return _chat_prompt(loaded, prompt).ids


def generate(
    loaded: LoadedModel,
    prompt: str | RenderedChat | Sequence[str | Sequence[int] | RenderedChat],
    steering: SteeringPlan | Sequence[Sequence[Steer]] | None = None,
    sampling: SamplingConfig | None = None,
    *,
    cancel: threading.Event | None = None,
    on_token: TokenCallback | None = None,
    chat: bool = False,
    stopping: Sequence[StoppingCriteria] = (),
    row_seeds: Sequence[int | None] | None = None,
    effect_rows: Sequence[int] = (),
) -> GenerationResult:
    """Generate one continuation per steering row (one unsteered row when `steering` is None).

    `prompt` is shared by all rows, or one per row: text (wrapped as one user turn when `chat`), token ids,
    or a `RenderedChat` (engine/chat.py), whose front vectors start at the last user message.
    Each row samples from its own generator, seeded with `row_seeds[row]` (default: `sampling.seed` for
    every row), so rows with the same seed and prompt differ by steering alone, and a row's text does not
    depend on the other rows of the batch. `effect_rows` are the rows whose token events (and
    `RowResult.effect`) carry KL(steered || unsteered) on the same context; each costs one extra unsteered
    row in the batch (engine/effect.py). `stopping` adds criteria that may stop single rows (the server's
    per-row cancel).
    """
    sampling = sampling or SamplingConfig()
    sampling.validate()
    plan = steering if isinstance(steering, SteeringPlan) else SteeringPlan(steering or [[]])
    prompts = [prompt] * plan.n_rows if isinstance(prompt, (str, RenderedChat)) else list(prompt)
    if len(prompts) != plan.n_rows:
        raise InvalidInputError(f"{len(prompts)} prompts for {plan.n_rows} steering rows")
    seeds = resolve_row_seeds(sampling.seed, row_seeds, plan.n_rows)
    measured = list(dict.fromkeys(effect_rows))
    if bad := [r for r in measured if isinstance(r, bool) or not 0 <= r < plan.n_rows]:
        raise InvalidInputError(f"effect row {bad[0]} is not a row of this batch (0-{plan.n_rows - 1})")
    # A chat row's front starts at the user's message (engine/chat.py), a plain row's at its first token.
    rendered = [_chat_prompt(loaded, p) if chat and isinstance(p, str) and p.strip() else p for p in prompts]
    rows = [
        r.ids if isinstance(r, RenderedChat) else prompt_ids(loaded, r) if isinstance(r, str) else list(r)
        for r in rendered
    ]
    # None (a template that hides the message) only with no front vector: front_refusal refuses the rest
    front_offsets = [(r.front_offset or 0) if isinstance(r, RenderedChat) else 0 for r in rendered]
    for row, (row_ids, chat_row) in enumerate(zip(rows, rendered, strict=True)):
        prompt_row = chat_row if isinstance(chat_row, RenderedChat) else row_ids
        if (reason := front_refusal_of(prompt_row, plan.max_front_tokens(row))) is not None:
            raise InvalidInputError(reason)
    # Shadow rows: one unsteered copy of each measured row, at the end of the batch (not shown).
    shadows = {plan.n_rows + i: row for i, row in enumerate(measured)}
    tokenizer = loaded.tokenizer
    ids, mask = pad_batch(rows + [rows[r] for r in measured], tokenizer.pad_token_id, side="left")
    max_new = sampling.max_new_tokens
    if (limit := context_limit(loaded.model.config)) is not None:
        if ids.shape[1] >= limit:
            raise InvalidInputError(f"the prompt has {ids.shape[1]} tokens; this model's context is {limit}")
        max_new = min(max_new, limit - ids.shape[1])

    cancel = cancel or threading.Event()
    effect = EffectRecorder(tokenizer, {row: shadow for shadow, row in shadows.items()}) if measured else None
    streamer = RowStreamer(tokenizer, plan.n_rows, sampling.stop, on_token, effect)
    # Greedy decoding over processors that sample: see engine/sampling.py. transformers adds none of its
    # own sampling processors with do_sample=False, and repetition_penalty=1.0 keeps a model's default
    # from adding a second penalty.
    processors = sampling_processors(sampling, ids.shape[1], seeds, shadows)
    kwargs: dict = {}
    if sampling.stop:
        kwargs.update(stop_strings=list(sampling.stop), tokenizer=tokenizer)

    device = loaded.device
    started = time.perf_counter()
    handle = effect.install(loaded.model) if effect is not None else None
    out_of_memory = False
    try:
        with (
            plan.apply(loaded.blocks, unsteered_rows=len(shadows)),
            cancel_between_blocks(loaded.blocks, cancel) as checks,
            torch.inference_mode(),
        ):
            # Each row's left padding (and chat front offset): front positions count from its first real
            # token, or from the user's message under a chat template.
            plan.bind(mask, front_offsets + [front_offsets[r] for r in measured])  # shadows copy their row
            loaded.model.generate(  # type: ignore[operator]
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                repetition_penalty=1.0,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([CancelCriteria(cancel, checks), *stopping]),
                streamer=streamer,
                **kwargs,
            )
    except StoppedBetweenBlocks:
        pass  # Stop mid-pass: `cancel` is set and the rows keep what they had, as after a token
    except (torch.OutOfMemoryError, MemoryError):
        out_of_memory = True  # raised below, once this traceback (and the activations it holds) is gone
    finally:
        if handle is not None:
            handle.remove()
    if out_of_memory:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise ActAddError(
            f"out of memory while generating {ids.shape[0]} row(s) of up to {max_new} tokens; try fewer rows "
            "or tokens, 4-bit quantization or a smaller model"
        )
    seconds = time.perf_counter() - started
    cancelled = cancel.is_set()
    results = [
        RowResult(
            text=streamer.texts[row],
            token_ids=streamer.ids[row],
            prompt_token_ids=rows[row],
            finish_reason=streamer.finish[row] or ("cancelled" if cancelled else "length"),
            effect=streamer.effects[row] if row in measured else None,
        )
        for row in range(plan.n_rows)
    ]
    return GenerationResult(rows=results, seconds=seconds, cancelled=cancelled)
