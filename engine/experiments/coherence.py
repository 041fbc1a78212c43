"""The coherence guard of sweeps: is steered text still text, judged on real models' output?

Two signals, both measured against the model's own unsteered samples of the same sweep:

- **Plausibility.** The perplexity of each steered completion under the *unsteered* model, divided by the
  median perplexity of the unsteered completions. Fluent text on another topic stays near 1-3x; broken
  grammar, token soup and foreign-script drift are 5-100x and more.
- **Repetition.** The share of word trigrams that repeat an earlier trigram, and the share of distinct
  word bigrams. Small real models fall into loops ("the bride and the groom and the bride and ...") long
  before their perplexity rises: a loop is *likely* text.

Plus the word-level checks of `metrics.is_degenerate` (empty output, word salad without function words).
A sample failing any check is incoherent; a cell is incoherent when `max_bad_share` of its samples are.
Thresholds were tuned on SmolLM2-135M-Instruct and Gemma-3-270M (see docs/replication.md, "Real pretrained
models"): relative to the unsteered baseline, so the same numbers suit a model whose text has perplexity 3
and one whose text has perplexity 30.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from engine.experiments import metrics


def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    tokens = metrics.words(text)
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_share(text: str, n: int = 3) -> float:
    """Share of word n-grams that already occurred earlier in the text (0: none repeat; ~1: a loop)."""
    grams = ngrams(text, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(text: str, n: int = 2) -> float:
    """Distinct word n-grams / all word n-grams (1.0 for text too short to have any)."""
    grams = ngrams(text, n)
    return len(set(grams)) / len(grams) if grams else 1.0


@dataclass(frozen=True)
class CoherenceGuard:
    max_ppl_ratio: float = 4.0  # sample perplexity / median unsteered sample perplexity
    max_repeated_trigrams: float = 0.3  # repeated word-trigram share of one sample
    min_distinct_bigrams: float = 0.5  # distinct word-bigram share of one sample
    max_bad_share: float = 0.5  # a cell with this share of incoherent samples is incoherent

    def sample_ok(self, text: str, perplexity: float, baseline: float) -> bool:
        """One completion: fluent enough under the unsteered model, and not a loop or salad."""
        if metrics.is_degenerate(text):
            return False
        if len(metrics.words(text)) >= 8 and (
            repeated_ngram_share(text, 3) > self.max_repeated_trigrams
            or distinct_n(text, 2) < self.min_distinct_bigrams
        ):
            return False
        return not (
            math.isfinite(perplexity)
            and math.isfinite(baseline)
            and baseline > 0
            and perplexity / baseline > self.max_ppl_ratio
        )

    def bad_share(self, texts: Sequence[str], perplexities: Sequence[float], baseline: float) -> float:
        if not texts:
            return math.nan
        ok = [self.sample_ok(t, p, baseline) for t, p in zip(texts, perplexities, strict=True)]
        return 1.0 - sum(ok) / len(ok)

    def cell_ok(self, bad_share: float) -> bool:
        return math.isfinite(bad_share) and bad_share < self.max_bad_share


DEFAULT_GUARD = CoherenceGuard()


def median(values: Sequence[float]) -> float:
    """Median of the finite values (NaN for none): the baseline scale of the plausibility check."""
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return math.nan
    mid = len(finite) // 2
    return finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2
