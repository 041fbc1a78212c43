"""Measurements for the ActAdd experiments: word-list scores on text, and steered next-token statistics.

Text metrics (no model):
- `topic_fraction`: the share of completions that contain at least one word (or phrase) of a topic list,
  the paper's "fraction of wedding-related completions".
- `sentiment_shares`: the (positive, negative) shares of completions by lexicon count: a completion is
  positive when it has more positive than negative lexicon words, negative for the reverse, else neither.
- `repetition_rate` / `is_degenerate`: how loopy or salad-like a completion is.

Model metrics (per-row steering in one batch, through `SteeringPlan`):
- `target_prob`: the next-token probability of a set of target words after each prompt.
- `token_nll` / `perplexities`: the perplexity of reference texts, with ActAdd applied at the front of
  the text itself (the paper's off-target perplexity), optionally with a prompt prefix instead
  (the prompting baseline); only the text's own tokens are scored in either case.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence

import torch
from torch import Tensor

from engine.architectures import context_limit
from engine.errors import InvalidInputError
from engine.models import LoadedModel
from engine.steering import Steer, SteeringPlan
from engine.tokens import bos_rule, encode, pad_batch

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

# A completion is degenerate when most of its word bigrams repeat earlier ones (loops), when it uses very
# few distinct words for its length, or when it has almost no function words (word salad such as
# "groom groom bride weddings food sports ..."; fluent English is ~40% function words).
DEGENERATE_REPETITION = 0.5
DEGENERATE_DISTINCT = 0.3
DEGENERATE_FUNCTION_SHARE = 0.1
_FUNCTION_WORDS = (
    "a an the and or but so of to in on at for with from by as into up down out over after before then "
    "than that this these those it its i we you he she they me us him her them my our your his their "
    "is are was were be been am has have had do did not no all there here what when while who which"
)
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())
# The model-based checks (perplexity under the unsteered model, n-gram repetition) and the cell rule
# live in `engine.experiments.coherence`.


# ---- text metrics ---------------------------------------------------------------------------------------
def words(text: str) -> list[str]:
    """Lower-case word tokens of `text` (letters and digits, with an optional 's / 't ... suffix)."""
    return _WORD.findall(text.lower())


def _phrases(vocabulary: Sequence[str]) -> list[tuple[str, ...]]:
    out = {tuple(words(w)) for w in vocabulary}
    out.discard(())
    return sorted(out)


def count_hits(text: str, vocabulary: Sequence[str]) -> int:
    """How many times words or multi-word phrases of `vocabulary` occur in `text` (whole words only)."""
    tokens = words(text)
    phrases = _phrases(vocabulary)
    singles = {p[0] for p in phrases if len(p) == 1}
    hits = sum(1 for t in tokens if t in singles)
    for phrase in (p for p in phrases if len(p) > 1):
        n = len(phrase)
        hits += sum(1 for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n]) == phrase)
    return hits


def topic_fraction(texts: Sequence[str], vocabulary: Sequence[str]) -> float:
    """Share of `texts` with at least one topic word (NaN for no texts)."""
    if not texts:
        return math.nan
    return sum(count_hits(t, vocabulary) > 0 for t in texts) / len(texts)


def topic_word_rate(texts: Sequence[str], vocabulary: Sequence[str]) -> float:
    """Topic words per word over all `texts` (a graded companion of `topic_fraction`)."""
    total = sum(len(words(t)) for t in texts)
    return sum(count_hits(t, vocabulary) for t in texts) / total if total else math.nan


def sentiment_label(text: str, positive: Sequence[str], negative: Sequence[str]) -> int:
    """+1 if `text` has more positive than negative lexicon words, -1 for the reverse, 0 otherwise."""
    pos, neg = count_hits(text, positive), count_hits(text, negative)
    return (pos > neg) - (neg > pos)


def sentiment_shares(
    texts: Sequence[str], positive: Sequence[str], negative: Sequence[str]
) -> tuple[float, float]:
    """(positive share, negative share) of `texts`; the rest are neutral or tied."""
    if not texts:
        return math.nan, math.nan
    labels = [sentiment_label(t, positive, negative) for t in texts]
    return labels.count(1) / len(texts), labels.count(-1) / len(texts)


def repetition_rate(text: str) -> float:
    """Share of word bigrams that already occurred earlier in the text (0: none repeat, ~1: a loop)."""
    tokens = words(text)
    bigrams = list(itertools.pairwise(tokens))
    if not bigrams:
        return 0.0
    return 1.0 - len(set(bigrams)) / len(bigrams)


def distinct_ratio(text: str) -> float:
    tokens = words(text)
    return len(set(tokens)) / len(tokens) if tokens else 1.0


def function_word_share(text: str) -> float:
    tokens = words(text)
    return sum(t in FUNCTION_WORDS for t in tokens) / len(tokens) if tokens else 0.0


def is_degenerate(text: str) -> bool:
    """A loop or word salad of at least 8 words (see the thresholds above), or empty output."""
    tokens = words(text)
    if not tokens:
        return True
    if len(tokens) < 8:
        return False
    return (
        repetition_rate(text) > DEGENERATE_REPETITION
        or distinct_ratio(text) < DEGENERATE_DISTINCT
        or function_word_share(text) < DEGENERATE_FUNCTION_SHARE
    )


def degeneracy_rate(texts: Sequence[str]) -> float:
    return sum(map(is_degenerate, texts)) / len(texts) if texts else math.nan


# ---- batched, steered forward passes ---------------------------------------------------------------------
def _left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    ids, mask = pad_batch(rows, pad_id, side="left")
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # GPT-2 does not derive these from the mask
    return ids, mask, positions  # [batch, seq] each


def steered_logprobs(
    loaded: LoadedModel, rows: Sequence[Sequence[int]], steering: Sequence[Sequence[Steer]]
) -> Tensor:
    """Log-probabilities `[batch, seq, vocab]` (float32, CPU) of one left-padded batch, steered per row.

    Row i of the output is aligned to the right: its last `len(rows[i])` positions are the row's tokens.
    """
    plan = SteeringPlan(steering)
    if plan.n_rows != len(rows):
        raise InvalidInputError(f"{len(rows)} token rows for {plan.n_rows} steering rows")
    for row, row_ids in enumerate(rows):
        if (needed := plan.max_front_tokens(row)) > len(row_ids):
            raise InvalidInputError(
                f"the ActAdd vector has {needed} tokens but a text has only {len(row_ids)}; front injection "
                "needs a text at least as long as the vector"
            )
    ids, mask, positions = _left_pad(rows, loaded.tokenizer.pad_token_id)
    device = loaded.device
    with plan.apply(loaded.blocks), torch.inference_mode():
        plan.bind(mask)
        logits = loaded.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=False,
        ).logits
    return torch.log_softmax(logits.float(), dim=-1).cpu()


def _chunks(n: int, size: int) -> list[range]:
    return [range(begin, min(begin + size, n)) for begin in range(0, n, max(1, size))]


def _broadcast(name: str, values: Sequence, n: int) -> list:
    values = list(values)
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise InvalidInputError(f"{len(values)} {name} for {n} steering rows")
    return values


def target_token_ids(tokenizer, targets: Sequence[str]) -> list[int]:
    """The first token of each target word, written as given and with a leading space (word-initial)."""
    ids: set[int] = set()
    for target in targets:
        if not target.strip():
            continue
        for variant in {target, " " + target.strip()}:
            encoded = list(tokenizer(variant, add_special_tokens=False)["input_ids"])
            if encoded:
                ids.add(encoded[0])
    if not ids:
        raise InvalidInputError("no target words given")
    return sorted(ids)


def target_prob(
    loaded: LoadedModel,
    prompts: Sequence[str],
    rows: Sequence[Sequence[Steer]],
    targets: Sequence[str],
    *,
    batch_size: int = 32,
) -> list[float]:
    """Per row: the next-token probability mass on the targets' first tokens after the row's prompt.

    `prompts` is one per row, or a single prompt shared by every row.
    """
    prompts = _broadcast("prompts", prompts, len(rows))
    target_ids = torch.tensor(target_token_ids(loaded.tokenizer, targets))
    encoded = [encode(loaded.tokenizer, p) for p in prompts]
    out: list[float] = []
    for chunk in _chunks(len(rows), batch_size):
        logprobs = steered_logprobs(loaded, [encoded[i] for i in chunk], [rows[i] for i in chunk])
        last = logprobs[:, -1]  # [batch, vocab]: left padding puts every row's last token at the end
        out.extend(last[:, target_ids].exp().sum(dim=1).tolist())
    return out


def _with_prefix(tokenizer, text: str, prefix: str, limit: int | None) -> tuple[list[int], int]:
    """([BOS] + prefix + text token ids, index of the first scored position)."""
    ids = encode(tokenizer, text)
    head = 1 if bos_rule(tokenizer).prepends else 0  # the prefix goes after the BOS, if plain text has one
    prefix_ids = list(tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else []
    full = ids[:head] + prefix_ids + ids[head:]
    if limit is not None:
        full = full[:limit]
    first = max(1, head + len(prefix_ids))
    if first >= len(full):
        raise InvalidInputError(f"text {text[:40]!r} has no tokens to score")
    return full, first


def token_nll(
    loaded: LoadedModel,
    texts: Sequence[str],
    rows: Sequence[Sequence[Steer]],
    *,
    prefixes: Sequence[str] = ("",),
    batch_size: int = 32,
) -> list[tuple[float, int]]:
    """Per row: (summed negative log-likelihood, number of scored tokens) of the row's text.

    Steering acts as in generation: a front (ActAdd) vector is added at the first positions of the
    sequence (BOS, prefix, text). With a prefix, the prefix is placed after BOS and only the text's own
    tokens are scored, so steered, prompted and plain rows score exactly the same tokens. Texts longer
    than the model's context are cut to it. `texts` and `prefixes` are one per row, or one for all rows.
    """
    if not rows:
        raise InvalidInputError("no rows to score")
    texts = _broadcast("texts", texts, len(rows))
    prefixes = _broadcast("prefixes", prefixes, len(rows))
    limit = context_limit(loaded.model.config)
    encoded = [_with_prefix(loaded.tokenizer, t, p, limit) for t, p in zip(texts, prefixes, strict=True)]
    out: list[tuple[float, int]] = []
    for chunk in _chunks(len(rows), batch_size):
        ids = [encoded[i][0] for i in chunk]
        logprobs = steered_logprobs(loaded, ids, [rows[i] for i in chunk])  # [batch, seq, vocab]
        seq = logprobs.shape[1]
        for b, i in enumerate(chunk):
            full, first = encoded[i]
            pad = seq - len(full)
            targets = torch.tensor(full[first:])  # tokens at positions first..end
            predicted = logprobs[b, pad + first - 1 : pad + len(full) - 1]  # [len(targets), vocab]
            nll = -predicted.gather(1, targets.unsqueeze(1)).sum()
            out.append((float(nll), len(targets)))
    return out


def perplexities(
    loaded: LoadedModel,
    texts: Sequence[str],
    rows: Sequence[Sequence[Steer]],
    *,
    prefixes: Sequence[str] = ("",),
    batch_size: int = 32,
) -> list[float]:
    """Per row: the perplexity of the row's text under the row's steering (see `token_nll`)."""
    return [
        math.exp(nll / n)
        for nll, n in token_nll(loaded, texts, rows, prefixes=prefixes, batch_size=batch_size)
    ]


def fluency_perplexities(
    loaded: LoadedModel, prompts: Sequence[str], completions: Sequence[str], *, batch_size: int = 32
) -> list[float]:
    """The unsteered model's perplexity of each completion after its prompt (NaN when nothing to score).

    The completion is re-tokenized on its own, after the prompt's tokens; a fluent continuation of the
    prompt scores low, loops and word salad score high.
    """
    prompts = _broadcast("prompts", prompts, len(completions))
    out = [math.nan] * len(completions)
    todo = []
    limit = context_limit(loaded.model.config)
    for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        if not completion.strip():
            continue
        try:
            _with_prefix(loaded.tokenizer, completion, prompt, limit)
        except InvalidInputError:
            continue
        todo.append(i)
    if todo:
        scored = token_nll(
            loaded,
            [completions[i] for i in todo],
            [[] for _ in todo],
            prefixes=[prompts[i] for i in todo],
            batch_size=batch_size,
        )
        for i, (nll, n) in zip(todo, scored, strict=True):
            out[i] = math.exp(nll / n)
    return out


def corpus_perplexities(
    loaded: LoadedModel,
    texts: Sequence[str],
    settings: Sequence[Sequence[Steer]],
    *,
    prefixes: Sequence[str] | None = None,
    batch_size: int = 32,
) -> list[float]:
    """Token-weighted perplexity of all `texts` under each setting, every (setting, text) pair in one pass.

    `settings[k]` is a steer list; `prefixes[k]` (default "") is prepended to every text under setting k.
    """
    if not texts:
        raise InvalidInputError("no texts to score")
    prefixes = list(prefixes) if prefixes is not None else [""] * len(settings)
    if len(prefixes) != len(settings):
        raise InvalidInputError(f"{len(prefixes)} prefixes for {len(settings)} settings")
    rows = [list(s) for s in settings for _ in texts]
    row_texts = [t for _ in settings for t in texts]
    row_prefixes = [p for p in prefixes for _ in texts]
    scored = token_nll(loaded, row_texts, rows, prefixes=row_prefixes, batch_size=batch_size)
    out = []
    for k in range(len(settings)):
        part = scored[k * len(texts) : (k + 1) * len(texts)]
        out.append(math.exp(sum(n for n, _ in part) / sum(c for _, c in part)))
    return out
