"""The listing: one scan of the folder, and an index cache so a warm listing costs one `stat` per file.

`<root>/.index.json` maps each file's relative path to an `IndexRecord`: the file's stat key and either
the entry's values (`entries.ENTRY_FIELDS`) or the reason it is a bad file. A record is trusted only
while the file's (mtime, size, inode, ctime) match. The index is a cache: missing, corrupt or of another
version, it is rebuilt from the headers; concurrent writers each write a whole file and the last wins.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.atomic import TEMP_PREFIX
from engine.errors import LibraryError, VectorFileError
from engine.library.entries import (
    FINGERPRINT_FIELD,
    BadFile,
    FingerprintCache,
    Listing,
    VectorEntry,
    build_entry,
    header_values,
)
from engine.library.names import SUFFIX, check_name

INDEX_NAME = ".index.json"
INDEX_VERSION = 3
# Files that operating systems drop into folders; not worth reporting as bad vectors.
_OS_JUNK = {"thumbs.db", "desktop.ini", "icon\r"}
_UNREADABLE = [0, 0, 0, 0]  # the stat key of a record that must never match (re-read next time)


def stat_key(st: os.stat_result) -> list[int]:
    # Every library write creates a new inode (temp file + rename), so inode and ctime catch a rewrite even
    # within one mtime tick and at an unchanged size.
    return [st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns]


@dataclass
class IndexRecord:
    """What the index knows about one file: its stat key, and its entry's values or why it is bad."""

    stat: list[int]
    values: list[Any] | None = None  # entries.ENTRY_FIELDS, in order; None for a bad file
    reason: str = ""  # why the file is not a usable vector (when `values` is None)

    def to_json(self) -> list[Any]:
        # On disk a record is `[stat, values]` or `[stat, reason]`: compact, and the format of version 3.
        return [self.stat, self.values if self.values is not None else self.reason]

    @classmethod
    def from_json(cls, raw: object) -> IndexRecord | None:
        """A record read back from the index; None for anything malformed (the header is re-read)."""
        if not (isinstance(raw, list) and len(raw) == 2 and isinstance(raw[0], list)):
            return None
        stat, payload = raw
        if isinstance(payload, list):
            return cls(stat, values=payload)
        if isinstance(payload, str):
            return cls(stat, reason=payload)
        return None


@dataclass(frozen=True)
class ScannedFile:
    rel: str  # path relative to the root, "/"-separated: the index key
    collection: str
    stem: str
    path: Path
    stat: os.stat_result


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Listing allocates ~20 objects per vector and no reference cycles; with the garbage collector on,
    its generational passes over a big process (torch, a model) cost more than the listing itself."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def scan(root: Path) -> tuple[list[ScannedFile], list[BadFile]]:
    """Every visible file at the top level and in collections, plus odd things found."""
    files: list[ScannedFile] = []
    bad: list[BadFile] = []

    def visit(folder: str, collection: str) -> None:
        try:
            it = os.scandir(folder)
        except FileNotFoundError:
            return
        except OSError as exc:
            bad.append(BadFile(Path(folder), f"cannot read folder ({exc.strerror or exc})"))
            return
        with it:
            for entry in it:
                if entry.name.startswith(".") or entry.name.casefold() in _OS_JUNK:
                    continue  # hidden: .trash, .index.json, .lock, .tmp-* and OS files
                try:
                    if entry.is_dir():
                        if collection:
                            bad.append(
                                BadFile(
                                    Path(entry.path),
                                    "nested folders are not collections; move its vectors up",
                                )
                            )
                        else:
                            visit(entry.path, entry.name)
                        continue
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # removed while we looked (a concurrent rename or delete)
                except OSError as exc:
                    bad.append(BadFile(Path(entry.path), f"cannot read ({exc.strerror or exc})"))
                    continue
                rel = f"{collection}/{entry.name}" if collection else entry.name
                stem = entry.name[: -len(SUFFIX)] if entry.name.endswith(SUFFIX) else entry.name
                # entry.path is already joined: Path(str) is cheaper than Path / name in a warm listing
                files.append(ScannedFile(rel, collection, stem, Path(entry.path), st))

    visit(str(root), "")
    return files, bad


def read_index(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(raw records by relative path, fingerprint table); empty when missing, corrupt or of another version."""
    try:
        data = json.loads((root / INDEX_NAME).read_bytes())
    except (OSError, ValueError, RecursionError):
        return {}, {}
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
        return {}, {}
    files, fingerprints = data.get("files"), data.get("fingerprints")
    return (files if isinstance(files, dict) else {}), (
        fingerprints if isinstance(fingerprints, dict) else {}
    )


def stat_index(root: Path) -> list[int] | None:
    try:
        return stat_key(os.stat(root / INDEX_NAME))
    except OSError:
        return None


def write_index(root: Path, records: dict[str, IndexRecord], fingerprints: dict[str, Any]) -> bool:
    """Replace the index atomically (temp file + rename); False if the library is read-only.

    It is a cache, so it is not fsync'd: after a crash it may be old or missing, and is then rebuilt.
    """
    used = {r.values[FINGERPRINT_FIELD] for r in records.values() if r.values is not None} - {None}
    payload = json.dumps(
        {
            "version": INDEX_VERSION,
            "fingerprints": {k: fingerprints[k] for k in used},
            "files": {rel: r.to_json() for rel, r in records.items()},
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8", "backslashreplace")  # a file name that isn't UTF-8 becomes a JSON \udcXX escape
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".json", dir=root)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, root / INDEX_NAME)
        tmp = None
        return True
    except OSError:
        return False
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def read_record(file: ScannedFile, key: list[int], fps: FingerprintCache) -> IndexRecord | None:
    """The record of one file, from its header. None when the file vanished while we listed."""
    if not file.rel.endswith(SUFFIX):
        return IndexRecord(key, reason=f"not a vector file (expected {SUFFIX})")
    try:
        check_name(file.stem)
        if file.collection:
            check_name(file.collection)
    except LibraryError:
        return IndexRecord(key, reason="the file name is not a valid vector name; rename the file")
    try:
        return IndexRecord(key, values=header_values(file.path, fps))
    except VectorFileError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):  # renamed or deleted while we listed
            return None
        return IndexRecord(key, reason=str(exc))
    except FileNotFoundError:
        return None
    except OSError as exc:
        return IndexRecord(list(_UNREADABLE), reason=f"cannot read ({exc.strerror or exc})")
    except Exception as exc:  # e.g. RecursionError on absurdly nested header JSON
        # One file we can't make sense of is reported, never fatal to the listing.
        return IndexRecord(key, reason=f"{file.rel}: not a readable vector ({type(exc).__name__})")


class IndexedListing:
    """The listing half of `Library`: describes every file from (fastest first) this object's memory of
    the last listing, the on-disk index, or the file's header; all three are keyed by the file's stat."""

    root: Path

    def __init__(self) -> None:
        # Memory of the last listing (relative path -> (record, entry)): a repeated listing by the same
        # object costs one stat per file. Entries are shared between listings: read-only.
        self._memo: dict[str, tuple[IndexRecord, VectorEntry | None]] = {}
        self._fps = FingerprintCache()
        self._index_stat: list[int] | None = None  # the index file as last read or written by us

    def _read_index(self) -> dict[str, Any]:
        files, table = read_index(self.root)
        self._fps.merge(table)
        return files

    def _all(self) -> Listing:
        with gc_paused():
            return self._all_unpaused()

    def _entry_of(self, file: ScannedFile, record: IndexRecord) -> VectorEntry | None:
        if record.values is None:
            return None
        return build_entry(
            record.values,
            name=file.stem,
            collection=file.collection,
            path=file.path,
            size=file.stat.st_size,
            fps=self._fps,
        )

    def _all_unpaused(self) -> Listing:
        files, bad = scan(self.root)
        memo = self._memo
        index: dict[str, Any] | None = (
            None  # the on-disk index, read when memory doesn't answer or it changed
        )
        if self._index_stat is None or self._index_stat != stat_index(self.root):
            index = self._read_index()
        new_memo: dict[str, tuple[IndexRecord, VectorEntry | None]] = {}
        dirty = False
        entries: list[VectorEntry] = []
        for file in files:
            key = stat_key(file.stat)
            cached = memo.get(file.rel)
            record: IndexRecord | None
            if cached is not None and cached[0].stat == key:
                record, entry = cached
            else:
                if index is None:
                    index = self._read_index()
                record, entry = IndexRecord.from_json(index.get(file.rel)), None
                if record is not None and record.stat != key:
                    record = None
                if record is not None:
                    try:
                        entry = self._entry_of(file, record)
                    except (KeyError, TypeError, ValueError, AttributeError):  # a malformed index record
                        record = None
                if record is None:
                    dirty = True
                    record = read_record(file, key, self._fps)
                    if record is None:
                        continue
                    entry = self._entry_of(file, record)
            if index is not None and not dirty:
                on_disk = index.get(file.rel)
                dirty = not (isinstance(on_disk, list) and on_disk and on_disk[0] == key)
            if entry is None:
                bad.append(BadFile(file.path, record.reason))
            else:
                entries.append(entry)
            new_memo[file.rel] = (record, entry)
        known = index if index is not None else memo
        if (dirty or set(known) != set(new_memo)) and write_index(
            self.root, {rel: record for rel, (record, _) in new_memo.items()}, self._fps.table
        ):
            self._index_stat = stat_index(self.root)
        self._memo = new_memo
        if index is not None and not dirty:
            self._index_stat = stat_index(self.root)
        entries.sort(key=lambda e: (e.collection.casefold(), e.name.casefold()))
        bad.sort(key=lambda b: str(b.path))
        return Listing(entries=entries, bad_files=bad)
