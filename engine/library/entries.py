"""Library entries: one vector as its header describes it, built one way from the header's values.

A listing never reads tensors: `header_values` turns a validated header into a flat list of values (the
form the index stores), and `build_entry` turns such a list into a `VectorEntry`, whether the values come
from the header just now, from the on-disk index, or from a file in the trash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.fingerprint import Compatibility, ModelFingerprint
from engine.library.names import make_key
from engine.vector_file import read_header

__all__ = ["ENTRY_FIELDS", "BadFile", "Compatibility", "FingerprintCache", "Listing", "VectorEntry"]


@dataclass(frozen=True)
class VectorEntry:
    """One vector as the header describes it; the tensors are never read for this."""

    name: str
    collection: str
    path: Path
    method: str
    layers: list[int]
    shape: list[int]
    hidden_size: int
    fingerprint: ModelFingerprint | None
    tags: tuple[str, ...]
    notes: str
    created: str
    default_coeff: float
    default_mode: str
    prompts: dict
    trash_id: str = ""  # set for entries returned by `Library.trash()`
    deleted: str = ""  # ISO time of deletion, for trash entries
    size: int = 0  # file size in bytes

    @property
    def key(self) -> str:
        """`collection/name` (or `name` at the top level); in the trash, the trash id."""
        return self.trash_id or make_key(self.collection, self.name)

    @property
    def is_positional(self) -> bool:
        return len(self.shape) == 2

    @property
    def model_hint(self) -> str:
        return self.fingerprint.model_hint if self.fingerprint else ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description (used by `--json`, `Library.show` and the GUI)."""
        data = {
            "key": self.key,
            "name": self.name,
            "collection": self.collection,
            "path": str(self.path),
            "method": self.method,
            "layers": list(self.layers),
            "shape": list(self.shape),
            "hidden_size": self.hidden_size,
            "positional": self.is_positional,
            "model": self.model_hint,
            "fingerprint": self.fingerprint.to_dict() if self.fingerprint else None,
            "tags": list(self.tags),
            "notes": self.notes,
            "created": self.created,
            "default_coeff": self.default_coeff,
            "default_mode": self.default_mode,
            "prompts": self.prompts,
            "size": self.size,
        }
        if self.trash_id:
            data["trash_id"] = self.trash_id
            data["deleted"] = self.deleted
        return data

    def matches_text(self, needle: str) -> bool:
        """Case-insensitive search over key, method, notes, model name, tags and prompts."""
        haystack = " ".join(
            [
                self.key,
                self.method,
                self.notes,
                self.model_hint,
                " ".join(self.tags),
                json.dumps(self.prompts, ensure_ascii=False),
            ]
        )
        return needle.casefold() in haystack.casefold()


@dataclass(frozen=True)
class BadFile:
    path: Path
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "reason": self.reason}


@dataclass
class Listing:
    entries: list[VectorEntry]
    bad_files: list[BadFile]

    def __iter__(self) -> Iterator[VectorEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def keys(self) -> list[str]:
        return [e.key for e in self.entries]


def _fingerprint_key(data: dict) -> str:
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


class FingerprintCache:
    """Many vectors share a model: build each ModelFingerprint once per listing.

    In the index, fingerprints live in one table and entries refer to them by key (the fingerprint's
    canonical JSON's hash), which keeps the index small and fast to parse.
    """

    def __init__(self, table: dict | None = None) -> None:
        self.table: dict[str, dict] = {}  # key -> fingerprint dict, as stored in the index
        self._objects: dict[str, ModelFingerprint] = {}
        self._keys: dict[tuple, str] = {}
        self.merge(table or {})

    def merge(self, table: object) -> None:
        if isinstance(table, dict):
            for key, value in table.items():
                if isinstance(key, str) and isinstance(value, dict):
                    self.table.setdefault(key, value)

    def intern(self, data: dict | None) -> str | None:
        """Store a fingerprint dict in the table and return its key."""
        if data is None:
            return None
        fast = tuple(data.items())
        key = self._keys.get(fast)
        if key is None:
            key = self._keys[fast] = _fingerprint_key(data)
            self.table.setdefault(key, data)
        return key

    def get(self, ref: str | None) -> ModelFingerprint | None:
        if ref is None:
            return None
        fp = self._objects.get(ref)
        if fp is None:
            fp = self._objects[ref] = ModelFingerprint.from_dict(self.table[ref])
        return fp


# An entry's values, in the order the index stores them (no repeated key names: a third faster to parse).
ENTRY_FIELDS = (
    "method",
    "layers",
    "shape",
    "hidden_size",
    "fingerprint",  # a key of the FingerprintCache's table, or None
    "tags",
    "notes",
    "created",
    "default_coeff",
    "default_mode",
    "prompts",
)
FINGERPRINT_FIELD = ENTRY_FIELDS.index("fingerprint")


def header_values(path: Path, fps: FingerprintCache) -> list[Any]:
    """Read and validate a header into an entry's values, in `ENTRY_FIELDS` order (raises VectorFileError)."""
    header = read_header(path)
    fields = header.fields()
    shape = next(iter(header.shapes.values()))
    fingerprint = header.fingerprint  # validates it
    fp_key = fps.intern(dataclasses.asdict(fingerprint) if fingerprint is not None else None)
    return [
        fields["method"],
        header.layer_ids,
        list(shape),
        int(shape[-1]),
        fp_key,
        list(fields["tags"]),
        fields["notes"],
        fields["created"],
        fields["default_coeff"],
        fields["default_mode"],
        fields["prompts"],
    ]


def build_entry(
    values: list[Any],
    *,
    name: str,
    collection: str,
    path: Path,
    size: int,
    fps: FingerprintCache,
    trash_id: str = "",
    deleted: str = "",
) -> VectorEntry:
    """The one way to make a `VectorEntry`: from `header_values` (fresh, or read back from the index).

    Raises TypeError, ValueError or KeyError for values that aren't what `header_values` writes (a
    hand-edited or foreign index), so the caller can fall back to the header.
    """
    method, layers, shape, hidden, fp, tags, notes, created, coeff, mode, prompts = values
    if not (isinstance(layers, list) and isinstance(shape, list) and isinstance(prompts, dict)):
        raise TypeError("malformed entry values")
    return VectorEntry(
        name=name,
        collection=collection,
        path=path,
        method=str(method),
        layers=layers,
        shape=shape,
        hidden_size=int(hidden),
        fingerprint=fps.get(fp),
        tags=tuple(tags),
        notes=str(notes),
        created=str(created),
        default_coeff=float(coeff),
        default_mode=str(mode),
        prompts=prompts,
        size=size,
        trash_id=trash_id,
        deleted=deleted,
    )
