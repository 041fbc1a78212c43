"""The app's cache folder: fetched model files and GGUF files converted to safetensors folders.

Layout, under `$ACTADD_CACHE` or `~/.cache/actadd-studio`:
- `models/`     files fetched by `python main.py models fetch` (engine/model_fetch.py)
- `converted/`  one folder per (GGUF file, dtype), written by engine/gguf_convert.py

Converted folders are keyed by the file's identity (absolute path, size, mtime in ns and a hash of its
first MiB, which holds the header), the dtype and the converter's version, so an edited or replaced file
is converted again and an unchanged one never is. They are evicted least recently used first once their
total passes `$ACTADD_GGUF_CACHE_GB` (default 40 GB).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from engine import app_dirs

# Bump when the conversion's output changes: old folders then stop matching and age out.
CONVERTER_VERSION = "1"
DEFAULT_CAP_GB = 40.0
_LAST_USED = ".last_used"  # its mtime is the folder's last use, for LRU eviction
_HEADER_BYTES = 1 << 20


def cache_root() -> Path:
    return app_dirs.cache_root()


def models_dir() -> Path:
    return app_dirs.fetched_models_dir()


def converted_dir() -> Path:
    return cache_root() / "converted"


def cache_cap_bytes() -> int:
    """The size cap of the converted folders, from $ACTADD_GGUF_CACHE_GB (a bad value means the default)."""
    try:
        gb = float(os.environ.get("ACTADD_GGUF_CACHE_GB", DEFAULT_CAP_GB))
    except ValueError:
        gb = DEFAULT_CAP_GB
    return int(max(gb, 0.0) * 1e9)


def file_key(path: Path, dtype: str) -> str:
    """A short hex key for (this file as it is now, dtype, converter and library versions)."""
    import gguf
    import transformers

    stat = path.stat()
    digest = hashlib.sha256()
    for part in (
        str(path.resolve()),
        str(stat.st_size),
        str(stat.st_mtime_ns),
        dtype,
        CONVERTER_VERSION,
        transformers.__version__,
        getattr(gguf, "__version__", ""),
    ):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    with path.open("rb") as f:
        digest.update(f.read(_HEADER_BYTES))
    return digest.hexdigest()[:20]


def entry_dir(path: Path, dtype: str) -> Path:
    return converted_dir() / f"{path.stem[:60]}-{dtype}-{file_key(path, dtype)}"


def touch(entry: Path) -> None:
    """Mark an entry as just used."""
    marker = entry / _LAST_USED
    marker.touch()
    os.utime(marker, None)


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _last_used(folder: Path) -> float:
    marker = folder / _LAST_USED
    try:
        return marker.stat().st_mtime
    except OSError:
        return 0.0


def evict(keep: Path | None = None, cap: int | None = None) -> list[Path]:
    """Delete the least recently used converted folders until the rest fit the cap; never `keep`.

    Leftover temporary folders of interrupted conversions older than a day are removed too.
    Returns the folders removed.
    """
    root = converted_dir()
    if not root.is_dir():
        return []
    cap = cache_cap_bytes() if cap is None else cap
    removed: list[Path] = []
    entries = []
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        if folder.name.startswith(".tmp-"):
            if time.time() - folder.stat().st_mtime > 86400:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
            continue
        entries.append((_last_used(folder), folder, _size(folder)))
    total = sum(size for _, _, size in entries)
    for _, folder, size in sorted(entries, key=lambda e: e[0]):
        if total <= cap:
            break
        if keep is not None and folder == keep:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
        total -= size
    return removed
