"""`SteeringVector`: the plain data of one steering vector and its arithmetic.

A vector holds one tensor per layer:
- `[n_tokens, hidden]` for position-wise ActAdd vectors (added at the front of the prompt), or
- `[hidden]` for directions (mean-diff, PCA, imports), added at every position or ablated.

Its `.safetensors` file (format, bounded header checks, save and load) is `engine.vector_file`; the file
functions are re-exported here for the callers that import them from `engine.vector`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor

from engine.errors import IncompatibleVectorError
from engine.fingerprint import Compatibility, ModelFingerprint, compatibility
from engine.vector_file import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_FILE_BYTES,
    MAX_HEADER_BYTES,
    MAX_LAYER_INDEX,
    MAX_METADATA_VALUE_BYTES,
    METHODS,
    MODES,
    VectorHeader,
    load_vector,
    now_iso,
    read_header,
    read_safetensors_header,
    save_vector,
    vector_to_bytes,
)


@dataclass(frozen=True, eq=False)
class SteeringVector:
    layers: dict[int, Tensor]  # layer l -> [n_tokens, hidden] (position-wise) or [hidden] (direction)
    method: str = "actadd"  # how it was made, one of METHODS
    name: str = ""
    default_coeff: float = 1.0  # the coefficient c suggested when the vector is activated
    default_mode: str = "front"  # "front" for ActAdd vectors, "all" for directions
    fingerprint: ModelFingerprint | None = None  # the model it was captured on
    prompts: dict = field(default_factory=dict)  # {"positive", "negative"} or {"pairs": [...]}
    provenance: dict = field(default_factory=dict)  # pad token, dtype, quantization, library version...
    tags: tuple[str, ...] = ()
    notes: str = ""
    created: str = ""  # ISO 8601, UTC

    def __post_init__(self) -> None:
        if not self.layers:
            raise IncompatibleVectorError("a steering vector needs at least one layer")
        shapes = {tuple(t.shape[-1:]) for t in self.layers.values()}
        ranks = {t.dim() for t in self.layers.values()}
        if len(shapes) != 1 or len(ranks) != 1 or not ranks <= {1, 2}:
            raise IncompatibleVectorError(
                "all layers of a vector must share one shape, [n, hidden] or [hidden]"
            )

    # ---- shape -------------------------------------------------------------------------------------
    @property
    def layer_ids(self) -> list[int]:
        return sorted(self.layers)

    @property
    def hidden_size(self) -> int:
        return next(iter(self.layers.values())).shape[-1]

    @property
    def is_positional(self) -> bool:
        """True for ActAdd's `[n_tokens, hidden]` vectors, False for `[hidden]` directions."""
        return next(iter(self.layers.values())).dim() == 2

    @property
    def n_tokens(self) -> int:
        return next(iter(self.layers.values())).shape[0] if self.is_positional else 1

    @property
    def shape(self) -> list[int]:
        return list(next(iter(self.layers.values())).shape)

    def norms(self) -> dict[int, float]:
        return {layer: float(t.float().norm()) for layer, t in sorted(self.layers.items())}

    def replace(self, **changes) -> SteeringVector:
        return dataclasses.replace(self, **changes)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> SteeringVector:
        return self.replace(layers={l: t.to(device=device, dtype=dtype) for l, t in self.layers.items()})

    # ---- arithmetic (repeng-style: sliders become `coeff * vector`) --------------------------------------
    def __mul__(self, coeff: float) -> SteeringVector:
        if not isinstance(coeff, (int, float)):
            return NotImplemented
        return self.replace(layers={l: t * float(coeff) for l, t in self.layers.items()}, method="combined")

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def __add__(self, other: SteeringVector) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return combine([(1.0, self), (1.0, other)])

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return combine([(1.0, self), (-1.0, other)])

    def to_direction(self, position: int | None = None) -> SteeringVector:
        """A `[hidden]` direction from a position-wise vector: the mean over positions, or one position.

        The mean skips position 0 when it is exactly zero (the shared BOS of an ActAdd pair), since that
        zero would only dilute the direction.
        """
        if not self.is_positional:
            return self
        layers = {}
        for layer, t in self.layers.items():
            if position is not None:
                if not -t.shape[0] <= position < t.shape[0]:
                    raise IncompatibleVectorError(
                        f"position {position} is outside this vector's {t.shape[0]} positions"
                    )
                layers[layer] = t[position].clone()
            else:
                rows = t[1:] if t.shape[0] > 1 and not t[0].any() else t
                layers[layer] = rows.mean(dim=0)
        how = "mean over positions" if position is None else f"position {position}"
        return self.replace(
            layers=layers,
            default_mode="all",
            provenance={**self.provenance, "to_direction": how, "source_shape": self.shape},
        )


def combine(terms: list[tuple[float, SteeringVector]], *, allow_other_model: bool = False) -> SteeringVector:
    """`a·v1 + b·v2 + ...` between vectors of the same shape, layers and (unless overridden) model."""
    if not terms:
        raise IncompatibleVectorError("nothing to combine")
    first = terms[0][1]
    for _, v in terms[1:]:
        if v.layer_ids != first.layer_ids:
            raise IncompatibleVectorError(f"layers differ: {first.layer_ids} vs {v.layer_ids}")
        if v.shape != first.shape:
            raise IncompatibleVectorError(f"shapes differ: {first.shape} vs {v.shape}")
        if (
            not allow_other_model
            and (first.fingerprint and v.fingerprint)
            and not first.fingerprint.same_model(v.fingerprint)
        ):
            raise IncompatibleVectorError(
                f"vectors come from different models ({first.fingerprint.model_hint or first.fingerprint.id} "
                f"vs {v.fingerprint.model_hint or v.fingerprint.id})"
            )
    layers = {l: sum(float(c) * v.layers[l].float() for c, v in terms) for l in first.layer_ids}
    recipe = [{"coeff": float(c), "name": v.name} for c, v in terms]
    return first.replace(
        layers=layers,
        method="combined",
        name="",
        prompts={"combined_from": recipe},
        provenance={"combine": recipe},
        created=now_iso(),
    )


def check_fits(
    vector: SteeringVector, fingerprint: ModelFingerprint, *, allow_other_model: bool = False
) -> list[str]:
    """Raise if `vector` can't be used on the model; return warnings for allowed mismatches.

    The rule is `engine.fingerprint.compatibility`; this turns its verdict into an error or a warning.
    """
    status, reason = compatibility(vector.hidden_size, vector.layer_ids, vector.fingerprint, fingerprint)
    label = vector.name or "(unnamed)"
    if status == Compatibility.INCOMPATIBLE:
        raise IncompatibleVectorError(f"vector {label!r}: {reason}")
    if status == Compatibility.OK:
        return []
    recorded = vector.fingerprint
    assert recorded is not None  # OTHER_MODEL means a fingerprint was recorded
    message = (
        f"vector {label!r} was captured on another model ({recorded.model_hint or recorded.id}); "
        "same hidden size, so it may still steer"
    )
    if not allow_other_model:
        raise IncompatibleVectorError(message + "; allow other models explicitly to use it")
    return [message]


__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_FILE_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_LAYER_INDEX",
    "MAX_METADATA_VALUE_BYTES",
    "METHODS",
    "MODES",
    "SteeringVector",
    "VectorHeader",
    "check_fits",
    "combine",
    "load_vector",
    "now_iso",
    "read_header",
    "read_safetensors_header",
    "save_vector",
    "vector_to_bytes",
]
