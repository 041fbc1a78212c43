"""Crash-safe file writes: temp file in the same folder, flush, fsync, rename.

A process killed at any point leaves either the old file or the new one, never a half-written one. Temp
files carry a `.tmp-` prefix so listings can ignore (and later sweep) leftovers of killed writers.

Files are created with mode 0666 filtered by the umask (0644 under the usual 022), like any other app's
saved files; `tempfile.mkstemp` would make every vector and export 0600 whatever the umask.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    # The rename is only durable once the directory entry is on disk too (POSIX); Windows can't open dirs.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def create_temp_file(folder: Path, suffix: str = "") -> tuple[int, Path]:
    """A new, empty temp file in `folder`, opened for writing: (file descriptor, path).

    Like `tempfile.mkstemp` (O_EXCL, a random name), but with mode 0666 so that the kernel applies the
    umask (and any default ACL) as it does for every ordinarily created file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        path = Path(folder) / f"{TEMP_PREFIX}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder}")


def atomic_write_bytes(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write `data` to `path` atomically.

    With `overwrite=False` the final step is a hard link, which fails if `path` appeared meanwhile, so two
    processes racing for one name can never clobber each other: one wins, the other gets FileExistsError.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp_file(path.parent, path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except (OSError, NotImplementedError) as exc:
                if isinstance(exc, FileExistsError) or path.exists():
                    raise FileExistsError(str(path)) from exc
                os.rename(tmp, path)  # file systems without hard links: best effort
            else:
                tmp.unlink()
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str, *, overwrite: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)
