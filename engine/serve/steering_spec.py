"""A request's steering: the `steering` field and the `model+vector:coeff@layer` shorthand, resolved to Steers.

Vectors are named from the library only. A name is a library key (`name` or `collection/name`, checked by
engine.library.split_key); anything that looks like a file (`.safetensors`, a separator, `..`) is refused
before the library is touched, so a request can never make the server read a file of its choosing.
Everything that depends on the loaded model is checked here, per request, so that one bad request can
never fail the batch it would have shared with others.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ActAddError, InvalidInputError
from engine.library import SUFFIX, Compatibility, Library, VectorEntry, split_key
from engine.models import LoadedModel
from engine.steering import Steer, SteeringPlan
from engine.vector import SteeringVector, check_fits, load_vector

# One shorthand term: NAME[:COEFF][@LAYER]; NAME may hold '/' (a collection) but not ':' or '@'.
_TERM = re.compile(r"^(?P<name>[^:@]+?)(?::(?P<coeff>[^:@]+))?(?:@(?P<layer>\d{1,4}))?$")


class UnknownModelError(ActAddError):
    """The request names a model this server does not serve (an HTTP 404, as OpenAI answers)."""


@dataclass(frozen=True)
class SteeringRequest:
    """One entry of the `steering` field, or one `+term` of the model-name shorthand."""

    vector: str
    coeff: float | None = None
    layer: int | None = None
    mode: str | None = None


def split_model_name(model: str, served: str) -> list[SteeringRequest]:
    """`"smollm2+love-hate:4+calm@3"` -> the steering terms, after checking the base is the served model.

    Library names containing '+' cannot be written in the shorthand; the `steering` field takes them.
    """
    base, *terms = model.split("+")
    if base != served:
        raise UnknownModelError(f"model {base!r} is not served here; this server serves {served!r}")
    found = []
    for term in terms:
        match = _TERM.match(term)
        if not match:
            raise InvalidInputError(f"cannot read {term!r} in the model name; expected NAME[:COEFF][@LAYER]")
        coeff = None
        if match["coeff"] is not None:
            try:
                coeff = float(match["coeff"])
            except ValueError as exc:
                raise InvalidInputError(f"coefficient {match['coeff']!r} is not a number") from exc
        layer = int(match["layer"]) if match["layer"] is not None else None
        found.append(SteeringRequest(vector=match["name"], coeff=coeff, layer=layer))
    return found


def check_vector_name(name: str) -> tuple[str, str]:
    """A library key as (collection, name); refuses anything that is, or could be read as, a file path."""
    if Path(name).suffix.lower() == SUFFIX or "\\" in name or name.startswith(("/", "~")):
        raise InvalidInputError(f"{name!r}: vectors are named from the library, never by file path")
    try:
        return split_key(name)
    except ActAddError as exc:
        raise InvalidInputError(f"{name!r} is not a library vector name: {exc}") from exc


class VectorResolver:
    """Library names -> checked Steers for one loaded model; keeps the last vectors read (bounded LRU)."""

    def __init__(self, loaded: LoadedModel, library: Library, cache_size: int = 32):
        self.loaded = loaded
        self.library = library
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int, int], SteeringVector] = OrderedDict()
        self._lock = threading.Lock()

    def usable(self) -> list[VectorEntry]:
        """The library's vectors that fit the loaded model as they are (captured on it, or imported)."""
        found = self.library.compatible(self.loaded.fingerprint)
        # (Library.list shadows `list` in Library's own annotations, which confuses mypy about `found`.)
        return [e for e, status, _ in found if status == Compatibility.OK]  # type: ignore[attr-defined]

    def _load(self, name: str) -> SteeringVector:
        collection, short = check_vector_name(name)
        try:
            path = self.library.resolve(f"{collection}/{short}" if collection else short)
            self.library.key_of(path)  # inside the library, as a key names it
            stat = path.stat()
        except (ActAddError, OSError) as exc:
            raise InvalidInputError(
                f"unknown vector {name!r}; GET /v1/steering/vectors lists the ones this model can use"
            ) from exc
        key = (str(path), stat.st_mtime_ns, stat.st_size)  # a rewritten file is read again
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        vector = load_vector(path)
        with self._lock:
            self._cache[key] = vector
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return vector

    def steer(self, request: SteeringRequest) -> Steer:
        """One checked Steer: the vector fits this model, its layers exist, its mode applies to it."""
        if request.coeff is not None and not math.isfinite(request.coeff):
            raise InvalidInputError(
                f"coefficient {request.coeff} for {request.vector!r} is not a finite number"
            )
        vector = self._load(request.vector)
        check_fits(vector, self.loaded.fingerprint)  # other width, missing layer or another model: refused
        coeff = vector.default_coeff if request.coeff is None else request.coeff
        steer = Steer(vector=vector, coeff=coeff, mode=request.mode, at_layer=request.layer)
        n_layers = self.loaded.info.n_layers
        if bad := [l for l in steer.layer_tensors() if l >= n_layers]:
            raise InvalidInputError(
                f"layer {bad[0]} is out of range for {request.vector!r}: the model has {n_layers} layers "
                f"(0-{n_layers - 1})"
            )
        return steer

    def resolve(self, requests: list[SteeringRequest]) -> list[Steer]:
        steers = [self.steer(r) for r in requests]
        SteeringPlan([steers])  # the plan's own checks (modes, finite coefficients, zero ablation directions)
        return steers
