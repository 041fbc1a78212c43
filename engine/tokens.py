"""ActAdd tokenization: the one-BOS rule, space padding and the alignment preview.

Conventions (Turner et al., and montemac/activation_additions):
- p+, p- and the user's prompt are tokenized the same way, and every sequence starts with exactly one BOS
  when the tokenizer defines one. GPT-2's tokenizer does not add it, so it is prepended here; TransformerLens
  did the same, which makes the vector's position 0 exactly zero.
- When p+ and p- differ in length, the shorter is right-padded with the token for a single space `" "`
  (`pad_method="tokens_right"`, `custom_pad_id` = space). End-of-text padding steers worse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.errors import InvalidInputError


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text` with exactly one leading BOS (when the tokenizer has a BOS token)."""
    ids: list[int] = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    bos = tokenizer.bos_token_id
    if bos is None:
        return ids
    # Some tokenizers add BOS themselves (Llama, Gemma), others never do (GPT-2); the text may also begin
    # with a literal BOS string. Strip them all, then put back exactly one.
    while ids and ids[0] == bos:
        ids.pop(0)
    return [bos, *ids]


def space_token_id(tokenizer) -> int:
    """The id of the token for a single space, the paper's padding token."""
    ids = list(tokenizer(" ", add_special_tokens=False)["input_ids"])
    if not ids:
        raise InvalidInputError("this tokenizer has no token for a single space, which ActAdd pads with")
    # Sentencepiece tokenizers may emit a bare word-boundary marker before the space; the space is last.
    return ids[-1]


@dataclass(frozen=True)
class AlignedPair:
    """p+ and p- as token ids of equal length, after space padding."""

    positive: list[int]
    negative: list[int]
    pad_id: int  # the space token used for padding
    n_padded_positive: int  # how many pads were appended to p+
    n_padded_negative: int  # ... and to p-

    @property
    def length(self) -> int:
        return len(self.positive)


def align_pair(tokenizer, positive: str, negative: str) -> AlignedPair:
    """Tokenize p+ and p- with one BOS each and right-pad the shorter with the space token."""
    pos, neg = encode(tokenizer, positive), encode(tokenizer, negative)
    if len(pos) == 0 or len(neg) == 0:
        raise InvalidInputError("a prompt of the pair encodes to no tokens")
    pad = space_token_id(tokenizer)
    n = max(len(pos), len(neg))
    return AlignedPair(
        positive=pos + [pad] * (n - len(pos)),
        negative=neg + [pad] * (n - len(neg)),
        pad_id=pad,
        n_padded_positive=n - len(pos),
        n_padded_negative=n - len(neg),
    )


@dataclass(frozen=True)
class AlignmentRow:
    position: int
    positive: str  # the token string of p+ at this position
    negative: str
    positive_is_pad: bool
    negative_is_pad: bool


def alignment_preview(tokenizer, positive: str, negative: str) -> list[AlignmentRow]:
    """Per-position token strings of the aligned pair, for the capture panel and `capture --json`."""
    pair = align_pair(tokenizer, positive, negative)
    n = pair.length
    rows = []
    for i in range(n):
        rows.append(
            AlignmentRow(
                position=i,
                positive=tokenizer.convert_ids_to_tokens(pair.positive[i]),
                negative=tokenizer.convert_ids_to_tokens(pair.negative[i]),
                positive_is_pad=i >= n - pair.n_padded_positive,
                negative_is_pad=i >= n - pair.n_padded_negative,
            )
        )
    return rows


def pad_batch(
    rows: Sequence[Sequence[int]], pad_id: int, side: str = "left"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one `[batch, seq]` id tensor and its attention mask, padded on `side`.

    Generation pads on the left (every row ends where the next token goes); last-token captures pad on the
    right (causal attention keeps the padding away from every real token, and positions stay 0..).
    """
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(longest - len(row), longest) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    return ids, mask  # [batch, seq] each
