"""`SteeringVector`: the plain data of one steering vector, its arithmetic, and its `.safetensors` file.

A vector holds one tensor per layer:
- `[n_tokens, hidden]` for position-wise ActAdd vectors (added at the front of the prompt), or
- `[hidden]` for directions (mean-diff, PCA, imports), added at every position or ablated.

The file is a safetensors file with tensors `layers.{l}` (float32) and string metadata in the header.
It is parsed with our own bounded header check first, then by safetensors itself; nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import stat
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import Tensor

from engine.atomic import atomic_write_bytes
from engine.errors import IncompatibleVectorError, VectorFileError
from engine.fingerprint import ModelFingerprint

FORMAT_NAME = "actadd-studio/vector"
FORMAT_VERSION = 1
METHODS = ("actadd", "mean-diff", "pca", "combined", "imported")
MODES = ("front", "all", "generated", "ablate")

# Bounds for untrusted files: a vector is at most a few hundred MB; a header far less.
MAX_FILE_BYTES = 2 * 1024**3
MAX_HEADER_BYTES = 8 * 1024**2
MAX_METADATA_VALUE_BYTES = 1024**2
MAX_LAYER_INDEX = 4096
_LAYER_KEY = re.compile(r"^layers\.(0|[1-9][0-9]{0,3})$")


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
    """Raise if `vector` can't be used on the model; return warnings for allowed mismatches."""
    if vector.hidden_size != fingerprint.hidden_size:
        raise IncompatibleVectorError(
            f"vector {vector.name or '(unnamed)'!r} has hidden size {vector.hidden_size}, "
            f"the model has {fingerprint.hidden_size}"
        )
    if bad := [l for l in vector.layer_ids if l >= fingerprint.n_layers]:
        raise IncompatibleVectorError(
            f"vector {vector.name or '(unnamed)'!r} uses layer {bad[0]}, the model has {fingerprint.n_layers} layers"
        )
    if vector.fingerprint is None or vector.fingerprint.same_model(fingerprint):
        return []
    message = (
        f"vector {vector.name or '(unnamed)'!r} was captured on another model "
        f"({vector.fingerprint.model_hint or vector.fingerprint.id}); same hidden size, so it may still steer"
    )
    if not allow_other_model:
        raise IncompatibleVectorError(message + "; allow other models explicitly to use it")
    return [message]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---- the file ---------------------------------------------------------------------------------------
def vector_to_bytes(vector: SteeringVector) -> bytes:
    tensors = {
        f"layers.{l}": t.detach().to("cpu", torch.float32).contiguous() for l, t in vector.layers.items()
    }
    for key, t in tensors.items():
        if not torch.isfinite(t).all():
            raise VectorFileError(f"refusing to save {key}: it contains NaN or infinite values")
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "name": vector.name,
        "method": vector.method,
        "default_coeff": repr(float(vector.default_coeff)),
        "default_mode": vector.default_mode,
        "prompts": json.dumps(vector.prompts, ensure_ascii=False),
        "fingerprint": vector.fingerprint.to_json() if vector.fingerprint else "",
        "provenance": json.dumps(vector.provenance, ensure_ascii=False, default=str),
        "tags": json.dumps(list(vector.tags), ensure_ascii=False),
        "notes": vector.notes,
        "created": vector.created or now_iso(),
    }
    try:
        return save_safetensors_bytes(tensors, metadata=metadata)
    except UnicodeEncodeError as exc:  # lone surrogates: bytes that were never UTF-8 text
        raise VectorFileError(
            f"refusing to save {vector.name or 'a vector'!r}: its name, notes, tags or prompts hold text that "
            "is not valid Unicode"
        ) from exc


def save_vector(vector: SteeringVector, path: Path, *, overwrite: bool = False) -> Path:
    """Write the vector atomically; without `overwrite` an existing file raises FileExistsError."""
    path = Path(path)
    atomic_write_bytes(path, vector_to_bytes(vector), overwrite=overwrite)
    return path


@dataclass(frozen=True)
class VectorHeader:
    """What the header alone tells, without reading the tensors (for fast library listings)."""

    path: Path
    metadata: dict[str, str]
    shapes: dict[int, list[int]]  # layer -> shape

    @property
    def name(self) -> str:
        return self.metadata.get("name") or self.path.stem

    @property
    def method(self) -> str:
        return self.metadata.get("method", "imported")

    @property
    def layer_ids(self) -> list[int]:
        return sorted(self.shapes)

    @property
    def hidden_size(self) -> int:
        return next(iter(self.shapes.values()))[-1]

    @property
    def fingerprint(self) -> ModelFingerprint | None:
        return _parse_fingerprint(self.metadata.get("fingerprint", ""), self.path)

    def json_field(self, key: str, default):
        return _parse_json(self.metadata.get(key, ""), default, key, self.path)

    def fields(self) -> dict:
        """The validated metadata as `SteeringVector` keyword arguments (all but layers, name, fingerprint)."""
        meta, name = self.metadata, self.path.name
        method = meta.get("method", "imported")
        mode = meta.get("default_mode") or ("front" if len(next(iter(self.shapes.values()))) == 2 else "all")
        try:
            coeff = float(meta.get("default_coeff", "1.0"))
        except ValueError as exc:
            raise VectorFileError(f"{name}: default_coeff is not a number") from exc
        if method not in METHODS or mode not in MODES or not math.isfinite(coeff):
            raise VectorFileError(f"{name}: unknown method {method!r}, mode {mode!r} or bad coefficient")
        tags = self.json_field("tags", [])
        prompts = self.json_field("prompts", {})
        provenance = self.json_field("provenance", {})
        if not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)) or not isinstance(
            prompts, dict
        ):
            raise VectorFileError(f"{name}: malformed tags or prompts")
        return {
            "method": method,
            "default_coeff": coeff,
            "default_mode": mode,
            "prompts": prompts,
            "provenance": provenance if isinstance(provenance, dict) else {},
            "tags": tuple(tags),
            "notes": meta.get("notes", ""),
            "created": meta.get("created", ""),
        }


def _parse_json(text: str, default, key: str, path: Path):
    if not text:
        return default
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise VectorFileError(f"{path.name}: metadata field {key!r} is not valid JSON") from exc


def _parse_fingerprint(text: str, path: Path) -> ModelFingerprint | None:
    data = _parse_json(text, None, "fingerprint", path)
    if data is None:
        return None
    try:
        return ModelFingerprint.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise VectorFileError(f"{path.name}: the model fingerprint is malformed") from exc


def _read_raw_header(path: Path) -> tuple[dict, int, int]:
    """Parse and bound-check a safetensors header: (header dict, header length, file size)."""
    try:
        st = path.stat()
        size = st.st_size
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open forever, a device never end
            raise VectorFileError(f"{path.name}: not a regular file")
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise VectorFileError(f"{path.name}: not a vector file (too short to be safetensors)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or header_len > size - 8:
                raise VectorFileError(
                    f"{path.name}: not a vector file (its header claims {header_len} bytes, the file has {size})"
                )
            raw = handle.read(header_len)
    except OSError as exc:
        raise VectorFileError(f"{path.name}: cannot read ({exc.strerror or exc})") from exc
    if size > MAX_FILE_BYTES:
        raise VectorFileError(f"{path.name}: file is {size} bytes, larger than any steering vector should be")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # RecursionError: "[[[[..."
        raise VectorFileError(f"{path.name}: not a vector file (the header is not UTF-8 JSON)") from exc
    if not isinstance(header, dict):
        raise VectorFileError(f"{path.name}: not a vector file (malformed header)")
    return header, header_len, size


def read_header(path: Path) -> VectorHeader:
    """Validate the header of a vector file and return its metadata and shapes, without the tensors."""
    path = Path(path)
    header, header_len, size = _read_raw_header(path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise VectorFileError(f"{path.name}: malformed metadata")
    if metadata.get("format") not in (None, FORMAT_NAME):
        raise VectorFileError(f"{path.name}: a {metadata.get('format')!r} file, not an ActAdd Studio vector")
    if big := [k for k, v in metadata.items() if len(v) > MAX_METADATA_VALUE_BYTES]:
        raise VectorFileError(f"{path.name}: metadata field {big[0]!r} is implausibly large")
    if not header:
        raise VectorFileError(f"{path.name}: holds no tensors")

    shapes: dict[int, list[int]] = {}
    spans: list[tuple[int, int]] = []
    for key, entry in header.items():
        match = _LAYER_KEY.fullmatch(key)  # not match: "$" also matches before a final "\n"
        if not match or int(match.group(1)) > MAX_LAYER_INDEX:
            raise VectorFileError(f"{path.name}: unexpected tensor {key[:60]!r} (expected layers.N)")
        if not isinstance(entry, dict) or entry.get("dtype") != "F32":
            raise VectorFileError(
                f"{path.name}: {key} must be float32, found {entry.get('dtype') if isinstance(entry, dict) else '?'}"
            )
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not (
            isinstance(shape, list)
            and 1 <= len(shape) <= 2
            and all(isinstance(d, int) and d > 0 for d in shape)
        ):
            raise VectorFileError(
                f"{path.name}: {key} has shape {shape}; expected [n, hidden] or [hidden] with n, hidden > 0"
            )
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise VectorFileError(f"{path.name}: {key} has malformed data offsets")
        begin, end = offsets
        if not 0 <= begin <= end <= size - 8 - header_len or end - begin != 4 * math.prod(shape):
            raise VectorFileError(f"{path.name}: {key} points outside the file or has the wrong byte size")
        shapes[int(match.group(1))] = shape
        spans.append((begin, end))
    spans.sort()
    if any(a_end > b_begin for (_, a_end), (b_begin, _) in itertools.pairwise(spans)):
        raise VectorFileError(f"{path.name}: tensor data overlaps")
    if len({tuple(s) for s in shapes.values()}) != 1:
        raise VectorFileError(f"{path.name}: layers have different shapes")
    return VectorHeader(path=path, metadata=metadata, shapes=shapes)


def load_vector(path: Path) -> SteeringVector:
    """Read and validate a vector file; any defect raises `VectorFileError` naming the file."""
    path = Path(path)
    header = read_header(path)
    try:
        tensors = load_safetensors_bytes(path.read_bytes())
    except Exception as exc:  # safetensors raises its own SafetensorError for structural problems
        raise VectorFileError(f"{path.name}: corrupt safetensors data ({exc})") from exc
    layers = {int(k.split(".")[1]): t for k, t in tensors.items()}
    for layer, t in layers.items():
        if not torch.isfinite(t).all():
            raise VectorFileError(f"{path.name}: layer {layer} contains NaN or infinite values")
    fields = header.fields()
    return SteeringVector(layers=layers, name=header.name, fingerprint=header.fingerprint, **fields)
