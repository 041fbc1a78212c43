"""Normalised steering strengths: "a fraction of the residual norm" instead of a raw coefficient c.

Definition. A steer of normalised strength `s` at layer `l` adds, at each position it acts on, a vector
whose norm is `s` times the typical residual norm `r_l` at that layer (`engine.residual_norms`):

    c_l = s * r_l / ||v_l||

where `||v_l||` is the per-position norm of the tensor the mode applies at layer `l`:
- a direction `[hidden]` (modes all and generated, and a position-wise vector used in those modes, which
  is first averaged over positions): its L2 norm;
- a position-wise ActAdd vector `[n, hidden]` in mode front: the root mean square of its positions' norms,
  `sqrt(mean_i ||v_l[i]||^2)`, over its non-zero positions (the shared BOS makes position 0 exactly zero,
  and nothing is added there).

So `s = 0.5` adds half a typical residual's norm (for a positional vector: on average over its
positions). For a vector with several layers each layer gets its own `c_l`; the result is one Steer whose
`coeff` is `c` at its first layer and whose `profile` holds `c_l / c` for the others, so that moving the
coefficient later scales every layer together. Mode ablate has no strength: its coefficient is already
a fraction (1 = remove the direction entirely).

The relative norm `||v_l|| / r_l`, shown by `library show/list`, is the strength that c = 1 amounts to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor

from engine.errors import IncompatibleVectorError, InvalidInputError

if TYPE_CHECKING:
    from engine.models import LoadedModel
    from engine.steering import Steer
    from engine.vector import SteeringVector


def per_position_norm(tensor: Tensor) -> float:
    """`||v||` for a direction `[hidden]`; for `[n, hidden]`, the RMS of the non-zero positions' norms."""
    t = tensor.detach().float()
    if t.dim() == 1:
        return float(t.norm())
    norms = t.norm(dim=-1)  # [n]
    norms = norms[norms > 0]
    return float(norms.square().mean().sqrt()) if norms.numel() else 0.0


def _norms_of(norms: LoadedModel | Sequence[float]) -> list[float]:
    if isinstance(norms, Sequence):
        return [float(x) for x in norms]
    from engine.residual_norms import residual_norm_profile

    return residual_norm_profile(norms)


def _typical(norms: list[float], layer: int) -> float:
    if not 0 <= layer < len(norms):
        raise IncompatibleVectorError(
            f"layer {layer} is out of range: the model has {len(norms)} layers (0-{len(norms) - 1})"
        )
    return norms[layer]


def relative_norms(
    vector: SteeringVector, norms: LoadedModel | Sequence[float], *, mode: str | None = None
) -> dict[int, float]:
    """layer -> `||v_l|| / r_l`: the vector's size next to a typical residual at its layer (c = 1)."""
    from engine.steering import Steer

    table = _norms_of(norms)
    steer = Steer(vector, mode=mode if mode != "ablate" else "all")
    return {
        layer: per_position_norm(tensor) / _typical(table, layer)
        for layer, (tensor, _) in sorted(steer.layer_tensors().items())
    }


def relative_norm_report(vector: SteeringVector, norms: Sequence[float]) -> dict[str, float] | str:
    """For display: {"layer": ||v_l|| / r_l} in the vector's default mode, or why it can't be had (the
    vector doesn't fit a model with these many layers). Keys are strings, as in JSON."""
    bad = [l for l in vector.layer_ids if l >= len(norms)]
    if bad:
        return f"layer {bad[0]} is past the model's {len(norms)} layers"
    return {str(l): r for l, r in relative_norms(vector, norms).items()}


def check_strength(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise InvalidInputError(f"normalised strength {value} is not a finite number")
    return value


def coefficients_for_strength(steer: Steer, strength: float, norms: Sequence[float]) -> dict[int, float]:
    """layer -> c_l such that the added vector's per-position norm is `strength * r_l` (see module doc).

    `steer.coeff` and `steer.profile` are ignored here; `resolve_strength` multiplies the profile on top.
    """
    strength = check_strength(strength)
    if steer.resolved_mode == "ablate":
        raise InvalidInputError(
            "mode ablate takes a raw coefficient (1 = remove the direction entirely), not a normalised strength"
        )
    table = [float(x) for x in norms]
    out = {}
    for layer, (tensor, _) in sorted(steer.layer_tensors().items()):
        size = per_position_norm(tensor)
        if size == 0:
            raise InvalidInputError(
                f"vector {steer.vector.name or '(unnamed)'!r} is zero at layer {layer}; a normalised strength "
                "can't scale it"
            )
        out[layer] = strength * _typical(table, layer) / size
    return out


def resolve_strength(steer: Steer, strength: float, norms: LoadedModel | Sequence[float]) -> Steer:
    """A copy of `steer` whose coeff (and, for several layers, profile) realise `strength`."""
    import dataclasses

    table = _norms_of(norms)
    per_unit = coefficients_for_strength(steer, 1.0, table)  # c_l for s = 1; c_l is linear in s
    first = min(per_unit)
    user = steer.profile or {}
    profile = None
    if len(per_unit) > 1 or user:
        profile = {l: per_unit[l] / per_unit[first] * float(user.get(l, 1.0)) for l in per_unit}
    return dataclasses.replace(
        steer, coeff=check_strength(strength) * per_unit[first], profile=profile, strength=float(strength)
    )


def strength_per_coefficient(steer: Steer, norms: LoadedModel | Sequence[float]) -> float:
    """The normalised strength one unit of `steer.coeff` amounts to at its first layer, `||v_l|| / r_l`:
    multiply a raw coefficient by it to read it as a strength, e.g. for a slider's scale."""
    per_unit = coefficients_for_strength(steer, 1.0, _norms_of(norms))
    return 1.0 / per_unit[min(per_unit)]


def added_norm_ratio(steer: Steer, norms: Sequence[float]) -> dict[int, float]:
    """layer -> (per-position norm of what `steer` adds) / r_l, from its coeff and profile: the strength
    a Steer actually realises, to check a resolution or to display a raw coefficient as a strength."""
    return {
        layer: abs(steer.coeff * scale) * per_position_norm(tensor) / _typical(list(norms), layer)
        for layer, (tensor, scale) in sorted(steer.layer_tensors().items())
    }


__all__ = [
    "added_norm_ratio",
    "check_strength",
    "coefficients_for_strength",
    "per_position_norm",
    "relative_norm_report",
    "relative_norms",
    "resolve_strength",
    "strength_per_coefficient",
]
