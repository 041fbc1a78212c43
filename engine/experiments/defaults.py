"""What a sweep measures when the user does not say: the metric and targets follow the vector's pair.

- A **sentiment pair** is one whose two prompts have clearly different VADER polarity (compound scores
  at least `SENTIMENT_GAP` apart, e.g. "Love" 0.64 vs "Hate" -0.57). It is measured with VADER
  (Hutto & Gilbert 2014, `vaderSentiment`, which ships its lexicon): the share of completions whose
  compound score lies on p+'s side (>= 0.05 or <= -0.05, VADER's own thresholds).
- Any other pair is a **topic pair**: p+ names the topic (" weddings" vs " "). Its targets are the
  content words of p+ that p- lacks, with their regular inflections (" weddings" -> wedding, weddings,
  wedding's, weddings'): the only word family derivable from the pair itself without a hand-made list.
  Pass --targets for a wider one (bride, groom, ...). A negation pair ("I talk about weddings" / "I do
  not talk about weddings") shares all its content words: then all of p+'s content words are targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from engine.errors import InvalidInputError
from engine.experiments import metrics
from engine.vector import SteeringVector

SENTIMENT_GAP = 0.5  # |compound(p+) - compound(p-)| that makes a pair a sentiment pair
VADER_THRESHOLD = 0.05  # VADER's documented cut-off between neutral and positive / negative


@lru_cache(maxsize=1)
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # type: ignore[import-untyped]

    return SentimentIntensityAnalyzer()


def vader_compound(text: str) -> float:
    """VADER's compound polarity of `text`, from -1 (most negative) to +1 (most positive)."""
    return float(_analyzer().polarity_scores(text)["compound"])


def vader_label(text: str) -> int:
    """+1 positive, -1 negative, 0 neutral, by VADER's compound score and its +-0.05 thresholds."""
    score = vader_compound(text)
    return 1 if score >= VADER_THRESHOLD else -1 if score <= -VADER_THRESHOLD else 0


def vader_shares(texts: Sequence[str]) -> tuple[float, float]:
    """(positive share, negative share) of `texts` by VADER (NaN for no texts)."""
    if not texts:
        return math.nan, math.nan
    labels = [vader_label(t) for t in texts]
    return labels.count(1) / len(labels), labels.count(-1) / len(labels)


def sentiment_sign(positive: str, negative: str) -> int:
    """+1 when p+ is the positive prompt of a sentiment pair, -1 when it is the negative one, 0 otherwise."""
    gap = vader_compound(positive) - vader_compound(negative)
    return 0 if abs(gap) < SENTIMENT_GAP else (1 if gap > 0 else -1)


def _stem(word: str) -> str:
    """The singular / bare form of a regularly inflected English word (no dictionary, no irregulars)."""
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ches", "ch"), ("shes", "sh"), ("xes", "x")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + repl
    if word.endswith("'s"):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def inflections(word: str) -> list[str]:
    """`word`'s regular noun inflections: bare form, plural and possessives ("wedding" -> 4 forms)."""
    base = _stem(word.lower())
    if base.endswith("y") and len(base) > 2 and base[-2] not in "aeiou":
        plural = base[:-1] + "ies"
    elif base.endswith(("s", "x", "z", "ch", "sh")):
        plural = base + "es"
    else:
        plural = base + "s"
    return list(dict.fromkeys([base, plural, base + "'s", plural + "'"]))


def word_family(positive: str, negative: str = "") -> list[str]:
    """Target words for a topic pair: content words of p+ (not in p-) and their inflections."""
    content = [w for w in metrics.words(positive) if w not in metrics.FUNCTION_WORDS and len(w) > 1]
    drop = {_stem(w) for w in metrics.words(negative)}
    # A negation pair ("I talk about weddings" / "I do not talk about weddings") shares every content
    # word: then the family is all of p+'s content words.
    content = [w for w in content if _stem(w) not in drop] or content
    return list(dict.fromkeys(form for w in content for form in inflections(w)))


@dataclass
class Measure:
    """What a sweep of one pair measures by default."""

    metric: str  # "sentiment" or "target-words"
    targets: list[str]  # topic words (empty for sentiment)
    sign: int  # sentiment: +1 counts positive completions, -1 negative ones; topic: +1
    reason: str  # one line for the user: why this metric

    def to_dict(self) -> dict:
        return {"metric": self.metric, "targets": self.targets, "sign": self.sign, "reason": self.reason}


def measure_for_pair(positive: str, negative: str) -> Measure:
    """The default metric and targets of a sweep of the pair (p+, p-); see the module docstring."""
    sign = sentiment_sign(positive, negative)
    if sign:
        side = "positive" if sign > 0 else "negative"
        return Measure(
            "sentiment",
            [],
            sign,
            f"p+ {positive.strip()!r} and p- {negative.strip()!r} differ in VADER polarity: "
            f"share of {side} completions",
        )
    targets = word_family(positive, negative)
    if not targets:
        raise InvalidInputError(
            f"cannot derive target words from p+ {positive!r}; give --targets w1,w2 or --metric"
        )
    return Measure("target-words", targets, 1, f"topic words of p+: {', '.join(targets[:6])}")


def measure_for_vector(vector: SteeringVector) -> Measure | None:
    """The default measure of a vector with stored ActAdd prompts (or pairs); None when it has none."""
    return measure_for_prompts(vector.prompts or {})


def measure_for_prompts(prompts: dict) -> Measure | None:
    """`measure_for_vector` from a vector's stored prompts ({"positive", "negative"} or {"pairs"})."""
    positive, negative = prompts.get("positive"), prompts.get("negative")
    if isinstance(positive, str) and isinstance(negative, str):
        try:
            return measure_for_pair(positive, negative)
        except InvalidInputError:  # nothing to derive targets from: the caller asks for them
            return None
    pairs = prompts.get("pairs")
    if isinstance(pairs, list) and pairs:
        joined = [
            (str(p.get("positive", "")), str(p.get("negative", ""))) for p in pairs if isinstance(p, dict)
        ]
        signs = [sentiment_sign(p, n) for p, n in joined]
        total = sum(signs)
        if abs(total) * 2 > len(joined):  # most pairs agree on a polarity
            side = "positive" if total > 0 else "negative"
            return Measure(
                "sentiment",
                [],
                1 if total > 0 else -1,
                f"pairs differ in VADER polarity: share of {side} completions",
            )
        words = [w for p, n in joined for w in word_family(p, n)]
        common = [w for w in dict.fromkeys(words) if words.count(w) * 2 >= len(joined)]
        if common:
            return Measure("target-words", common, 1, f"words shared by most p+: {', '.join(common[:6])}")
    return None
