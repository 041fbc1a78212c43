"""The personal vector library: a folder of self-describing `.safetensors` vector files.

Subfolders are collections. Names are file stems; writes are atomic (`engine.atomic`).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from engine.errors import LibraryError
from engine.vector import SteeringVector, load_vector, save_vector

SUFFIX = ".safetensors"
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


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
    """Refuse names that could escape the library folder or confuse a terminal."""
    if (
        not name
        or not name.strip()
        or name in (".", "..")
        or ".." in name.split("/")
        or _BAD_NAME.search(name)
    ):
        raise LibraryError(f"invalid vector name {name!r}: no path separators, '..' or control characters")
    if len(name) > 200:
        raise LibraryError("vector names are limited to 200 characters")
    return name


class Library:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_library_dir()

    def path_of(self, name: str, collection: str = "") -> Path:
        folder = self.root / check_name(collection) if collection else self.root
        return folder / f"{check_name(name)}{SUFFIX}"

    def save(
        self, vector: SteeringVector, name: str, *, collection: str = "", overwrite: bool = False
    ) -> Path:
        path = self.path_of(name, collection)
        try:
            return save_vector(vector.replace(name=name), path, overwrite=overwrite)
        except FileExistsError as exc:
            raise LibraryError(
                f"a vector named {name!r} already exists; choose another name or overwrite it"
            ) from exc

    def resolve(self, name_or_file: str) -> Path:
        """A vector by library name (optionally `collection/name`) or by file path."""
        as_path = Path(name_or_file).expanduser()
        if as_path.suffix == SUFFIX and as_path.is_file():
            return as_path
        collection, _, name = name_or_file.rpartition("/")
        path = self.path_of(name, collection)
        if not path.is_file():
            raise LibraryError(f"no vector named {name_or_file!r} in the library at {self.root}")
        return path

    def load(self, name_or_file: str) -> SteeringVector:
        return load_vector(self.resolve(name_or_file))
