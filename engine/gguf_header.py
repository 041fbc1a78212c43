"""A GGUF file's header, read cheaply: its metadata (string arrays skipped) and its tensor table.

`gguf.GGUFReader` builds a Python object for every entry of every metadata array, so on a 262k-token
vocabulary it takes seconds and hundreds of MB. Checking a file and streaming its tensors needs neither the
vocabulary nor the merges, only the scalars and where each tensor lies; this walks the same layout
(https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) with the `gguf` package's own constants.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

_SCALARS = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]  # torch order (ggml stores the fastest-moving dimension first)
    qtype: GGMLQuantizationType
    offset: int  # from the start of the file
    nbytes: int


@dataclass(frozen=True)
class GgufHeader:
    metadata: dict[str, Any]  # scalars and strings; an array of strings is only its length
    tensors: tuple[TensorEntry, ...]
    end: int  # the byte just past the last tensor's data


def _string(blob: mmap.mmap, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", blob, pos)
    pos += 8
    if pos + length > len(blob):
        raise ValueError("a string runs past the end of the file")
    return blob[pos : pos + length].decode("utf-8", "replace"), pos + length


def _value(blob: mmap.mmap, pos: int, vtype: int) -> tuple[Any, int]:
    vtype = GGUFValueType(vtype)
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack_from(fmt, blob, pos)[0], pos + struct.calcsize(fmt)
    if vtype == GGUFValueType.STRING:
        return _string(blob, pos)
    element, count = struct.unpack_from("<IQ", blob, pos)
    pos += 12
    element = GGUFValueType(element)
    if element in _SCALARS:
        width = struct.calcsize(_SCALARS[element])
        values = (
            list(struct.unpack_from(f"<{count}{_SCALARS[element][1]}", blob, pos)) if count <= 4096 else count
        )
        return values, pos + count * width
    for _ in range(count):  # strings (or nested arrays): walk past them
        _, pos = _value(blob, pos, element)
    return count, pos


def read_header(path: Path) -> GgufHeader:
    """Parse the header; raises ValueError, struct.error or IndexError on a file that isn't a whole GGUF."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob:
        return _parse(blob)


def _parse(blob: mmap.mmap) -> GgufHeader:
    if blob[:4] != b"GGUF":
        raise ValueError("no GGUF magic")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", blob, 4)
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version}")
    pos = 24
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key, pos = _string(blob, pos)
        (vtype,) = struct.unpack_from("<I", blob, pos)
        metadata[key], pos = _value(blob, pos + 4, vtype)
    table = []
    for _ in range(n_tensors):
        name, pos = _string(blob, pos)
        (n_dims,) = struct.unpack_from("<I", blob, pos)
        dims = struct.unpack_from(f"<{n_dims}Q", blob, pos + 4)
        qtype, offset = struct.unpack_from("<IQ", blob, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 12
        table.append((name, tuple(reversed(dims)), GGMLQuantizationType(qtype), offset))
    alignment = int(metadata.get("general.alignment", 32))
    data_start = (pos + alignment - 1) // alignment * alignment
    tensors = []
    for name, shape, qtype, offset in table:
        block, type_size = GGML_QUANT_SIZES[qtype]
        nbytes = math.prod(shape) // block * type_size
        tensors.append(TensorEntry(name, shape, qtype, data_start + offset, nbytes))
    end = max((t.offset + t.nbytes for t in tensors), default=data_start)
    return GgufHeader(metadata, tuple(tensors), end)
