"""Whether a tokenizer's ids fit the model's embedding: refuse only what would really break.

`len(tokenizer)` may exceed the embedding rows without harm: transformers itself adds tokens sometimes
(`Qwen2Tokenizer` adds `<|endoftext|>` as unk to a tokenizer that lacks it), and such an added token is
never produced from ordinary text. So the load is refused only when an id that ordinary text can encode
to, or a special token the engine uses (BOS, EOS, padding, the space that ActAdd pads with), has no
embedding row. Extra added tokens past the end get one logged warning per folder.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InvalidInputError, ModelLoadError

log = logging.getLogger(__name__)
_WARNED: set[str] = set()
# tokenizer -> embedding rows, for tokenizers that can produce ids past them (from literal special tokens)
_ROWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class VocabFit:
    max_text_id: int  # the largest id ordinary text (the base vocabulary) or a used special token maps to
    culprit: str  # which token that is, for the message
    unused_out_of_range: dict[int, str]  # added tokens without an embedding row: id -> token


def _base_vocab_ids(tokenizer) -> dict[int, str]:
    """id -> token for the vocabulary that ordinary text is encoded with (added tokens excluded)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return {i: t for t, i in backend.get_vocab(with_added_tokens=False).items()}
    added = set(getattr(tokenizer, "added_tokens_decoder", {}) or {})  # a Python tokenizer
    return {i: t for t, i in tokenizer.get_vocab().items() if i not in added}


def vocab_fit(tokenizer) -> VocabFit:
    """The ids that matter for `tokenizer`, see the module docstring."""
    candidates = _base_vocab_ids(tokenizer)
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if isinstance(value := getattr(tokenizer, attr, None), int):
            candidates[value] = f"{attr.removesuffix('_id')} {tokenizer.convert_ids_to_tokens(value)!r}"
    space = list(tokenizer(" ", add_special_tokens=False)["input_ids"])
    if space:
        candidates[space[-1]] = "the space token"
    top = max(candidates) if candidates else -1
    extra = {
        i: str(t)
        for i, t in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items()
        if i not in candidates and i > top
    }
    return VocabFit(max_text_id=top, culprit=str(candidates.get(top, "")), unused_out_of_range=extra)


def check_vocab_fits(tokenizer, embed_rows: int, folder: Path | str) -> list[str]:
    """Raise `ModelLoadError` if ordinary text could encode to an id without an embedding row.

    Returns (and logs once per folder) a warning naming added tokens that have no row but that ordinary
    text never produces; typing one of them literally is the only way to reach it.
    """
    if len(tokenizer) <= embed_rows:
        return []
    fit = vocab_fit(tokenizer)
    if fit.max_text_id >= embed_rows:
        raise ModelLoadError(
            f"the tokenizer in {folder} has {len(tokenizer)} tokens but the model's embedding has {embed_rows} "
            f"rows, and ordinary text encodes to id {fit.max_text_id} ({fit.culprit}); "
            "tokenizer.json does not belong to these weights"
        )
    beyond = sorted(i for i in fit.unused_out_of_range if i >= embed_rows)
    names = ", ".join(f"{fit.unused_out_of_range[i]} (id {i})" for i in beyond[:5])
    warning = (
        f"the tokenizer in {folder} has {len(tokenizer)} tokens, the embedding {embed_rows} rows; the extra "
        f"added token(s) {names} have no embedding and are not produced by ordinary text, so the model is used "
        "as is (don't type them literally)"
    )
    with contextlib.suppress(TypeError):  # a tokenizer that can't be weakly referenced: no check later
        _ROWS[tokenizer] = embed_rows
    if str(folder) not in _WARNED:
        _WARNED.add(str(folder))
        log.warning(warning)
    return [warning]


def check_ids_in_range(tokenizer, ids: Sequence[int]) -> None:
    """Refuse text that spells an added token without an embedding row (e.g. a literal `<|endoftext|>`).

    Only tokenizers that `check_vocab_fits` let through with such tokens are checked; the model would
    otherwise fail with an index error deep inside its embedding.
    """
    rows = _ROWS.get(tokenizer)
    if rows is None or not ids or max(ids) < rows:
        return
    bad = next(i for i in ids if i >= rows)
    raise InvalidInputError(
        f"the text contains {tokenizer.convert_ids_to_tokens(bad)!r}, a token this model has no embedding for"
    )
