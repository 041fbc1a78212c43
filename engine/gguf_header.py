"""Read a GGUF file's header (metadata, tensor table) without its weights; say whether it can be opened.

`gguf.GGUFReader` parses every metadata array into numpy objects (a 262,144-entry vocabulary takes a
noticeable while), which is too slow for listing hundreds of files; this walks the same layout
(https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) and skips array contents, keeping only the
scalars and the tensor table. It uses the `gguf` package's enums for names and block sizes.

`gguf_openability` is the one rule for "can the app open this .gguf": a single-file causal LM of an
architecture that transformers reads from GGUF (`transformers.integrations.ggml.GGUF_CONFIG_MAPPING`,
read through engine/transformers_tables.py),
not an adapter, control vector, vision projector, vocabulary-only or split file, and not truncated.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.transformers_tables import transformers_tables

GGUF_MAGIC = b"GGUF"
# GGUFValueType -> struct format of one scalar (STRING = 8 and ARRAY = 9 are variable-length)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_SPLIT_NAME = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_FAST_SKIP_MIN = 4096  # string arrays at least this long are skipped by `skip_short_strings`
_MAX_HOPS = 1024  # a vocabulary takes a few hops per 64 KB; a pathological array falls back to stepping


class GGUFHeaderError(ValueError):
    """The file is not a readable GGUF header (wrong magic, unknown version or value type, cut short)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int  # gguf.GGMLQuantizationType value
    offset: int  # from the start of the data section


@dataclass(frozen=True)
class TensorEntry:
    """A tensor as the converter reads it (engine/gguf_convert.py)."""

    name: str
    shape: tuple[int, ...]  # torch order (ggml stores the fastest-moving dimension first)
    qtype: Any  # gguf.GGMLQuantizationType
    offset: int  # from the start of the file
    nbytes: int


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    file_size: int
    metadata: dict[str, object]  # scalar values; arrays as ("array", element type, length)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0  # where the tensor data begins

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    @property
    def n_params(self) -> int:
        total = 0
        for t in self.tensors:
            n = 1
            for d in t.shape:
                n *= d
            total += n
        return total

    @property
    def quant_type(self) -> str | None:
        """`general.file_type` as llama.cpp names it (Q4_K_M, Q8_0...), else the blocks' commonest type."""
        import gguf

        file_type = self.metadata.get("general.file_type")
        if isinstance(file_type, int):
            try:
                return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
            except ValueError:
                pass
        # The blocks' matrices: embeddings and norms are often kept at a higher precision.
        counts = Counter(t.ggml_type for t in self.tensors if len(t.shape) >= 2 and t.name.startswith("blk."))
        counts = counts or Counter(t.ggml_type for t in self.tensors if len(t.shape) >= 2)
        if not counts:
            return None
        try:
            return gguf.GGMLQuantizationType(counts.most_common(1)[0][0]).name
        except ValueError:
            return None

    def tensor_table(self) -> list[TensorEntry]:
        """Each tensor as a converter reads it: torch-order shape, absolute offset and byte size."""
        import gguf

        table = []
        for t in self.tensors:
            try:
                qtype = gguf.GGMLQuantizationType(t.ggml_type)
                block, size = gguf.GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise GGUFHeaderError(f"tensor {t.name!r} has unknown type {t.ggml_type}") from None
            n = math.prod(t.shape)
            # ggml lists the fastest-moving dimension first; torch lists it last
            shape = tuple(reversed(t.shape))
            table.append(TensorEntry(t.name, shape, qtype, self.data_offset + t.offset, n // block * size))
        return table

    def data_end(self) -> int:
        """The byte just past the last tensor's data, as the tensor table describes it."""
        return max((t.offset + t.nbytes for t in self.tensor_table()), default=self.data_offset)


class _Cursor:
    def __init__(self, buf, order: str) -> None:
        self.buf, self.pos, self.order = buf, 0, order

    def unpack(self, fmt: str):
        try:
            values = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        except struct.error:
            raise GGUFHeaderError("the header is cut short (truncated or corrupt file)") from None
        self.pos += struct.calcsize(self.order + fmt)
        return values[0]

    def string(self) -> str:
        n = self.unpack("Q")
        if self.pos + n > len(self.buf):
            raise GGUFHeaderError("the header is cut short (truncated or corrupt file)")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", "replace")

    def skip_string(self) -> None:
        n = self.unpack("Q")  # not `self.pos += self.unpack(...)`: that reads pos before unpack moves it
        self.pos += n
        if self.pos > len(self.buf):
            raise GGUFHeaderError("the header is cut short (truncated or corrupt file)")

    def _skip_strings(self, count: int) -> None:
        if self.order == "<" and count >= _FAST_SKIP_MIN:
            self.pos = skip_short_strings(self.buf, self.pos, count)
        else:
            self.pos = _step_strings(self.buf, self.pos, count, self.order)

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            element, count = self.unpack("I"), self.unpack("Q")
            if element in _SCALARS:
                self.pos += count * struct.calcsize(_SCALARS[element])
                if self.pos > len(self.buf):
                    raise GGUFHeaderError("the header is cut short (truncated or corrupt file)")
            elif element == _STRING:  # each string carries its own length: walk them (a tight loop:
                self._skip_strings(count)  # vocabularies hold up to ~262k of them)
            elif element == _ARRAY:
                for _ in range(count):
                    self.value(_ARRAY)
            else:
                raise GGUFHeaderError(f"unknown GGUF array element type {element}")
            return ("array", element, count)
        raise GGUFHeaderError(f"unknown GGUF value type {kind}")


def _step_strings(buf, pos: int, count: int, order: str = "<") -> int:
    """The offset just past `count` GGUF strings (u64 length, then the bytes) from `pos`, one at a time."""
    length = struct.Struct(order + "Q").unpack_from
    try:
        for _ in range(count):
            pos += 8 + length(buf, pos)[0]
    except struct.error:
        raise GGUFHeaderError("the header is cut short (truncated or corrupt file)") from None
    if pos > len(buf):
        raise GGUFHeaderError("the header is cut short (truncated or corrupt file)")
    return pos


def skip_short_strings(buf, pos: int, count: int) -> int:
    """`_step_strings` for a long little-endian array (a vocabulary, its merges), at numpy speed.

    Stepping costs ~0.1 µs a string in Python, so a listing of 200 files with 32k-token vocabularies and
    merges spent ~1.4 s (10 s on a busy machine) here. Each string's length sits in the 8 bytes before
    its text, and a vocabulary's strings are short: every offset whose bytes 1..7 are zero (a length under
    256) is found in a few array passes, and the strings are followed through those offsets for as long as
    each one ends exactly where the next found offset begins (checked for all at once). Where that chain
    breaks (a string of 256+ bytes, or 7 zero bytes inside a string's text) one plain step is taken from
    the last position known to be a string start, so the result is exactly `_step_strings`'s.
    """
    import numpy as np

    hops = 0  # runs and plain steps taken: an array of mostly long (or NUL-filled) strings is stepped
    while count:
        size = min(len(buf) - pos, max(1 << 16, 16 * count))  # a string is >= 8 bytes, ~16 in a vocabulary
        if size <= 8:
            return _step_strings(buf, pos, count)
        seg = np.frombuffer(buf[pos : pos + size], dtype=np.uint8)
        n = size - 7  # offsets whose 8 length bytes lie inside seg
        zero = seg == 0
        short = zero[1 : n + 1].copy()
        for k in range(2, 8):
            short &= zero[k : n + k]
        starts = np.flatnonzero(short)  # offsets that read as a length < 256: every short string's start
        ends = starts + 8 + seg[starts]  # where the string starting there ends
        breaks = np.flatnonzero(ends[:-1] != starts[1:])  # the chain leaves the found offsets after these
        at = 0  # offset in seg of the next string: always a true string start
        while count and at < n:
            hops += 1
            if hops > _MAX_HOPS:  # each hop costs a few µs: beyond this, plain steps are cheaper
                return _step_strings(buf, pos + at, count)
            i = int(np.searchsorted(starts, at))
            if i == len(starts) or starts[i] != at:  # a long string: one plain step
                at = _step_strings(buf, pos + at, 1) - pos
                count -= 1
                continue
            b = int(np.searchsorted(breaks, i))
            last = int(breaks[b]) if b < len(breaks) else len(starts) - 1
            run = min(last - i + 1, count)  # strings i .. i + run - 1 follow one another
            at, count = int(ends[i + run - 1]), count - run
        pos += at
    if pos > len(buf):
        raise GGUFHeaderError("the header is cut short (truncated or corrupt file)")
    return pos


def is_gguf_file(path: str | Path) -> bool:
    """Whether `path` is a regular file that starts with the GGUF magic, whatever its name.

    Ollama's blobs are named `sha256-<hex>`, without the .gguf suffix; a loader can't go by the name.
    """
    try:
        if not Path(path).is_file():  # not a FIFO, which would block the read
            return False
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except (OSError, ValueError):
        return False


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Parse the header of `path`; raises `GGUFHeaderError` (or OSError) when it can't."""
    path = Path(path)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < 24:
            raise GGUFHeaderError("too short to be a GGUF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:4] != GGUF_MAGIC:
                raise GGUFHeaderError("not a GGUF file (no GGUF magic)")
            order = "<"
            version = struct.unpack_from("<I", buf, 4)[0]
            if version > 0xFFFF:  # a big-endian file
                order, version = ">", struct.unpack_from(">I", buf, 4)[0]
            if version not in (2, 3):
                raise GGUFHeaderError(f"GGUF version {version} is not supported (only 2 and 3)")
            cur = _Cursor(buf, order)
            cur.pos = 8
            n_tensors, n_kv = cur.unpack("Q"), cur.unpack("Q")
            if n_tensors > size or n_kv > size:
                raise GGUFHeaderError("implausible tensor or key counts (corrupt header)")
            metadata: dict[str, object] = {}
            for _ in range(n_kv):
                key = cur.string()
                metadata[key] = cur.value(cur.unpack("I"))
            tensors = []
            for _ in range(n_tensors):
                name = cur.string()
                n_dims = cur.unpack("I")
                if n_dims > 8:
                    raise GGUFHeaderError(f"tensor {name!r} has {n_dims} dimensions (corrupt header)")
                shape = tuple(cur.unpack("Q") for _ in range(n_dims))
                tensors.append(TensorInfo(name, shape, cur.unpack("I"), cur.unpack("Q")))
            alignment = metadata.get("general.alignment", 32)
            alignment = alignment if isinstance(alignment, int) and alignment > 0 else 32
            data_offset = -(-cur.pos // alignment) * alignment
    return GGUFHeader(path, version, size, metadata, tensors, data_offset)


def supported_gguf_architectures() -> tuple[str, ...]:
    """The architectures transformers reads from GGUF, from transformers itself (via the on-disk copy of
    engine/transformers_tables.py, so that listing models doesn't import transformers)."""
    return transformers_tables().gguf_architectures


def openable_gguf_architectures() -> tuple[str, ...]:
    """The GGUF architectures the app opens: those transformers reads that are causal language models."""
    causal = transformers_tables().causal_lm_types
    return tuple(a for a in supported_gguf_architectures() if a in causal)


def transformers_architecture(gguf_arch: str) -> str | None:
    """The transformers name of a GGUF architecture ("qwen2moe" -> "qwen2_moe"), if transformers reads it."""
    supported = supported_gguf_architectures()
    for candidate in (gguf_arch, gguf_arch.replace("-", "_"), re.sub(r"(\d)moe$", r"\1_moe", gguf_arch)):
        if candidate in supported:
            return candidate
    return None


@dataclass(frozen=True)
class GGUFCheck:
    ok: bool
    reason: str | None  # why not, for the user; None when ok
    architecture: str | None  # general.architecture as written in the file
    quant_type: str | None
    n_params: int | None
    name: str | None = None  # general.name
    header: GGUFHeader | None = None


def gguf_openability(path: str | Path) -> GGUFCheck:
    """Whether the app can open the GGUF file at `path`, from its header only; never raises for bad files."""
    path = Path(path)
    try:
        header = read_gguf_header(path)
    except GGUFHeaderError as exc:
        return GGUFCheck(False, f"{path.name}: {exc}", None, None, None)
    except (OSError, ValueError) as exc:
        return GGUFCheck(
            False, f"{path.name} can't be read: {exc.__class__.__name__}: {exc}", None, None, None
        )
    arch = header.architecture
    name = header.get("general.name") if isinstance(header.get("general.name"), str) else None
    try:
        quant, n_params = header.quant_type, header.n_params
    except Exception:  # an unknown enum value is just not shown
        quant, n_params = None, header.n_params

    def refuse(reason: str) -> GGUFCheck:
        return GGUFCheck(False, reason, arch, quant, n_params, name, header)

    split = _SPLIT_NAME.search(path.name)
    split_count = header.get("split.count")
    if (isinstance(split_count, int) and split_count > 1) or (split and split.group(2) != "00001"):
        parts = split_count if isinstance(split_count, int) and split_count > 1 else int(split.group(2))  # type: ignore[union-attr]
        return refuse(
            f"{path.name} is one part of a model split into {parts} files; merge them first "
            "(llama.cpp: llama-gguf-split --merge)"
        )
    kind = header.get("general.type")
    if kind == "adapter" or "adapter.type" in header.metadata:
        return refuse(f"{path.name} is a {header.get('adapter.type', 'LoRA')} adapter, not a model")
    if arch == "controlvector":
        return refuse(f"{path.name} is a control vector; import it into the Library instead")
    if kind == "mmproj" or arch == "clip":
        return refuse(f"{path.name} is a vision projector (mmproj), not a language model")
    if arch is None:
        return refuse(f"{path.name} names no architecture (general.architecture)")
    hf_arch = transformers_architecture(arch)
    if hf_arch is None:
        return refuse(
            f"{path.name} has architecture {arch!r}, which transformers can't read from GGUF; "
            f"supported: {', '.join(openable_gguf_architectures())}"
        )
    if hf_arch not in transformers_tables().causal_lm_types:
        return refuse(f"{path.name} is a {arch!r} model, not a causal language model that can be steered")
    if not header.tensors:
        return refuse(f"{path.name} holds no weights (a vocabulary-only file)")
    try:
        end = header.data_end()
    except GGUFHeaderError as exc:
        return refuse(f"{path.name}: {exc}")
    if end > header.file_size:
        return refuse(
            f"{path.name} is truncated: its tensors need {end:,} bytes, the file has {header.file_size:,}"
        )
    return GGUFCheck(True, None, arch, quant, n_params, name, header)
