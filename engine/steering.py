"""The one hook implementation: per-row steering of the residual stream at the input of decoder blocks.

A `SteeringPlan` says, for each row of a batch, which vectors act with which coefficient and mode. It
installs one forward pre-hook per steered block (block `l`'s input is ActAdd's resid_pre at layer `l`, i.e.
`hidden_states[l]` of a Hugging Face forward) and removes them on exit, so the model is never changed.
The CLI, the GUI worker, the experiments and the benchmarks all steer through this module.

Modes (per vector, per row):
- front:     ActAdd. Add `c * h[0..n-1]` at the first n positions of each row's prompt (front alignment,
             counted from the row's first real token when the batch is left-padded, plus the row's front
             offset: the user's message under a chat template, engine/chat.py). Decode steps come
             after the prompt, so they are untouched, as in the paper.
- all:       add `c * r` at every position, prompt and generated tokens alike (CAA / repeng style).
- generated: add `c * r` only at positions after the prompt.
- ablate:    directional ablation `x - c * (x . r_hat) r_hat` at every position (c = 1: full ablation).

Coefficients live in a `[rows]` tensor that the hook reads on every call, so `set_coefficient` from another
thread takes effect from the next token (for all/generated/ablate; front acts on the prompt pass only).
A coefficient of 0 adds an exact zero, leaving the row bit-identical to an unsteered run.
`apply(blocks, unsteered_rows=k)` accepts a batch of `n_rows + k` rows whose last k rows are never
steered (the shadow rows that measure steering's effect, engine/effect.py).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from engine.errors import IncompatibleVectorError, InvalidInputError
from engine.vector import MODES, SteeringVector

if TYPE_CHECKING:
    from engine.models import LoadedModel


@dataclass
class Steer:
    """One vector acting on one row."""

    vector: SteeringVector
    coeff: float = 1.0  # the global multiplier c
    mode: str | None = None  # None: the vector's default mode
    profile: dict[int, float] | None = None  # strength per layer (multiplies coeff); None: 1.0 everywhere
    at_layer: int | None = None  # move a single-layer vector to another layer
    strength: float | None = None  # the normalised strength coeff was resolved from (`from_strength`)

    @classmethod
    def from_strength(
        cls,
        vector: SteeringVector,
        strength: float,
        norms: LoadedModel | Sequence[float],
        *,
        mode: str | None = None,
        profile: dict[int, float] | None = None,
        at_layer: int | None = None,
    ) -> Steer:
        """A steer whose added vector has `strength` times the typical residual norm at its layer(s).

        `norms` is the loaded model (its norms are measured once and cached) or its `[n_layers]` profile.
        See `engine.strength` for the exact definition; the resolved c is in `coeff`.
        """
        from engine.strength import resolve_strength

        steer = cls(vector, 0.0, mode=mode, profile=profile, at_layer=at_layer)
        return resolve_strength(steer, strength, norms)

    @property
    def resolved_mode(self) -> str:
        return self.mode or self.vector.default_mode

    def layer_tensors(self) -> dict[int, tuple[Tensor, float]]:
        """layer -> (tensor to apply, strength multiplier)."""
        mode = self.resolved_mode
        vector = self.vector if mode == "front" else self.vector.to_direction()
        if mode == "front" and not vector.is_positional:
            raise InvalidInputError(
                f"front mode needs a position-wise ActAdd vector; {vector.name or 'this vector'!r} is a "
                "direction, use mode all or generated"
            )
        layers = dict(vector.layers)
        if self.at_layer is not None:
            if len(layers) != 1:
                raise InvalidInputError(
                    f"@layer needs a single-layer vector; this one has layers {sorted(layers)}"
                )
            layers = {self.at_layer: next(iter(layers.values()))}
        profile = self.profile or {}
        if unknown := set(profile) - set(layers):
            raise InvalidInputError(
                f"strength profile names layers {sorted(unknown)} the vector does not have"
            )
        return {layer: (t, float(profile.get(layer, 1.0))) for layer, t in layers.items()}


@dataclass
class _Term:
    """One tensor acting at one layer in one mode, with a per-row coefficient (0 for rows not using it)."""

    mode: str
    tensor: Tensor  # [n, hidden] for front, [hidden] otherwise (unit norm for ablate)
    coeff: Tensor  # [rows] float32, live: changed only by SteeringPlan under its lock
    cast: dict[tuple[torch.device, torch.dtype], Tensor] = field(default_factory=dict)
    version: int = 0  # bumped on every coefficient change, so hooks know their cached copies are stale
    # (device, dtype, unsteered rows) -> (version, coeff as [rows, 1, 1] or None when every row is 0,
    # c * tensor for "all")
    scaled: dict[tuple[torch.device, torch.dtype, int], tuple[int, Tensor | None, Tensor | None]] = field(
        default_factory=dict
    )

    def on(self, like: Tensor) -> Tensor:
        """The tensor on `like`'s device and dtype, cast once per device (quantized models run fp16/bf16)."""
        key = (like.device, like.dtype)
        if key not in self.cast:
            self.cast[key] = self.tensor.to(device=like.device, dtype=like.dtype)
        return self.cast[key]


def _check_coeff(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise InvalidInputError(f"coefficient {value} is not a finite number")
    return value


class SteeringPlan:
    """Per-row steering for one batch; use `with plan.apply(blocks):` around forward or generate calls."""

    def __init__(self, rows: Sequence[Sequence[Steer]]):
        if not rows:
            raise InvalidInputError("a steering plan needs at least one row")
        self.n_rows = len(rows)
        self._lock = threading.Lock()
        self._terms: dict[int, list[_Term]] = {}
        self._slots: dict[tuple[int, int], list[tuple[_Term, float]]] = {}
        self._values: dict[tuple[int, int], float] = {}
        by_key: dict[tuple[int, str, int], _Term] = {}
        for row, steers in enumerate(rows):
            for index, steer in enumerate(steers):
                mode = steer.resolved_mode
                if mode not in MODES:
                    raise InvalidInputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
                coeff = _check_coeff(steer.coeff)
                self._values[(row, index)] = coeff
                self._slots[(row, index)] = []
                for layer, (tensor, scale) in steer.layer_tensors().items():
                    # Rows sharing a tensor (e.g. a coefficient sweep) share one term: one add for the batch.
                    key = (layer, mode, id(tensor))
                    if key not in by_key:
                        applied = tensor.float()
                        if mode == "ablate":
                            norm = applied.norm()
                            if norm == 0:
                                raise InvalidInputError("cannot ablate a zero direction")
                            applied = applied / norm
                        by_key[key] = _Term(mode, applied, torch.zeros(self.n_rows))
                        self._terms.setdefault(layer, []).append(by_key[key])
                    term = by_key[key]
                    term.coeff[row] += coeff * _check_coeff(scale)
                    self._slots[(row, index)].append((term, scale))
        self._offsets: Tensor | None = None  # [rows] left-padding per row
        self._prompt_len: int | None = None  # padded prompt length
        self._max_offset = 0  # the largest left padding of the bound batch
        self._seen: dict[int, int] = {}  # layer -> positions processed so far in this sequence
        self._extra = 0  # unsteered rows after the plan's own rows, while applied (shadow rows)

    # ---- live control ---------------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        return sorted(self._terms)

    def max_front_tokens(self, row: int) -> int:
        """The longest front vector on `row` (0 if none), to check against the prompt length."""
        return max(
            (
                t.tensor.shape[0]
                for terms in self._terms.values()
                for t in terms
                if t.mode == "front" and t.coeff[row] != 0
            ),
            default=0,
        )

    def set_coefficient(self, row: int, index: int, value: float) -> None:
        """Change the coefficient of steer `index` on `row`; thread-safe, effective from the next token."""
        value = _check_coeff(value)
        with self._lock:
            old = self._values[(row, index)]
            for term, scale in self._slots[(row, index)]:
                term.coeff[row] += (value - old) * scale
                term.version += 1
            self._values[(row, index)] = value

    def bind(self, attention_mask: Tensor | None, front_offsets: Sequence[int] | None = None) -> None:
        """Start a new sequence: record each row's left padding and reset position counters.

        `front_offsets` ([rows]) moves each row's front past its first real tokens: under a chat template
        the front starts at the user's message, not at the template's boilerplate (engine/chat.py).
        """
        if attention_mask is None and front_offsets is None:
            self._offsets, self._prompt_len, self._max_offset = None, None, 0
        else:
            self._prompt_len = None
            if attention_mask is None:
                offsets = torch.zeros(len(front_offsets or ()), dtype=torch.long)
            else:
                # [batch, seq] with left padding: the number of leading zeros is where the prompt starts.
                offsets = (attention_mask.shape[1] - attention_mask.sum(dim=1)).long()
                self._prompt_len = attention_mask.shape[1]
            if front_offsets is not None:
                if len(front_offsets) != len(offsets) or min(front_offsets, default=0) < 0:
                    raise InvalidInputError(
                        f"need {len(offsets)} front offsets >= 0, got {list(front_offsets)}"
                    )
                offsets = offsets + torch.tensor(list(front_offsets), dtype=torch.long)  # [rows]
            self._offsets = offsets
            self._max_offset = int(offsets.max())
        self._seen = {}

    # ---- the hook -------------------------------------------------------------------------------------
    def _steer(self, layer: int, h: Tensor, start: int) -> Tensor:
        """h: [batch, seq, hidden] at positions start..start+seq-1 -> steered h."""
        batch, seq, _ = h.shape
        if self._extra:
            if batch != self.n_rows + self._extra:
                raise InvalidInputError(
                    f"the steering plan has {self.n_rows} rows and {self._extra} unsteered rows but the "
                    f"batch has {batch}"
                )
        elif self.n_rows not in (1, batch):
            raise InvalidInputError(f"the steering plan has {self.n_rows} rows but the batch has {batch}")
        for term in self._terms[layer]:
            c, delta = self._scaled(term, h)
            if c is None:
                continue  # every row at 0: adding nothing keeps rows bit-identical and costs nothing
            vec = term.on(h)
            if term.mode == "front":
                h = self._add_front(h, vec, c, start)
            elif term.mode == "all":
                assert delta is not None  # _scaled computes it for mode all whenever c is set
                h = h + delta  # [batch, seq, hidden] + [rows, 1, hidden]
            elif term.mode == "generated":
                first = max(self._prompt_len if self._prompt_len is not None else seq, start) - start
                if first < seq:
                    h = torch.cat([h[:, :first], h[:, first:] + c * vec], dim=1)
            else:  # ablate: remove c times the component along r_hat
                h = h - c * (h @ vec).unsqueeze(-1) * vec
        return h

    def _scaled(self, term: _Term, like: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """The term's coefficients as [rows, 1, 1] on `like`'s device and dtype (None when all are 0), and
        c * tensor for mode all; recomputed only after a coefficient changed, not on every token."""
        key = (like.device, like.dtype, self._extra)
        cached = term.scaled.get(key)
        if cached is not None and cached[0] == term.version:
            return cached[1], cached[2]
        with self._lock:
            version, coeff = term.version, term.coeff.clone()
        if self._extra:  # the unsteered rows at the end of the batch add an exact zero
            coeff = torch.cat([coeff, torch.zeros(self._extra)])
        c = coeff.to(device=like.device, dtype=like.dtype).view(-1, 1, 1) if coeff.any() else None
        delta = c * term.on(like) if c is not None and term.mode == "all" else None  # [rows, 1, hidden]
        term.scaled[key] = (version, c, delta)
        return c, delta

    def _add_front(self, h: Tensor, vec: Tensor, c: Tensor, start: int) -> Tensor:
        """ActAdd's front alignment: add c * vec[i] at each row's prompt position i (0 <= i < n)."""
        batch, seq, _ = h.shape
        n = vec.shape[0]
        if start >= self._max_offset + n:
            return h  # a cached decode step, past the front: the paper leaves it untouched
        offsets = (
            self._offsets.to(h.device)
            if self._offsets is not None
            else torch.zeros(batch, dtype=torch.long, device=h.device)
        )
        rel = torch.arange(start, start + seq, device=h.device).unsqueeze(0) - offsets.unsqueeze(
            1
        )  # [batch, seq]
        inside = ((rel >= 0) & (rel < n)).to(h.dtype)  # [batch, seq]
        delta = vec[rel.clamp(0, n - 1)] * inside.unsqueeze(-1)  # [batch, seq, hidden]
        return h + c * delta

    def _make_hook(self, layer: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            h = args[0] if args else kwargs["hidden_states"]  # [batch, seq, hidden]
            start = self._seen.get(layer, 0)
            self._seen[layer] = start + h.shape[1]
            steered = self._steer(layer, h, start)
            if args:
                return (steered, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": steered}

        hook.actadd_hook = True  # type: ignore[attr-defined]  # lets hook_count tell ours from transformers' own
        return hook

    @contextmanager
    def apply(self, blocks: nn.ModuleList, unsteered_rows: int = 0) -> Iterator[SteeringPlan]:
        """Install the hooks on `blocks` for the duration of the block; the model is left as it was.

        With `unsteered_rows=k` the batch must have `n_rows + k` rows, and the last k are not steered."""
        if bad := [l for l in self._terms if not 0 <= l < len(blocks)]:
            raise IncompatibleVectorError(
                f"layer {bad[0]} is out of range: the model has {len(blocks)} layers (0-{len(blocks) - 1})"
            )
        self.bind(None)
        self._extra = unsteered_rows
        handles = [
            blocks[l].register_forward_pre_hook(self._make_hook(l), with_kwargs=True) for l in self._terms
        ]
        try:
            yield self
        finally:
            self._extra = 0
            for handle in handles:
                handle.remove()


def hook_count(blocks: nn.ModuleList) -> int:
    """ActAdd hooks (steering or recording) currently on the blocks: 0 whenever none is active."""
    return sum(
        getattr(hook, "actadd_hook", False)
        for block in blocks
        for hook in (*block._forward_pre_hooks.values(), *block._forward_hooks.values())
    )
