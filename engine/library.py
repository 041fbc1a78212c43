"""The personal vector library: a folder of self-describing `.safetensors` vector files.

Layout (see docs/library.md)::

    <root>/love-hate.safetensors          a vector at the top level: key "love-hate"
    <root>/tone/formal.safetensors        a vector in the collection "tone": key "tone/formal"
    <root>/.index.json                    listing cache (headers only), rebuilt when stale or corrupt
    <root>/.trash/<trash id>/             deleted vectors, with origin.json, until restored or emptied
    <root>/.lock                          advisory lock serialising read-modify-write operations
    <root>/.../.tmp-*                     temporary files of writes in progress (or of killed writers)

Guarantees:
- Every write is atomic (`engine.atomic`): a killed process leaves the old file or the new one.
- A new name is claimed with a hard link, so two writers racing for one name can't clobber each other;
  overwriting needs `overwrite=True`.
- Listing reads headers only, never tensors, and a small index keyed by (relative path, mtime, size,
  inode, ctime) makes a warm listing of thousands of vectors cost one `stat` per file.
- A corrupt, truncated or foreign file is reported as a `BadFile` and skipped; the library never
  deletes, renames or overwrites it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

from engine.atomic import TEMP_PREFIX, atomic_write_bytes, atomic_write_text
from engine.errors import AlreadyExistsError, IncompatibleVectorError, LibraryError, VectorFileError
from engine.fingerprint import ModelFingerprint
from engine.vector import (
    SteeringVector,
    load_vector,
    now_iso,
    read_header,
    vector_to_bytes,
)
from engine.vector import combine as combine_vectors

SUFFIX = ".safetensors"
INDEX_NAME = ".index.json"
INDEX_VERSION = 3
TRASH_DIR = ".trash"
LOCK_NAME = ".lock"
ORIGIN_NAME = "origin.json"
MAX_NAME_LENGTH = 200
# Control characters, path separators and the characters Windows refuses in file names. ':' is also the
# coefficient separator of `generate --steer NAME:COEFF`.
_BAD_NAME = re.compile(r'[\x00-\x1f\x7f/\\<>:"|?*\ud800-\udfff]')  # surrogates: bytes that aren't UTF-8
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TRASH_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6,32}$")
# Files that operating systems drop into folders; not worth reporting as bad vectors.
_OS_JUNK = {"thumbs.db", "desktop.ini", "icon\r"}


def default_library_dir() -> Path:
    """`ACTADD_LIBRARY`, else the per-user app data folder Qt's AppDataLocation would give."""
    if env := os.environ.get("ACTADD_LIBRARY"):
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "ActAdd Studio" / "ActAdd Studio" / "vectors"


def check_name(name: str) -> str:
    """Refuse names that could escape the library folder, hide a file, or confuse a terminal or Windows."""
    if (
        not isinstance(name, str)
        or not name
        or not name.strip()
        or name != name.strip()
        or name in (".", "..")
        or ".." in name.split("/")
        or name.startswith(".")
        or name.endswith(".")
        or _BAD_NAME.search(name)
    ):
        raise LibraryError(
            f"invalid vector or collection name {name!r}: no path separators, '..', leading dots, "
            'surrounding spaces, control characters or any of <>:"|?*'
        )
    if len(name) > MAX_NAME_LENGTH:
        raise LibraryError(f"names are limited to {MAX_NAME_LENGTH} characters")
    return name


def split_key(key: str) -> tuple[str, str]:
    """`"collection/name"` -> ("collection", "name"); `"name"` -> ("", "name"). Both parts are checked."""
    if not isinstance(key, str) or key.count("/") > 1:
        raise LibraryError(f"invalid vector key {key!r}: expected NAME or COLLECTION/NAME")
    collection, _, name = key.rpartition("/")
    if collection:
        check_name(collection)
    return collection, check_name(name)


def make_key(collection: str, name: str) -> str:
    return f"{collection}/{name}" if collection else name


# ---- entries ---------------------------------------------------------------------------------------------
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

    def to_dict(self) -> dict:
        """A JSON-friendly description (used by `--json` and the GUI)."""
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
            "fingerprint": _fingerprint_dict(self.fingerprint),
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


@dataclass(frozen=True)
class BadFile:
    path: Path
    reason: str

    def to_dict(self) -> dict:
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


class Compatibility(str, Enum):
    OK = "ok"
    OTHER_MODEL = "other-model"  # same width, another fingerprint: usable only with an explicit override
    INCOMPATIBLE = "incompatible"  # other width or layers past the model's depth: never usable


def _fingerprint_dict(fp: ModelFingerprint | None) -> dict | None:
    if fp is None:
        return None
    return {
        "id": fp.id,
        "architecture": fp.architecture,
        "hidden_size": fp.hidden_size,
        "n_layers": fp.n_layers,
        "vocab_hash": fp.vocab_hash,
        "model_hint": fp.model_hint,
    }


def compatibility_of(
    hidden_size: int, layers: Sequence[int], recorded: ModelFingerprint | None, model: ModelFingerprint
) -> tuple[Compatibility, str]:
    """The rules of `Library.compatibility` for a vector described by its width, layers and fingerprint."""
    if hidden_size != model.hidden_size:
        return Compatibility.INCOMPATIBLE, f"hidden size {hidden_size}, the model has {model.hidden_size}"
    if bad := [l for l in layers if l >= model.n_layers]:
        return Compatibility.INCOMPATIBLE, f"uses layer {bad[0]}, the model has {model.n_layers} layers"
    if recorded is None:
        return Compatibility.OK, "no model recorded (imported); hidden size and layers fit"
    if recorded.same_model(model):
        return Compatibility.OK, "captured on this model"
    other = recorded.model_hint or recorded.id
    return (
        Compatibility.OTHER_MODEL,
        f"captured on another model ({other}); same hidden size, usable only with an explicit override",
    )


def _entry_fields_from_header(path: Path) -> dict:
    """Read and validate a header into the JSON-able fields of a VectorEntry (raises VectorFileError)."""
    header = read_header(path)
    fields = header.fields()
    shape = next(iter(header.shapes.values()))
    fingerprint = header.fingerprint  # validates it
    fp_dict = dataclasses.asdict(fingerprint) if fingerprint is not None else None
    return {
        "method": fields["method"],
        "layers": header.layer_ids,
        "shape": list(shape),
        "hidden_size": int(shape[-1]),
        "fingerprint": fp_dict,
        "tags": list(fields["tags"]),
        "notes": fields["notes"],
        "created": fields["created"],
        "default_coeff": fields["default_coeff"],
        "default_mode": fields["default_mode"],
        "prompts": fields["prompts"],
    }


def _fingerprint_key(data: dict) -> str:
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


class _FingerprintCache:
    """Many vectors share a model: build each ModelFingerprint once per listing.

    In the index, fingerprints live in one table and entries refer to them by key (the fingerprint's
    canonical JSON's hash), which keeps the index small and fast to parse.
    """

    def __init__(self, table: dict | None = None) -> None:
        self.table: dict[str, dict] = {}  # key -> fingerprint dict, as stored in the index
        self._objects: dict[str, ModelFingerprint] = {}
        self._keys: dict[tuple, str] = {}
        self.merge(table or {})

    def merge(self, table: dict) -> None:
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

    def get(self, ref: str | dict | None) -> ModelFingerprint | None:
        if ref is None:
            return None
        if isinstance(ref, dict):
            ref = self.intern(ref)
        fp = self._objects.get(ref)
        if fp is None:
            fp = self._objects[ref] = ModelFingerprint.from_dict(self.table[ref])
        return fp


def _make_entry(fields: dict, *, name: str, collection: str, path: Path, size: int, fps, **extra):
    return VectorEntry(
        name=name,
        collection=collection,
        path=path,
        method=fields["method"],
        layers=list(fields["layers"]),
        shape=list(fields["shape"]),
        hidden_size=int(fields["hidden_size"]),
        fingerprint=fps.get(fields["fingerprint"]),
        tags=tuple(fields["tags"]),
        notes=fields["notes"],
        created=fields["created"],
        default_coeff=float(fields["default_coeff"]),
        default_mode=fields["default_mode"],
        prompts=fields["prompts"],
        size=size,
        **extra,
    )


# The index stores each entry as a list in this order (no repeated key names: a third faster to parse).
_ENTRY_FIELDS = (
    "method",
    "layers",
    "shape",
    "hidden_size",
    "fingerprint",
    "tags",
    "notes",
    "created",
    "default_coeff",
    "default_mode",
    "prompts",
)
_FP_FIELD = _ENTRY_FIELDS.index("fingerprint")


def _entry_from_values(
    values: list, name: str, collection: str, path: Path, size: int, fps: _FingerprintCache
) -> VectorEntry:
    method, layers, shape, hidden, fp, tags, notes, created, coeff, mode, prompts = values
    if not (isinstance(layers, list) and isinstance(shape, list) and isinstance(prompts, dict)):
        raise TypeError("malformed index entry")
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
    )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Listing allocates ~20 objects per vector and no reference cycles; with the garbage collector on,
    its generational passes over a big process (torch, a model) cost more than the listing itself."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _stat_key(st: os.stat_result) -> list[int]:
    # Every library write creates a new inode (temp file + rename), so inode and ctime catch a rewrite even
    # within one mtime tick and at an unchanged size.
    return [st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns]


def _matches_text(entry: VectorEntry, needle: str) -> bool:
    haystack = " ".join(
        [
            entry.key,
            entry.method,
            entry.notes,
            entry.model_hint,
            " ".join(entry.tags),
            json.dumps(entry.prompts, ensure_ascii=False),
        ]
    )
    return needle.casefold() in haystack.casefold()


# ---- the library ---------------------------------------------------------------------------------------
class Library:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_library_dir()
        # Memory of the last listing (relative path -> (stat key, index record, entry)): a repeated listing
        # by the same object costs one stat per file. Entries are shared between listings: read-only.
        self._memo: dict[str, tuple[list[int], list, VectorEntry | None]] = {}
        self._fps = _FingerprintCache()
        self._index_stat: list[int] | None = None  # the index file as last read or written by us

    def __repr__(self) -> str:
        return f"Library({str(self.root)!r})"

    # ---- paths and names --------------------------------------------------------------------------------
    def path_of(self, name: str, collection: str = "") -> Path:
        folder = self.root / check_name(collection) if collection else self.root
        return folder / f"{check_name(name)}{SUFFIX}"

    def _target(self, new_name: str, default_collection: str) -> tuple[str, str]:
        """Where a new vector goes: a bare name stays in `default_collection`, `coll/name` goes to `coll`,
        and `/name` goes to the top level."""
        if isinstance(new_name, str) and new_name.startswith("/"):
            return "", check_name(new_name[1:])
        if isinstance(new_name, str) and "/" in new_name:
            return split_key(new_name)
        return default_collection, check_name(new_name)

    def _inside(self, path: Path) -> tuple[str, str]:
        """(collection, name) of a file in this library; refuses files elsewhere or in hidden folders."""
        try:
            rel = path.resolve().relative_to(self.root.resolve())
        except ValueError as exc:
            raise LibraryError(f"{path} is not in the library at {self.root}") from exc
        parts = rel.parts
        if len(parts) not in (1, 2) or any(p.startswith(".") for p in parts) or rel.suffix != SUFFIX:
            raise LibraryError(f"{path} is not a vector of the library at {self.root}")
        return (parts[0] if len(parts) == 2 else ""), rel.stem

    def key_of(self, path: Path) -> str:
        """The library key of a file in this library."""
        return make_key(*self._inside(Path(path)))

    def resolve(self, key_or_file: str) -> Path:
        """A vector by library key (`name` or `collection/name`) or by `.safetensors` file path.

        A bare name that is not at the top level is looked up in the collections; it must be unique there.
        """
        text = str(key_or_file)
        as_path = Path(text).expanduser()
        if as_path.suffix == SUFFIX and as_path.is_file():
            return as_path
        collection, name = split_key(text)
        path = self.path_of(name, collection)
        if path.is_file():
            return path
        if not collection:
            found = [p for p in self._collection_dirs() if (p / f"{name}{SUFFIX}").is_file()]
            if len(found) == 1:
                return found[0] / f"{name}{SUFFIX}"
            if len(found) > 1:
                keys = ", ".join(make_key(p.name, name) for p in found)
                raise LibraryError(f"{name!r} is ambiguous; say which one: {keys}")
        raise LibraryError(f"no vector named {text!r} in the library at {self.root}")

    def _resolve_own(self, key: str) -> tuple[Path, str, str]:
        path = self.resolve(key)
        collection, name = self._inside(path)
        return path, collection, name

    def _collection_dirs(self) -> list[Path]:
        try:
            return sorted(
                Path(e.path)
                for e in os.scandir(self.root)
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
            )
        except OSError:
            return []

    def collections(self) -> list[str]:
        return [p.name for p in self._collection_dirs()]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive advisory lock on `<root>/.lock` around read-modify-write operations.

        Released by the OS if the process dies. On platforms without fcntl/msvcrt it is a no-op; the
        atomic writes still hold.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / LOCK_NAME, "a+b")  # noqa: SIM115 - held for the whole block
        try:
            try:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            except ImportError:  # Windows
                try:
                    import msvcrt

                    handle.seek(0)
                    while True:
                        try:
                            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                            break
                        except OSError:
                            continue
                except ImportError:
                    pass
            yield
        finally:
            handle.close()  # closing releases flock and msvcrt locks

    # ---- listing ----------------------------------------------------------------------------------------
    def _scan(self) -> tuple[list[tuple[str, str, str, Path, os.stat_result]], list[BadFile]]:
        """(relative path, collection, name, path, stat) of every visible file, plus odd things found."""
        files: list[tuple[str, str, str, Path, os.stat_result]] = []
        bad: list[BadFile] = []
        # Path(folder, name) without re-parsing the folder (a third of a warm listing otherwise)
        child = getattr(Path, "_make_child_relpath", None) or Path.joinpath

        def visit(folder: Path, collection: str) -> None:
            try:
                it = os.scandir(folder)
            except FileNotFoundError:
                return
            except OSError as exc:
                bad.append(BadFile(folder, f"cannot read folder ({exc.strerror or exc})"))
                return
            with it:
                for entry in it:
                    if entry.name.startswith(".") or entry.name.casefold() in _OS_JUNK:
                        continue  # hidden: .trash, .index.json, .lock, .tmp-* and OS files
                    path = child(folder, entry.name)
                    try:
                        is_dir = entry.is_dir()
                        if is_dir:
                            if collection:
                                bad.append(
                                    BadFile(path, "nested folders are not collections; move its vectors up")
                                )
                            else:
                                visit(path, entry.name)
                            continue
                        st = entry.stat()
                    except FileNotFoundError:
                        continue  # removed while we looked (a concurrent rename or delete)
                    except OSError as exc:
                        bad.append(BadFile(path, f"cannot read ({exc.strerror or exc})"))
                        continue
                    rel = f"{collection}/{entry.name}" if collection else entry.name
                    stem = entry.name[: -len(SUFFIX)] if entry.name.endswith(SUFFIX) else entry.name
                    files.append((rel, collection, stem, path, st))

        visit(self.root, "")
        return files, bad

    def _read_index(self) -> tuple[dict, dict]:
        """(files, fingerprint table) of the index; empty when missing, corrupt or of another version."""
        try:
            data = json.loads((self.root / INDEX_NAME).read_bytes())
        except (OSError, ValueError, RecursionError):
            return {}, {}
        if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
            return {}, {}
        files, fingerprints = data.get("files"), data.get("fingerprints")
        return (files if isinstance(files, dict) else {}), (
            fingerprints if isinstance(fingerprints, dict) else {}
        )

    def _stat_index(self) -> list[int] | None:
        try:
            return _stat_key(os.stat(self.root / INDEX_NAME))
        except OSError:
            return None

    def _write_index(self, files: dict, fingerprints: dict) -> None:
        """Replace the index atomically (temp file + rename).

        It is a cache, so it is not fsync'd: after a crash it may be old or missing, and is then rebuilt.
        Concurrent writers each write a whole, valid file; the last one wins and the loser's fresh entries
        are simply re-read next time. A read-only library just lists without caching.
        """
        used = {r[1][_FP_FIELD] for r in files.values() if isinstance(r[1], list)} - {None}
        payload = json.dumps(
            {"version": INDEX_VERSION, "fingerprints": {k: fingerprints[k] for k in used}, "files": files},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8", "backslashreplace")  # a file name that isn't UTF-8 becomes a JSON \udcXX escape
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".json", dir=self.root)
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            os.replace(tmp, self.root / INDEX_NAME)
            tmp = None
            self._index_stat = self._stat_index()
        except OSError:
            pass
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _all(self) -> Listing:
        """Scan the folder and describe every file, from (fastest first) this object's memory of the last
        listing, the on-disk index, or the file's header; all three are keyed by the file's stat."""
        with _gc_paused():
            return self._all_unpaused()

    def _all_unpaused(self) -> Listing:
        files, bad = self._scan()
        memo = self._memo
        fps = self._fps
        index: dict | None = None  # the on-disk index, read when memory doesn't answer or it changed
        if self._index_stat is None or self._index_stat != self._stat_index():
            index, table = self._read_index()
            fps.merge(table)
        new_memo: dict[str, tuple[list[int], list, VectorEntry | None]] = {}
        dirty = False
        entries: list[VectorEntry] = []
        for rel, collection, stem, path, st in files:
            stat_key = _stat_key(st)
            cached = memo.get(rel)
            if cached is not None and cached[0] == stat_key:
                _, record, entry = cached
            else:
                if index is None:
                    index, table = self._read_index()
                    fps.merge(table)
                record, entry = index.get(rel), None
                if not (isinstance(record, list) and len(record) == 2 and record[0] == stat_key):
                    record = None
                if record is not None and isinstance(record[1], list):
                    try:
                        entry = _entry_from_values(record[1], stem, collection, path, st.st_size, fps)
                    except (KeyError, TypeError, ValueError, AttributeError):  # a malformed index record
                        record = None
                elif record is not None and not isinstance(record[1], str):
                    record = None
                if record is None:
                    dirty = True
                    record = self._read_record(rel, collection, stem, path, stat_key, fps)
                    if record is None:
                        continue
                    if isinstance(record[1], list):
                        entry = _entry_from_values(record[1], stem, collection, path, st.st_size, fps)
            if index is not None and not dirty:
                on_disk = index.get(rel)
                dirty = not (isinstance(on_disk, list) and on_disk and on_disk[0] == stat_key)
            if entry is None:
                bad.append(BadFile(path, str(record[1])))
            else:
                entries.append(entry)
            new_memo[rel] = (stat_key, record, entry)
        known = index if index is not None else memo
        if dirty or set(known) != set(new_memo):
            self._write_index({rel: record for rel, (_, record, _) in new_memo.items()}, fps.table)
        self._memo = new_memo
        if index is not None and not dirty:
            self._index_stat = self._stat_index()
        entries.sort(key=lambda e: (e.collection.casefold(), e.name.casefold()))
        bad.sort(key=lambda b: str(b.path))
        return Listing(entries=entries, bad_files=bad)

    @staticmethod
    def _read_record(
        rel: str, collection: str, stem: str, path: Path, stat_key: list[int], fps: _FingerprintCache
    ) -> dict | None:
        """The index record of one file, from its header: [stat key, entry values] or [stat key, reason].

        None when the file vanished or can't be read right now (not cached, reported by the caller).
        """
        if not rel.endswith(SUFFIX):
            return [stat_key, f"not a vector file (expected {SUFFIX})"]
        try:
            check_name(stem)
            if collection:
                check_name(collection)
        except LibraryError:
            return [stat_key, "the file name is not a valid vector name; rename the file"]
        try:
            fields = _entry_fields_from_header(path)
        except VectorFileError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):  # renamed or deleted while we listed
                return None
            return [stat_key, str(exc)]
        except FileNotFoundError:
            return None
        except OSError as exc:
            return [[0, 0, 0, 0], f"cannot read ({exc.strerror or exc})"]
        except Exception as exc:  # e.g. RecursionError on absurdly nested header JSON
            # One file we can't make sense of is reported, never fatal to the listing.
            return [stat_key, f"{rel}: not a readable vector ({type(exc).__name__})"]
        fields["fingerprint"] = fps.intern(fields["fingerprint"])
        return [stat_key, [fields[k] for k in _ENTRY_FIELDS]]

    def list(
        self,
        *,
        model: ModelFingerprint | None = None,
        tag: str | None = None,
        method: str | None = None,
        text: str | None = None,
        collection: str | None = None,
    ) -> Listing:
        """Every vector (headers only), filtered.

        - `model`: vectors usable on that model (`compatibility` is OK or OTHER_MODEL).
        - `tag`: vectors carrying that tag (case-insensitive).
        - `method`: "actadd", "mean-diff", "pca", "combined" or "imported".
        - `text`: case-insensitive search over key, notes, tags, prompts, method and model name.
        - `collection`: one collection; "" is the top level.
        Bad files are always reported, whatever the filters.
        """
        listing = self._all()
        entries = listing.entries
        if collection is not None:
            entries = [e for e in entries if e.collection == collection]
        if method is not None:
            entries = [e for e in entries if e.method == method]
        if tag is not None:
            folded = tag.casefold()
            entries = [e for e in entries if any(t.casefold() == folded for t in e.tags)]
        if text:
            entries = [e for e in entries if _matches_text(e, text)]
        if model is not None:
            entries = [e for e in entries if self.compatibility(e, model)[0] != Compatibility.INCOMPATIBLE]
        return Listing(entries=entries, bad_files=listing.bad_files)

    def entry(self, key: str) -> VectorEntry:
        """The listing entry of one vector (reads its header)."""
        path, collection, name = self._resolve_own(key)
        try:
            fields = _entry_fields_from_header(path)
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise LibraryError(f"{key!r} disappeared") from exc
        return _make_entry(
            fields, name=name, collection=collection, path=path, size=size, fps=_FingerprintCache()
        )

    # ---- compatibility ------------------------------------------------------------------------------
    def compatibility(self, entry: VectorEntry, fingerprint: ModelFingerprint) -> tuple[Compatibility, str]:
        """Whether a vector can be used on a model, and why (the same rules as `engine.vector.check_fits`)."""
        return compatibility_of(entry.hidden_size, entry.layers, entry.fingerprint, fingerprint)

    def compatible(self, fingerprint: ModelFingerprint) -> list[tuple[VectorEntry, Compatibility, str]]:
        """The vectors usable on a model: OK ones first, then OTHER_MODEL ones (which need an override)."""
        found = [(e, *self.compatibility(e, fingerprint)) for e in self._all().entries]
        usable = [t for t in found if t[1] != Compatibility.INCOMPATIBLE]
        usable.sort(key=lambda t: t[1] != Compatibility.OK)
        return usable

    # ---- reading --------------------------------------------------------------------------------------
    def load(self, key_or_file: str) -> SteeringVector:
        return load_vector(self.resolve(key_or_file))

    def show(self, key: str, *, model: ModelFingerprint | None = None) -> dict:
        """Everything about one vector: metadata, prompts, provenance, norms per layer, compatible models."""
        path = self.resolve(key)
        vector = load_vector(path)
        try:
            collection, name = self._inside(path)
        except LibraryError:
            collection, name = "", path.stem
        fp = vector.fingerprint
        layers = vector.layer_ids
        if fp is not None:
            compatible = {
                "same_model": {
                    **(_fingerprint_dict(fp) or {}),
                    "note": "vectors steer best on the model they were captured on",
                },
                "other_models": (
                    f"any model with hidden size {vector.hidden_size} and more than {max(layers)} layers, "
                    "with an explicit override"
                ),
            }
        else:
            compatible = {
                "same_model": None,
                "other_models": (
                    f"no model recorded; any model with hidden size {vector.hidden_size} "
                    f"and more than {max(layers)} layers"
                ),
            }
        info = {
            "key": make_key(collection, name),
            "name": name,
            "collection": collection,
            "path": str(path),
            "size": path.stat().st_size,
            "method": vector.method,
            "layers": layers,
            "shape": vector.shape,
            "hidden_size": vector.hidden_size,
            "positional": vector.is_positional,
            "n_tokens": vector.n_tokens,
            "norms": {str(l): n for l, n in vector.norms().items()},
            "default_coeff": vector.default_coeff,
            "default_mode": vector.default_mode,
            "prompts": vector.prompts,
            "provenance": vector.provenance,
            "tags": list(vector.tags),
            "notes": vector.notes,
            "created": vector.created,
            "model": fp.model_hint if fp else "",
            "fingerprint": _fingerprint_dict(fp),
            "compatible_models": compatible,
        }
        if model is not None:
            status, reason = compatibility_of(vector.hidden_size, layers, fp, model)
            info["compatibility"] = {"model": model.model_hint, "status": status.value, "reason": reason}
        return info

    # ---- writing ---------------------------------------------------------------------------------------
    def _write(self, vector: SteeringVector, collection: str, name: str, *, overwrite: bool) -> Path:
        path = self.path_of(name, collection)
        provenance = dict(vector.provenance)
        if "library_version" not in provenance:
            from engine import __version__

            provenance["library_version"] = __version__
        try:
            atomic_write_bytes(
                path, vector_to_bytes(vector.replace(name=name, provenance=provenance)), overwrite=overwrite
            )
        except FileExistsError as exc:
            raise AlreadyExistsError(
                f"a vector named {make_key(collection, name)!r} already exists; "
                "choose another name or overwrite it"
            ) from exc
        return path

    def save(
        self, vector: SteeringVector, name: str, *, collection: str = "", overwrite: bool = False
    ) -> Path:
        """Save atomically as `collection/name`; an existing vector is only replaced with `overwrite`."""
        check_name(name)
        if collection:
            check_name(collection)
        if not overwrite:
            return self._write(vector, collection, name, overwrite=False)
        with self._locked():
            return self._write(vector, collection, name, overwrite=True)

    def rename(
        self, key: str, new_name: str, *, overwrite: bool = False, collection: str | None = None
    ) -> Path:
        """Rename (or move, with `coll/name` or `collection=`) a vector; returns its new path.

        The vector is rewritten under the new name first and the old file removed after, so a crash in
        between leaves both copies, never neither.
        """
        with self._locked():
            path, old_collection, old_name = self._resolve_own(key)
            target_collection, target_name = self._target(
                new_name, old_collection if collection is None else collection
            )
            if (target_collection, target_name) == (old_collection, old_name):
                return path
            vector = load_vector(path)
            new_path = self._write(vector, target_collection, target_name, overwrite=overwrite)
            if new_path.resolve() != path.resolve():
                path.unlink()
            return new_path

    def _rewrite(self, key: str, **changes) -> Path:
        with self._locked():
            path, collection, name = self._resolve_own(key)
            vector = load_vector(path).replace(**changes)
            return self._write(vector, collection, name, overwrite=True)

    def set_tags(self, key: str, tags: Sequence[str]) -> None:
        if isinstance(tags, str):
            raise LibraryError("tags must be a list of strings, not one string")
        clean: list[str] = []
        for tag in tags:
            tag = str(tag).strip()
            if not tag or _CONTROL.search(tag) or len(tag) > 100:
                raise LibraryError(
                    f"invalid tag {tag!r}: non-empty, no control characters, 100 chars at most"
                )
            if tag not in clean:
                clean.append(tag)
        self._rewrite(key, tags=tuple(clean))

    def set_notes(self, key: str, notes: str) -> None:
        if not isinstance(notes, str):
            raise LibraryError("notes must be text")
        if len(notes.encode("utf-8", "surrogatepass")) > 256 * 1024:
            raise LibraryError("notes are limited to 256 KiB")
        self._rewrite(key, notes=notes)

    def duplicate(self, key: str, new_name: str) -> Path:
        """A copy under a new name (a bare name stays in the same collection)."""
        path, collection, _ = self._resolve_own(key)
        target_collection, target_name = self._target(new_name, collection)
        vector = load_vector(path)
        return self._write(vector, target_collection, target_name, overwrite=False)

    def combine(
        self, terms: Sequence[tuple[float, str]], new_name: str, *, allow_other_model: bool = False
    ) -> Path:
        """Save `a·v1 + b·v2 + ...` as a new vector; refused when shapes, layers or models differ.

        A bare `new_name` goes into the first vector's collection.
        """
        if not terms:
            raise LibraryError("nothing to combine")
        loaded: list[tuple[float, SteeringVector]] = []
        first_collection = ""
        for i, (coeff, key) in enumerate(terms):
            try:
                coeff = float(coeff)
            except (TypeError, ValueError) as exc:
                raise LibraryError(f"coefficient {coeff!r} is not a number") from exc
            if not math.isfinite(coeff):
                raise LibraryError(f"coefficient {coeff!r} for {key!r} is not a finite number")
            path = self.resolve(key)
            if i == 0:
                with contextlib.suppress(LibraryError):
                    first_collection = self._inside(path)[0]
            with contextlib.suppress(LibraryError):
                key = make_key(*self._inside(path))
            loaded.append((coeff, load_vector(path).replace(name=key)))
        target_collection, target_name = self._target(new_name, first_collection)
        combined = combine_vectors(loaded, allow_other_model=allow_other_model)
        return self._write(combined, target_collection, target_name, overwrite=False)

    def to_direction(self, key: str, new_name: str, *, position: int | None = None) -> Path:
        """Save a `[hidden]` direction made from a position-wise ActAdd vector (mean, or one position)."""
        path, collection, name = self._resolve_own(key)
        vector = load_vector(path)
        if not vector.is_positional:
            raise IncompatibleVectorError(f"{make_key(collection, name)!r} is already a [hidden] direction")
        direction = vector.to_direction(position)
        direction = direction.replace(
            provenance={**direction.provenance, "direction_from": make_key(collection, name)},
            created=now_iso(),
        )
        target_collection, target_name = self._target(new_name, collection)
        return self._write(direction, target_collection, target_name, overwrite=False)

    # ---- trash ---------------------------------------------------------------------------------------
    @property
    def trash_dir(self) -> Path:
        return self.root / TRASH_DIR

    def delete(self, key: str) -> str:
        """Move a vector into `<root>/.trash/<trash id>/`; returns the trash id for `restore`."""
        with self._locked():
            path, collection, name = self._resolve_own(key)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            trash_id = f"{stamp}-{secrets.token_hex(4)}"
            folder = self.trash_dir / trash_id
            folder.mkdir(parents=True)
            origin = {
                "key": make_key(collection, name),
                "collection": collection,
                "name": name,
                "file": path.name,
                "deleted": now_iso(),
            }
            try:
                atomic_write_text(folder / ORIGIN_NAME, json.dumps(origin, ensure_ascii=False))
                os.rename(path, folder / path.name)  # same file system: atomic
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            return trash_id

    def _trash_item(self, folder: Path) -> tuple[Path, dict] | None:
        origin: dict = {}
        with contextlib.suppress(OSError, ValueError, RecursionError):
            data = json.loads((folder / ORIGIN_NAME).read_text("utf-8"))
            if isinstance(data, dict):
                origin = data
        files = sorted(p for p in folder.glob(f"*{SUFFIX}") if not p.name.startswith("."))
        if not files:
            return None  # a delete killed before its rename: nothing was moved
        return files[0], origin

    def trash(self) -> list[VectorEntry]:
        """Deleted vectors, newest first; `entry.key` is the trash id to pass to `restore`."""
        try:
            folders = [Path(e.path) for e in os.scandir(self.trash_dir) if e.is_dir(follow_symlinks=False)]
        except OSError:
            return []
        fps = _FingerprintCache()
        found = []
        for folder in folders:
            item = self._trash_item(folder)
            if item is None:
                continue
            path, origin = item
            try:
                fields = _entry_fields_from_header(path)
                size = path.stat().st_size
            except Exception:  # a broken file in the trash is not listed (and stays where it is)
                continue
            collection = origin.get("collection") if isinstance(origin.get("collection"), str) else ""
            found.append(
                _make_entry(
                    fields,
                    name=str(origin.get("name") or path.stem),
                    collection=collection,
                    path=path,
                    size=size,
                    fps=fps,
                    trash_id=folder.name,
                    deleted=str(origin.get("deleted", "")),
                )
            )
        found.sort(key=lambda e: (e.deleted, e.trash_id), reverse=True)
        return found

    def _trash_folder(self, trash_id: str) -> Path:
        if not isinstance(trash_id, str) or not _TRASH_ID.match(trash_id):
            raise LibraryError(f"{trash_id!r} is not a trash id (see `library trash`)")
        folder = self.trash_dir / trash_id
        if not folder.is_dir():
            raise LibraryError(f"nothing in the trash with id {trash_id!r}")
        return folder

    def restore(self, trash_id: str, *, new_name: str | None = None) -> Path:
        """Put a deleted vector back (under `new_name` if its old name is taken meanwhile)."""
        with self._locked():
            folder = self._trash_folder(trash_id)
            item = self._trash_item(folder)
            if item is None:
                raise LibraryError(f"trash item {trash_id!r} holds no vector")
            path, origin = item
            try:
                collection, name = split_key(str(origin.get("key") or path.stem))
            except LibraryError:
                collection, name = "", path.stem
            same_name = name
            if new_name is not None:
                collection, name = self._target(new_name, collection)
            vector = load_vector(path)  # only a valid vector goes back
            try:
                if name == same_name:  # byte for byte, as it was deleted
                    restored = self.path_of(name, collection)
                    try:
                        atomic_write_bytes(restored, path.read_bytes(), overwrite=False)
                    except FileExistsError as exc:
                        raise LibraryError(f"{make_key(collection, name)!r} exists") from exc
                else:
                    restored = self._write(vector, collection, name, overwrite=False)
            except LibraryError as exc:
                raise LibraryError(
                    f"cannot restore: a vector named {make_key(collection, name)!r} exists; "
                    "restore it under a new name"
                ) from exc
            shutil.rmtree(folder, ignore_errors=True)
            return restored

    def empty_trash(self, trash_id: str | None = None) -> int:
        """Permanently delete one trash item or all of them; returns how many were removed."""
        with self._locked():
            if trash_id is not None:
                shutil.rmtree(self._trash_folder(trash_id))
                return 1
            count = 0
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(self.trash_dir):
                    if entry.is_dir(follow_symlinks=False) and _TRASH_ID.match(entry.name):
                        shutil.rmtree(entry.path, ignore_errors=True)
                        count += 1
            return count

    def sweep_temp_files(self, older_than_s: float = 24 * 3600) -> int:
        """Remove `.tmp-*` leftovers of killed writers older than `older_than_s` (never a live write)."""
        import time

        removed = 0
        cutoff = time.time() - older_than_s
        for folder in [self.root, *self._collection_dirs()]:
            for tmp in folder.glob(f"{TEMP_PREFIX}*"):
                with contextlib.suppress(OSError):
                    if tmp.is_file() and tmp.stat().st_mtime < cutoff:
                        tmp.unlink()
                        removed += 1
        return removed
