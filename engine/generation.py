"""Streaming, per-row steered generation on top of transformers' `generate`.

One call generates every row of a batch together: side-by-side steered/unsteered panes are rows 0 and 1,
a coefficient sweep is one row per coefficient. Text arrives through `on_token` as per-row deltas from a
`BaseStreamer`; cancellation is a `StoppingCriteria` that reads a `threading.Event` once per token, and
a check of the same event before every decoder block (`engine.cancellation`), so Stop ends a long pass.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from engine.architectures import context_limit
from engine.cancellation import StoppedBetweenBlocks, cancel_between_blocks
from engine.chat import ChatTurn, RenderedChat, front_refusal, render_chat
from engine.errors import ActAddError, InvalidInputError
from engine.models import LoadedModel
from engine.penalties import PresencePenaltyProcessor
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
    seed: int | None = 0  # None: not seeded

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
    kl: float | None = None  # KL(row || reference row) of the next-token distributions, when asked for
    top: list[tuple[str, float]] = field(default_factory=list)  # this row's most likely tokens and probs


@dataclass
class RowResult:
    text: str  # the generated continuation only
    token_ids: list[int]
    prompt_token_ids: list[int]
    finish_reason: str  # "length", "eos", "stop" or "cancelled"


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


class FrequencyPenaltyProcessor(LogitsProcessor):
    """OpenAI-style frequency penalty over generated tokens (the paper samples with 1.0)."""

    def __init__(self, penalty: float, prompt_length: int):
        self.penalty = penalty
        self.prompt_length = prompt_length

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        generated = input_ids[:, self.prompt_length :]  # [batch, t]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(
            1, generated, torch.ones_like(generated, dtype=scores.dtype)
        )
        return scores - self.penalty * counts


class CancelCriteria(StoppingCriteria):
    """Stops every row before the next token once `event` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: Tensor, scores, **kwargs) -> Tensor:
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
        self.effect = effect  # _EffectRecorder or None
        self.eos_ids = {tokenizer.eos_token_id} - {None}
        self.ids: list[list[int]] = [[] for _ in range(n_rows)]
        self.texts = [""] * n_rows  # full decoded text (cut at a stop string once found)
        self.shown = [0] * n_rows  # characters of texts[row] already emitted
        self.finish: list[str | None] = [None] * n_rows
        self.step = 0
        self._prompt_seen = False

    def put(self, value: Tensor) -> None:
        if not self._prompt_seen:  # the first call carries the prompt ids
            self._prompt_seen = True
            return
        tokens = value.view(-1).tolist()  # [batch]
        for row, token in enumerate(tokens):
            if self.finish[row] is not None:
                continue  # generate pads finished rows
            if token in self.eos_ids:
                self.finish[row] = "eos"
                self._emit(row, token, final=True)
                continue
            self.ids[row].append(token)
            text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
            hits = [text.find(s, max(0, self.shown[row] - len(s))) for s in self.stops]
            hits = [h for h in hits if h >= 0]
            if hits:
                text, self.finish[row] = text[: min(hits)], "stop"
            self.texts[row] = text
            self._emit(row, token, final=self.finish[row] is not None)
        self.step += 1

    def _emit(self, row: int, token: int, final: bool) -> None:
        text = self.texts[row]
        end = len(text) if final else len(text) - stop_holdback(text, self.stops)
        if not final:
            # An incomplete multi-byte character decodes to U+FFFD, one per byte with a byte-fallback
            # tokenizer (Llama, Gemma): hold back every trailing one until the character is complete.
            end = min(end, len(text.rstrip("\ufffd")))
        delta = text[self.shown[row] : end]
        self.shown[row] = max(self.shown[row], end)
        if self.on_token is not None:
            kl, top = self.effect.describe(row, self.step) if self.effect is not None else (None, [])
            self.on_token(TokenEvent(row=row, text=delta, token_id=token, step=self.step, kl=kl, top=top))

    def end(self) -> None:
        for row in range(len(self.texts)):
            if self.shown[row] < len(self.texts[row]) and self.on_token is not None:
                self.on_token(
                    TokenEvent(row=row, text=self.texts[row][self.shown[row] :], token_id=-1, step=self.step)
                )
                self.shown[row] = len(self.texts[row])


class _EffectRecorder:
    """Keeps the raw next-token log-probs of each step (a hook on the LM head) to show steering's effect."""

    def __init__(self, loaded: LoadedModel, reference_row: int, top_k: int = 5):
        self.tokenizer = loaded.tokenizer
        self.reference_row = reference_row
        self.top_k = top_k
        self.logprobs: Tensor | None = None  # [batch, vocab] of the latest step
        self.head = loaded.model.get_output_embeddings()

    def hook(self, module, args, output: Tensor) -> None:
        self.logprobs = torch.log_softmax(output[:, -1].float(), dim=-1).cpu()  # [batch, vocab]

    def describe(self, row: int, step: int) -> tuple[float | None, list[tuple[str, float]]]:
        if self.logprobs is None:
            return None, []
        lp, ref = self.logprobs[row], self.logprobs[self.reference_row]
        kl = float((lp.exp() * (lp - ref)).sum()) if row != self.reference_row else 0.0
        probs, ids = lp.exp().topk(self.top_k)
        return kl, [
            (str(self.tokenizer.decode([i])), float(p))
            for p, i in zip(probs.tolist(), ids.tolist(), strict=True)
        ]


def _chat_prompt(loaded: LoadedModel, prompt: str) -> RenderedChat:
    if not loaded.info.has_chat_template:
        raise InvalidInputError("this model's tokenizer has no chat template; turn the chat toggle off")
    return render_chat(loaded.tokenizer, "", [ChatTurn("user", prompt)])


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
    effect_reference_row: int | None = None,
    stopping: Sequence[StoppingCriteria] = (),
) -> GenerationResult:
    """Generate one continuation per steering row (one unsteered row when `steering` is None).

    `prompt` is shared by all rows, or one per row: text (wrapped as one user turn when `chat`), token ids,
    or a `RenderedChat` (engine/chat.py), whose front vectors start at the last user message.
    `stopping` adds criteria that may stop single rows (the server's per-row cancel). `effect_reference_row` asks each token event to carry
    the KL divergence of its row's next-token distribution from that row's (e.g. the unsteered pane).
    """
    sampling = sampling or SamplingConfig()
    sampling.validate()
    plan = steering if isinstance(steering, SteeringPlan) else SteeringPlan(steering or [[]])
    prompts = [prompt] * plan.n_rows if isinstance(prompt, (str, RenderedChat)) else list(prompt)
    if len(prompts) != plan.n_rows:
        raise InvalidInputError(f"{len(prompts)} prompts for {plan.n_rows} steering rows")
    # A chat row's front starts at the user's message (engine/chat.py), a plain row's at its first token.
    rendered = [_chat_prompt(loaded, p) if chat and isinstance(p, str) and p.strip() else p for p in prompts]
    rows = [
        r.ids if isinstance(r, RenderedChat) else prompt_ids(loaded, r) if isinstance(r, str) else list(r)
        for r in rendered
    ]
    front_offsets = [r.front_offset if isinstance(r, RenderedChat) else 0 for r in rendered]
    for row, (row_ids, chat_row) in enumerate(zip(rows, rendered, strict=True)):
        needed = plan.max_front_tokens(row)
        if isinstance(chat_row, RenderedChat):
            if needed and (reason := front_refusal(chat_row, needed)) is not None:
                raise InvalidInputError(reason)
        elif needed > len(row_ids):
            raise InvalidInputError(
                f"the ActAdd vector has {needed} tokens but the prompt has only {len(row_ids)}; front injection "
                "needs a prompt at least as long as the vector (lengthen the prompt or use mode all)"
            )
    tokenizer = loaded.tokenizer
    ids, mask = pad_batch(rows, tokenizer.pad_token_id, side="left")
    max_new = sampling.max_new_tokens
    if (limit := context_limit(loaded.model.config)) is not None:
        if ids.shape[1] >= limit:
            raise InvalidInputError(f"the prompt has {ids.shape[1]} tokens; this model's context is {limit}")
        max_new = min(max_new, limit - ids.shape[1])

    cancel = cancel or threading.Event()
    effect = _EffectRecorder(loaded, effect_reference_row) if effect_reference_row is not None else None
    streamer = RowStreamer(tokenizer, plan.n_rows, sampling.stop, on_token, effect)
    processors = LogitsProcessorList()
    if sampling.frequency_penalty:
        processors.append(FrequencyPenaltyProcessor(sampling.frequency_penalty, ids.shape[1]))
    if sampling.presence_penalty:
        processors.append(PresencePenaltyProcessor(sampling.presence_penalty, ids.shape[1]))
    kwargs: dict = {"do_sample": sampling.temperature > 0}
    if sampling.temperature > 0:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or None)
    if sampling.stop:
        kwargs.update(stop_strings=list(sampling.stop), tokenizer=tokenizer)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)

    device = loaded.device
    started = time.perf_counter()
    handle = effect.head.register_forward_hook(effect.hook) if effect is not None else None
    out_of_memory = False
    try:
        with (
            plan.apply(loaded.blocks),
            cancel_between_blocks(loaded.blocks, cancel),
            torch.inference_mode(),
        ):
            # Each row's left padding (and chat front offset): front positions count from its first real
            # token, or from the user's message under a chat template.
            plan.bind(mask, [o or 0 for o in front_offsets])
            loaded.model.generate(  # type: ignore[operator]
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new,
                repetition_penalty=sampling.repetition_penalty,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([CancelCriteria(cancel), *stopping]),
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
            f"out of memory while generating {plan.n_rows} row(s) of up to {max_new} tokens; try fewer rows "
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
        )
        for row in range(plan.n_rows)
    ]
    return GenerationResult(rows=results, seconds=seconds, cancelled=cancelled)
