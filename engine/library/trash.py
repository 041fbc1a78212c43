"""Deleting without losing: the trash (`<root>/.trash/<trash id>/`), its restore, and the library lock.

A deleted vector is moved (one rename, atomic on one file system) into its own trash folder beside an
`origin.json` that says where it came from; it stays there until restored or the trash is emptied.
Read-modify-write operations hold an advisory lock on `<root>/.lock`, released by the OS if the process dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.atomic import TEMP_PREFIX, atomic_write_bytes, atomic_write_text
from engine.errors import LibraryError
from engine.library.entries import FingerprintCache, VectorEntry, build_entry, header_values
from engine.library.names import SUFFIX, make_key, split_key, target
from engine.vector_file import load_vector, now_iso

if TYPE_CHECKING:
    from engine.library import Library

TRASH_DIR = ".trash"
LOCK_NAME = ".lock"
ORIGIN_NAME = "origin.json"
_TRASH_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6,32}$")


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """An exclusive advisory lock on `<root>/.lock` around read-modify-write operations.

    Released by the OS if the process dies. On platforms without fcntl/msvcrt it is a no-op; the
    atomic writes still hold.
    """
    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / LOCK_NAME, "a+b")  # noqa: SIM115 - held for the whole block
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
                        msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
                        break
                    except OSError:
                        continue
            except ImportError:
                pass
        yield
    finally:
        handle.close()  # closing releases flock and msvcrt locks


def delete(library: Library, key: str) -> str:
    """Move a vector into `<root>/.trash/<trash id>/`; returns the trash id for `restore`."""
    with locked(library.root):
        path, collection, name = library._resolve_own(key)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        trash_id = f"{stamp}-{secrets.token_hex(4)}"
        folder = library.trash_dir / trash_id
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


def _trash_item(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    origin: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError, RecursionError):
        data = json.loads((folder / ORIGIN_NAME).read_text("utf-8"))
        if isinstance(data, dict):
            origin = data
    files = sorted(p for p in folder.glob(f"*{SUFFIX}") if not p.name.startswith("."))
    if not files:
        return None  # a delete killed before its rename: nothing was moved
    return files[0], origin


def trash(library: Library) -> list[VectorEntry]:
    """Deleted vectors, newest first; `entry.key` is the trash id to pass to `restore`."""
    try:
        folders = [Path(e.path) for e in os.scandir(library.trash_dir) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    fps = FingerprintCache()
    found = []
    for folder in folders:
        item = _trash_item(folder)
        if item is None:
            continue
        path, origin = item
        collection = origin.get("collection")
        try:
            found.append(
                build_entry(
                    header_values(path, fps),
                    name=str(origin.get("name") or path.stem),
                    collection=collection if isinstance(collection, str) else "",
                    path=path,
                    size=path.stat().st_size,
                    fps=fps,
                    trash_id=folder.name,
                    deleted=str(origin.get("deleted", "")),
                )
            )
        except Exception:  # a broken file in the trash is not listed (and stays where it is)
            continue
    found.sort(key=lambda e: (e.deleted, e.trash_id), reverse=True)
    return found


def _trash_folder(library: Library, trash_id: str) -> Path:
    if not isinstance(trash_id, str) or not _TRASH_ID.match(trash_id):
        raise LibraryError(f"{trash_id!r} is not a trash id (see `library trash`)")
    folder = library.trash_dir / trash_id
    if not folder.is_dir():
        raise LibraryError(f"nothing in the trash with id {trash_id!r}")
    return folder


def restore(library: Library, trash_id: str, *, new_name: str | None = None) -> Path:
    """Put a deleted vector back (under `new_name` if its old name is taken meanwhile)."""
    with locked(library.root):
        folder = _trash_folder(library, trash_id)
        item = _trash_item(folder)
        if item is None:
            raise LibraryError(f"trash item {trash_id!r} holds no vector")
        path, origin = item
        try:
            collection, name = split_key(str(origin.get("key") or path.stem))
        except LibraryError:
            collection, name = "", path.stem
        same_name = name
        if new_name is not None:
            collection, name = target(new_name, collection)
        vector = load_vector(path)  # only a valid vector goes back
        try:
            if name == same_name:  # byte for byte, as it was deleted
                restored = library.path_of(name, collection)
                try:
                    atomic_write_bytes(restored, path.read_bytes(), overwrite=False)
                except FileExistsError as exc:
                    raise LibraryError(f"{make_key(collection, name)!r} exists") from exc
            else:
                restored = library._write(vector, collection, name, overwrite=False)
        except LibraryError as exc:
            raise LibraryError(
                f"cannot restore: a vector named {make_key(collection, name)!r} exists; "
                "restore it under a new name"
            ) from exc
        shutil.rmtree(folder, ignore_errors=True)
        return restored


def empty_trash(library: Library, trash_id: str | None = None) -> int:
    """Permanently delete one trash item or all of them; returns how many were removed."""
    with locked(library.root):
        if trash_id is not None:
            shutil.rmtree(_trash_folder(library, trash_id))
            return 1
        count = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(library.trash_dir):
                if entry.is_dir(follow_symlinks=False) and _TRASH_ID.match(entry.name):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    count += 1
        return count


def sweep_temp_files(library: Library, older_than_s: float = 24 * 3600) -> int:
    """Remove `.tmp-*` leftovers of killed writers older than `older_than_s` (never a live write)."""
    removed = 0
    cutoff = time.time() - older_than_s
    for folder in [library.root, *library._collection_dirs()]:
        for tmp in folder.glob(f"{TEMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                if tmp.is_file() and tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
    return removed
