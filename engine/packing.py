"""How captures lay prompts out into forward passes: padded batches, or packed rows.

Padded: prompts in length order, cut into batches by a token budget (`length_batches`), right-padded
with an attention mask. Packed: several prompts share one row, so no compute is spent on padding.

A packed row holds prompts end to end, each with its own position ids 0..len-1, and no attention mask.
transformers reads position ids that restart as the boundaries of packed sequences and masks attention
across them (`masking_utils.find_packed_sequence_indices`), so each prompt sees only itself, exactly as if
it ran alone. Rows are right-padded to the batch's widest; under causal attention that tail cannot reach a
real token.

Not every architecture honours this (some derive positions from the attention mask, or build a full mask
when none is given), so `supports_packing` checks it on the loaded model, once, and captures fall back to
padded batches where it fails.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from engine.models import LoadedModel


def length_batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices of `lengths` in length order, cut into batches of at most `max_batch_tokens` padded tokens.

    Neighbours in length order pad little. The token budget (rows × longest row) rather than a row count
    keeps each batch's activations small: on a CPU, a GPT-2-small MLP activation of ~256 tokens
    ([256, 3072] floats, 3 MB) already fills the cache, and beyond it every element-wise op streams its
    tensors through memory, eating the gain of the larger matmuls. A row longer than the budget runs
    alone.
    """
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if batches and lengths[i] * (len(batches[-1]) + 1) <= max_batch_tokens:
            batches[-1].append(i)  # length order: row i is the batch's longest
        else:
            batches.append([i])
    return batches


@dataclass(frozen=True)
class PackedBatch:
    """One forward pass worth of packed prompts."""

    prompts: list[int]  # indices into the caller's prompt list, in the order of last_row / last_col
    input_ids: Tensor  # [rows, width]
    position_ids: Tensor  # [rows, width], restarting at 0 at each prompt
    last_row: Tensor  # [n_prompts]: the row holding each prompt ...
    last_col: Tensor  # [n_prompts]: ... and the column of its last token


def pack_rows(lengths: Sequence[int], row_tokens: int) -> list[list[int]]:
    """Bin-pack prompt indices into rows of at most `row_tokens` tokens, first fit by decreasing length.

    A prompt longer than `row_tokens` gets a row of its own.
    """
    rows: list[list[int]] = []
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, filled in enumerate(used):
            if filled + lengths[i] <= row_tokens:
                rows[r].append(i)
                used[r] += lengths[i]
                break
        else:
            rows.append([i])
            used.append(lengths[i])
    return rows


def packed_batches(
    prompts: Sequence[Sequence[int]],
    pad_id: int,
    row_tokens: int,
    batch_tokens: int,
) -> Iterator[PackedBatch]:
    """Pack token-id prompts into rows, and rows into forward passes of at most `batch_tokens` tokens
    (rows × widest row; a row wider than that runs alone)."""
    packed = pack_rows([len(p) for p in prompts], row_tokens)
    widths = [sum(len(prompts[i]) for i in row) for row in packed]
    passes: list[list[int]] = []  # row indices, widest first in each
    for k in sorted(range(len(packed)), key=lambda k: -widths[k]):
        widest = widths[passes[-1][0]] if passes else 0
        # A row under half the pass's width would spend more on padding than on itself: a pass of its
        # own is cheaper. First fit leaves at most a few such rows, at the end.
        if passes and widest * (len(passes[-1]) + 1) <= batch_tokens and 2 * widths[k] >= widest:
            passes[-1].append(k)
        else:
            passes.append([k])
    for rows_of_pass in passes:
        chunk = [packed[k] for k in rows_of_pass]
        width = widths[rows_of_pass[0]]
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        positions = torch.zeros((len(chunk), width), dtype=torch.long)
        order, last_row, last_col = [], [], []
        for r, row in enumerate(chunk):
            offset = 0
            for i in row:
                n_tokens = len(prompts[i])
                ids[r, offset : offset + n_tokens] = torch.tensor(prompts[i])
                positions[r, offset : offset + n_tokens] = torch.arange(n_tokens)
                offset += n_tokens
                order.append(i)
                last_row.append(r)
                last_col.append(offset - 1)
            # the padding tail continues the row's last prompt: it comes after it, so it changes nothing
            positions[r, offset:] = positions[r, offset - 1] + 1 + torch.arange(width - offset)
        yield PackedBatch(order, ids, positions, torch.tensor(last_row), torch.tensor(last_col))


log = logging.getLogger(__name__)
_VERDICTS: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def supports_packing(loaded: LoadedModel) -> bool:
    """Whether this model keeps packed prompts apart; checked once per model, by running one.

    The probe is one prompt packed twice into a row. The second copy sees only itself, at positions
    0..n-1, exactly when positions restart and attention stops at the boundary; then both copies agree
    at every layer. A model that ignores the position ids, or lets the copy attend across, disagrees.
    Both copies run in the same pass, so they agree to the model's rounding.
    """
    from engine.capture import resid_pre  # capture uses this module for its batches

    model = loaded.model
    if model in _VERDICTS:
        return _VERDICTS[model]
    probe = loaded.tokenizer("The weather is calm and I love it.", add_special_tokens=True)["input_ids"]
    n = len(probe)
    ids = torch.tensor([list(probe) * 2])  # [1, 2n]
    positions = torch.arange(n).repeat(2).unsqueeze(0)  # [1, 2n]: 0..n-1 twice
    try:
        acts = resid_pre(loaded, ids, range(len(loaded.blocks)), position_ids=positions)
    except Exception as exc:  # padded batches are always right: any failure means "don't pack"
        log.info("packing is off for this model: the probe failed (%s: %s)", type(exc).__name__, exc)
        verdict = False
    else:
        # 16-bit and quantized models round each activation to their own precision: the two copies can
        # differ by a few of its units where attention sums in another order. A shared prompt bleeding
        # across, or wrong positions, moves them by ~30-100% of their scale.
        dtype: torch.dtype = model.get_input_embeddings().weight.dtype  # type: ignore[assignment]
        tolerance = max(1e-3, 8 * torch.finfo(dtype).eps) if dtype.is_floating_point else 1e-3
        verdict = all(_agree(a[0, :n], a[0, n:], tolerance) for a in acts.values())
    _VERDICTS[model] = verdict
    return verdict


def _agree(first: Tensor, second: Tensor, tolerance: float) -> bool:
    """[n, hidden] twice: equal up to `tolerance` of the activations' scale."""
    scale = first.abs().max().clamp_min(1e-6)
    return bool(((first - second).abs().max() / scale) <= tolerance)
