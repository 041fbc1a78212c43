"""The `.safetensors` file of a steering vector: format, bounded header checks, save and load.

The file holds tensors `layers.{l}` (float32) and string metadata in the header. It is parsed with our own
bounded header check first (`read_safetensors_header`, the one reader of untrusted safetensors headers,
also used by the steering-vectors import), then by safetensors itself; nothing is unpickled.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import stat
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from engine.atomic import atomic_write_bytes
from engine.errors import VectorFileError
from engine.fingerprint import ModelFingerprint
from engine.modes import METHODS, MODES

if TYPE_CHECKING:
    from engine.vector import SteeringVector

FORMAT_NAME = "actadd-studio/vector"
FORMAT_VERSION = 1

# Bounds for untrusted files: a vector is at most a few hundred MB; a header far less.
MAX_FILE_BYTES = 2 * 1024**3
MAX_HEADER_BYTES = 8 * 1024**2
MAX_METADATA_VALUE_BYTES = 1024**2
MAX_LAYER_INDEX = 4096
_LAYER_KEY = re.compile(r"^layers\.(0|[1-9][0-9]{0,3})$")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def read_safetensors_header(
    path: Path, *, max_file_bytes: int = MAX_FILE_BYTES, kind: str = "vector file"
) -> tuple[dict[str, Any], int, int]:
    """Parse and bound-check the JSON header of an untrusted safetensors file, without reading tensors.

    Returns (header dict, header length, file size). Anything odd raises `VectorFileError` naming the file
    and saying it is not a `kind`: a non-regular file (a FIFO would block the open forever), a file too
    short for the 8-byte length prefix, a header length past the file's end or `MAX_HEADER_BYTES`, a file
    over `max_file_bytes`, or a header that isn't a UTF-8 JSON object.
    """
    try:
        st = path.stat()
        size = st.st_size
        if not stat.S_ISREG(st.st_mode):
            raise VectorFileError(f"{path.name}: not a regular file")
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise VectorFileError(f"{path.name}: not a {kind} (too short to be safetensors)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or header_len > size - 8:
                raise VectorFileError(
                    f"{path.name}: not a {kind} (its header claims {header_len} bytes, the file has {size})"
                )
            raw = handle.read(header_len)
    except OSError as exc:
        raise VectorFileError(f"{path.name}: cannot read ({exc.strerror or exc})") from exc
    if size > max_file_bytes:
        raise VectorFileError(f"{path.name}: file is {size} bytes, larger than any steering vector should be")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # RecursionError: "[[[[..."
        raise VectorFileError(f"{path.name}: not a {kind} (the header is not UTF-8 JSON)") from exc
    if not isinstance(header, dict):
        raise VectorFileError(f"{path.name}: not a {kind} (malformed header)")
    return header, header_len, size


def read_header(path: Path) -> VectorHeader:
    """Validate the header of a vector file and return its metadata and shapes, without the tensors."""
    path = Path(path)
    header, header_len, size = read_safetensors_header(path)
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
    from engine.vector import SteeringVector  # the data type imports this module, not the other way

    return SteeringVector(layers=layers, name=header.name, fingerprint=header.fingerprint, **fields)
