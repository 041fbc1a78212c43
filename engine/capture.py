"""Capturing steering vectors from the residual stream: ActAdd, mean difference (CAA) and PCA (repeng).

All three read resid_pre, the input of decoder block `l` (`hidden_states[l]` in Hugging Face terms), via a
pre-hook that records it and stops the forward pass after the deepest layer needed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import torch
from torch import Tensor, nn

from engine.errors import CancelledError, InvalidInputError
from engine.models import LoadedModel
from engine.modes import PAIR_METHODS
from engine.packing import length_batches, packed_batches, supports_packing
from engine.pairs import PromptPair, check_pair
from engine.tokens import align_pair, bos_rule, encode, pad_batch
from engine.vector import SteeringVector, now_iso


class _StopForward(Exception):
    """Raised by the recorder after the deepest needed block: the rest of the model is not run."""


@contextmanager
def record_block_inputs(blocks: nn.ModuleList, layers: Sequence[int]) -> Iterator[dict[int, Tensor]]:
    """Record the input of each block in `layers` ([batch, seq, hidden]) during the next forward pass."""
    records: dict[int, Tensor] = {}
    deepest = max(layers)

    def make_hook(layer: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            records[layer] = (args[0] if args else kwargs["hidden_states"]).detach()
            if layer == deepest:
                raise _StopForward

        hook.actadd_hook = True  # type: ignore[attr-defined]
        return hook

    handles = [blocks[l].register_forward_pre_hook(make_hook(l), with_kwargs=True) for l in layers]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def check_layers(loaded: LoadedModel, layers: int | Sequence[int]) -> list[int]:
    layer_list = [layers] if isinstance(layers, int) else list(layers)
    n = len(loaded.blocks)
    if not layer_list:
        raise InvalidInputError("choose at least one layer")
    for layer in layer_list:
        if not isinstance(layer, int) or not 0 <= layer < n:
            raise InvalidInputError(f"layer {layer} is out of range: the model has {n} layers (0-{n - 1})")
    return sorted(set(layer_list))


@torch.inference_mode()
def resid_pre(
    loaded: LoadedModel,
    input_ids: Tensor,
    layers: Sequence[int],
    attention_mask: Tensor | None = None,
    position_ids: Tensor | None = None,
) -> dict[int, Tensor]:
    """resid_pre at `layers` for a batch: layer -> [batch, seq, hidden], float32 on the CPU.

    With `position_ids` the batch is packed (`engine.packing`) and `attention_mask` is not used: no mask
    is passed, so that transformers masks attention at the points where the position ids restart.
    """
    device = loaded.device
    inputs = {"input_ids": input_ids.to(device)}
    if position_ids is not None:
        inputs["position_ids"] = position_ids.to(device)
    else:
        # An all-ones mask changes nothing numerically but tells transformers the batch is unpadded.
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        inputs["attention_mask"] = mask.to(device)
    with record_block_inputs(loaded.blocks, layers) as records, suppress(_StopForward):
        loaded.model(**inputs, use_cache=False)
    return {layer: records[layer].float().cpu() for layer in layers}


def _provenance(loaded: LoadedModel, **extra) -> dict:
    from engine import __version__

    return {
        "quantize": loaded.info.quantize,
        "dtype": loaded.info.dtype,
        "model_source": loaded.info.source,
        "library_version": __version__,
        **bos_rule(loaded.tokenizer).provenance(),  # which BOS rule the prompts were encoded under
        **extra,
    }


def capture_actadd(
    loaded: LoadedModel,
    positive: str,
    negative: str,
    layers: int | Sequence[int],
    *,
    name: str = "",
    default_coeff: float = 4.0,
    tags: Sequence[str] = (),
    notes: str = "",
) -> SteeringVector:
    """The paper's vector: resid_pre(p+) - resid_pre(p-) at each layer, shape [n_tokens, hidden].

    p+ and p- begin as plain text does (`tokens.bos_rule`) and the shorter is right-padded with the space
    token (`tokens.align_pair`), so with a BOS, position 0 is exactly zero. Both run as the two rows of one
    forward pass, without padding masks: they already have equal length.
    """
    layer_list = check_layers(loaded, layers)
    pair = align_pair(loaded.tokenizer, positive, negative)
    ids = torch.tensor([pair.positive, pair.negative])  # [2, n]
    acts = resid_pre(loaded, ids, layer_list)
    vectors = {layer: acts[layer][0] - acts[layer][1] for layer in layer_list}  # [n, hidden] each
    return SteeringVector(
        layers=vectors,
        method="actadd",
        name=name,
        default_coeff=default_coeff,
        default_mode="front",
        fingerprint=loaded.fingerprint,
        prompts={"positive": positive, "negative": negative},
        provenance=_provenance(
            loaded,
            pad_token_id=pair.pad_id,
            pad_token=loaded.tokenizer.convert_ids_to_tokens(pair.pad_id),
            positive_ids=pair.positive,
            negative_ids=pair.negative,
            layers=layer_list,
        ),
        tags=tuple(tags),
        notes=notes,
        created=now_iso(),
    )


def pair_differences(
    loaded: LoadedModel,
    pairs: Sequence[PromptPair],
    layers: Sequence[int],
    max_batch_tokens: int = 256,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> dict[int, Tensor]:
    """resid_pre(p+) - resid_pre(p-) at each prompt's last token: layer -> [n_pairs, hidden].

    Prompts run in batches of about `max_batch_tokens` tokens. Where that saves padding and the model
    keeps packed prompts apart, they are packed several to a row (`engine.packing`), in rows of half the
    budget: on a 2-core CPU two 128-token rows per pass beat one 256-token row, whose attention pattern
    is four times larger. Otherwise they run in padded batches (`length_batches`), right-padded with an
    attention mask: under causal attention the right padding cannot reach the last real token, and
    position ids stay 0.. for every row.

    `progress(done, total)` counts prompts after each forward pass; setting `cancel` stops before the
    next one with `CancelledError`.
    """
    if not pairs:
        raise InvalidInputError("no pairs to capture from")
    for number, pair in enumerate(pairs, start=1):
        check_pair(pair, f"pair {number} of {len(pairs)}")
    tokenizer = loaded.tokenizer
    # p+ of pair i is row 2i, p- row 2i + 1
    rows = [encode(tokenizer, text) for p in pairs for text in (p.positive, p.negative)]
    at_last: dict[int, Tensor] = {}  # layer -> [2 * n_pairs, hidden], in the order of `rows`

    done = 0

    def check_cancel() -> None:
        if cancel is not None and cancel.is_set():
            raise CancelledError(f"the capture was stopped after {done} of {len(rows)} prompts")

    def keep(acts: dict[int, Tensor], prompts: list[int], where: tuple[Tensor, Tensor]) -> None:
        nonlocal done
        for layer in layers:
            if layer not in at_last:
                at_last[layer] = torch.empty(len(rows), acts[layer].shape[-1])
            at_last[layer][prompts] = acts[layer][where]  # [len(prompts), hidden]
        done += len(prompts)
        if progress is not None:
            progress(done, len(rows))
        check_cancel()

    check_cancel()
    lengths = [len(r) for r in rows]
    padded = length_batches(lengths, max_batch_tokens)
    # Packing saves the padding but costs a wider attention pattern: worth it only when padding is a real
    # share of the work (a single pair of near-equal prompts pads almost nothing).
    padded_tokens = sum(len(batch) * max(lengths[i] for i in batch) for batch in padded)
    if sum(lengths) <= 0.95 * padded_tokens and supports_packing(loaded):
        row_tokens = max(1, max_batch_tokens // 2)
        for batch in packed_batches(rows, tokenizer.pad_token_id, row_tokens, max_batch_tokens):
            acts = resid_pre(loaded, batch.input_ids, layers, position_ids=batch.position_ids)
            keep(acts, batch.prompts, (batch.last_row, batch.last_col))
    else:
        for chunk in padded:
            ids, mask = pad_batch([rows[i] for i in chunk], tokenizer.pad_token_id, side="right")
            acts = resid_pre(loaded, ids, layers, mask)
            keep(acts, chunk, (torch.arange(len(chunk)), mask.sum(dim=1) - 1))
    return {layer: at_last[layer][0::2] - at_last[layer][1::2] for layer in layers}


def _direction_vector(
    loaded: LoadedModel, method: str, layers: dict[int, Tensor], pairs: Sequence[PromptPair], **kwargs
) -> SteeringVector:
    return SteeringVector(
        layers=layers,
        method=method,
        name=kwargs.get("name", ""),
        default_coeff=kwargs.get("default_coeff", 1.0),
        default_mode="all",
        fingerprint=loaded.fingerprint,
        prompts={"pairs": [{"positive": p.positive, "negative": p.negative} for p in pairs]},
        provenance=_provenance(loaded, layers=sorted(layers), position="last token", n_pairs=len(pairs)),
        tags=tuple(kwargs.get("tags", ())),
        notes=kwargs.get("notes", ""),
        created=now_iso(),
    )


def _mean_directions(diffs: dict[int, Tensor]) -> dict[int, Tensor]:
    """CAA-style: the mean over pairs of the last-token difference, [n_pairs, hidden] -> [hidden]."""
    return {layer: d.mean(dim=0) for layer, d in diffs.items()}


def _pca_directions(diffs: dict[int, Tensor]) -> dict[int, Tensor]:
    """repeng's pca_diff: the first principal component of the (centred) pair differences.

    The sign is aligned with the mean difference, and the unit component is scaled by the mean difference's
    length along it, so the same coefficients work for mean-diff and PCA vectors.
    """
    directions = {}
    for layer, d in diffs.items():  # d: [n_pairs, hidden]
        mean = d.mean(dim=0)
        centred = d - mean
        if not centred.any():
            raise InvalidInputError("all pair differences are identical; PCA has no variance to find")
        component = torch.linalg.svd(centred, full_matrices=False).Vh[0]  # [hidden], unit norm
        projection = torch.dot(mean, component)
        directions[layer] = component * (projection if projection != 0 else 1.0)
        if torch.dot(directions[layer], mean) < 0:
            directions[layer] = -directions[layer]
    return directions


# How each of PAIR_METHODS reduces the pair differences: [n_pairs, hidden] per layer -> [hidden].
_PAIR_REDUCERS: dict[str, Callable[[dict[int, Tensor]], dict[int, Tensor]]] = {
    "mean-diff": _mean_directions,
    "pca": _pca_directions,
}


def capture_from_pairs(
    method: str,
    loaded: LoadedModel,
    pairs: Sequence[PromptPair],
    layers: int | Sequence[int],
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    **kwargs,
) -> SteeringVector:
    """A [hidden] direction from prompt pairs by `method`, one of `engine.modes.PAIR_METHODS`.

    `progress` and `cancel` are `pair_differences`'; `kwargs` are the vector's name, tags, notes and
    default_coeff.
    """
    if method not in _PAIR_REDUCERS:
        raise InvalidInputError(f"unknown pair method {method!r}; choose {' or '.join(PAIR_METHODS)}")
    if method == "pca" and len(pairs) < 2:
        raise InvalidInputError("PCA needs at least 2 pairs; use actadd or mean-diff for one pair")
    layer_list = check_layers(loaded, layers)
    diffs = pair_differences(loaded, pairs, layer_list, progress=progress, cancel=cancel)
    return _direction_vector(loaded, method, _PAIR_REDUCERS[method](diffs), pairs, **kwargs)


def capture_mean_diff(
    loaded: LoadedModel, pairs: Sequence[PromptPair], layers: int | Sequence[int], **options: Any
) -> SteeringVector:
    """CAA-style direction: the mean over pairs of the last-token difference, shape [hidden].

    `options` (progress, cancel, name, tags, notes, default_coeff) are `capture_from_pairs`'.
    """
    return capture_from_pairs("mean-diff", loaded, pairs, layers, **options)


def capture_pca(
    loaded: LoadedModel, pairs: Sequence[PromptPair], layers: int | Sequence[int], **options: Any
) -> SteeringVector:
    """repeng's pca_diff: the first principal component of the (centred) pair differences, scaled and
    signed by the mean difference (`_pca_directions`); `options` are `capture_from_pairs`'."""
    return capture_from_pairs("pca", loaded, pairs, layers, **options)
