"""Common random numbers: every row of a batch samples from its own `torch.Generator`.

Rows that are compared (the unsteered and steered panes, the cells of a sweep) get the same seed, so they
draw the same random numbers and differ by steering alone: a coefficient of 0 reproduces the unsteered
text token for token, and a row's text does not depend on which other rows share its batch.

Sampling is the Gumbel-max trick on transformers' logits processors, with `generate(do_sample=False)`:
penalties -> temperature -> top-k -> top-p filter the scores as transformers' own sampling would, then
`PerRowGumbelNoise` adds `-log(-log(U))`, U ~ Uniform[0, 1) from the row's generator, and greedy decoding
takes the argmax. argmax(logits + Gumbel noise) is an exact sample from softmax(logits), and filtered
tokens (-inf) can never win. `ForceShadowTokens` runs last: it makes an unsteered "shadow" row take the
token its source row just chose (teacher forcing inside `generate`, see engine/effect.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from engine.errors import InvalidInputError
from engine.penalties import PresencePenaltyProcessor

SEED_LIMIT = 2**63  # torch.Generator.manual_seed takes any int below 2**64; keep well inside it


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


class PerRowGumbelNoise(LogitsProcessor):
    """Adds Gumbel(0, 1) noise to row `r` of the scores from a generator seeded with `seeds[r]`.

    Rows beyond `len(seeds)` (shadow rows) get no noise. Each generator advances by one `[vocab]` draw
    per step, whatever the other rows do, so a row's draws depend on its seed and step alone.
    """

    def __init__(self, seeds: Sequence[int]):
        self.seeds = list(seeds)
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.generators is None:  # created on the scores' device, which a device map decides
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        vocab = scores.shape[1]
        noise = torch.stack(
            [
                torch.rand(vocab, generator=g, device=scores.device, dtype=torch.float32)
                for g in self.generators
            ]
        )  # [rows, vocab]
        gumbel = -torch.log(-torch.log(noise))  # U = 0 gives -inf: that token is simply never picked
        scores = scores.clone()
        scores[: len(self.seeds)] += gumbel.to(scores.dtype)
        return scores


class ForceShadowTokens(LogitsProcessor):
    """Makes each shadow row pick the token its source row picks at this step (greedy decoding only).

    `shadows` maps shadow row -> source row. It must run after every other processor, so that the argmax
    it reads is exactly the one greedy decoding is about to take for the source row.
    """

    def __init__(self, shadows: dict[int, int]):
        self.shadow_rows = list(shadows)
        self.source_rows = list(shadows.values())

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        chosen = scores[self.source_rows].argmax(dim=-1)  # [shadows]
        scores = scores.clone()
        scores[self.shadow_rows] = float("-inf")
        scores[self.shadow_rows, chosen] = 0.0
        return scores


def _random_seed() -> int:
    return int.from_bytes(os.urandom(8), "little") % SEED_LIMIT


def resolve_row_seeds(seed: int | None, row_seeds: Sequence[int | None] | None, n_rows: int) -> list[int]:
    """One seed per row: `row_seeds` as given (None: a random seed for that row, e.g. a server request
    without one), or `seed` for every row (one random seed shared by all rows when None)."""
    if row_seeds is None:
        row_seeds = [seed if seed is not None else _random_seed()] * n_rows
    seeds = [s if s is not None else _random_seed() for s in row_seeds]
    if len(seeds) != n_rows:
        raise InvalidInputError(f"{len(seeds)} row seeds for {n_rows} rows")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < SEED_LIMIT:
            raise InvalidInputError(f"seed {s!r} must be an integer between 0 and 2**63 - 1")
    return seeds


def sampling_processors(
    sampling,  # engine.generation.SamplingConfig
    prompt_length: int,
    row_seeds: Sequence[int],
    shadows: dict[int, int],
) -> LogitsProcessorList:
    """The whole decoding rule as processors for `generate(do_sample=False)`, in transformers' order:
    penalties, temperature, top-k, top-p, per-row Gumbel noise (temperature > 0), shadow forcing."""
    processors = LogitsProcessorList()
    if sampling.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
    if sampling.frequency_penalty:
        processors.append(FrequencyPenaltyProcessor(sampling.frequency_penalty, prompt_length))
    if sampling.presence_penalty:
        processors.append(PresencePenaltyProcessor(sampling.presence_penalty, prompt_length))
    if sampling.temperature > 0:
        if sampling.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_k:
            processors.append(TopKLogitsWarper(sampling.top_k))
        if sampling.top_p < 1.0:
            processors.append(TopPLogitsWarper(sampling.top_p))
        processors.append(PerRowGumbelNoise(row_seeds))
    if shadows:
        processors.append(ForceShadowTokens(shadows))
    return processors
