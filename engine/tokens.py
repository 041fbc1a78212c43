"""ActAdd tokenization: the one-BOS rule, space padding and the alignment preview.

Conventions (Turner et al., and montemac/activation_additions):
- p+, p- and the user's prompt are tokenized the same way, and begin the way the model begins plain text
  (`bos_rule`, the one place this is decided):
  * "tokenizer-adds": the tokenizer puts BOS before plain text itself (Llama, Gemma, Mistral, OPT); exactly
    one BOS, never doubled;
  * "bos-is-eos": BOS is the EOS and the tokenizer never adds it (the GPT-2 family's `<|endoftext|>`
    document separator, and the demo model): prepended, as the paper and TransformerLens did;
  * "none": anything else, e.g. SmolLM2 and Qwen2, whose BOS is a chat marker never seen before plain text.
  With a BOS, the vector's position 0 is exactly zero.
- When p+ and p- differ in length, the shorter is right-padded with the token for a single space `" "`
  (`pad_method="tokens_right"`, `custom_pad_id` = space). End-of-text padding steers worse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.errors import InvalidInputError
from engine.vocab_check import check_ids_in_range

BOS_RULES = ("tokenizer-adds", "bos-is-eos", "none")
_PROBE = "The weather is calm today."


@dataclass(frozen=True)
class BosRule:
    """How plain text begins for a tokenizer: `rule` is one of BOS_RULES."""

    rule: str
    bos_id: int | None  # the id prepended, None when nothing is

    @property
    def prepends(self) -> bool:
        return self.bos_id is not None

    def provenance(self) -> dict:
        """What a captured vector records about its BOS (see `legacy_bos_warning`)."""
        return {"bos_rule": self.rule, "bos_prepended": self.prepends}


def bos_rule(tokenizer) -> BosRule:
    """Whether plain text starts with BOS for this tokenizer; see the module docstring."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return BosRule("none", None)
    probe = list(tokenizer(_PROBE, add_special_tokens=True)["input_ids"])
    if probe and probe[0] == bos:
        return BosRule("tokenizer-adds", bos)
    if bos == tokenizer.eos_token_id:
        return BosRule("bos-is-eos", bos)
    return BosRule("none", None)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of plain `text`, beginning as `bos_rule` says: one BOS or none."""
    ids: list[int] = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    check_ids_in_range(tokenizer, ids)  # a literal special token the embedding lacks (engine/vocab_check.py)
    rule = bos_rule(tokenizer)
    if rule.bos_id is None:
        return ids
    # The tokenizer may have added BOS itself, and the text may also begin with a literal BOS string.
    # Strip them all, then put back exactly one.
    while ids and ids[0] == rule.bos_id:
        ids.pop(0)
    return [rule.bos_id, *ids]


def legacy_bos_warning(vector, tokenizer) -> str | None:
    """A warning when `vector` was captured with a BOS that plain text on this tokenizer no longer gets.

    Before the rule above, every tokenizer with a BOS got it prepended; a vector captured then on, say,
    SmolLM2 has `<|im_start|>` at position 0, so its position 0 is no longer shared with prompts.
    """
    provenance = getattr(vector, "provenance", None) or {}
    if "bos_rule" in provenance:
        prepended = bool(provenance.get("bos_prepended"))
    elif isinstance(ids := provenance.get("positive_ids"), list) and ids:  # captured under the old rule
        prepended = ids[0] == tokenizer.bos_token_id
    else:  # the old rule prepended BOS whenever the tokenizer had one
        prepended = tokenizer.bos_token_id is not None
    if not prepended or bos_rule(tokenizer).prepends or not getattr(vector, "is_positional", False):
        return None
    return (
        f"vector {getattr(vector, 'name', '') or '(unnamed)'!r} was captured with {tokenizer.bos_token!r} "
        "prepended, which this model's plain text does not begin with; its position 0 is no longer a "
        "shared BOS and is added to the prompt's first token"
    )


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
    """Tokenize p+ and p- as plain text (`encode`) and right-pad the shorter with the space token."""
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
