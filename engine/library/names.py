"""The library's naming rules: which names are safe as file names, and how keys map to (collection, name)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.errors import LibraryError

SUFFIX = ".safetensors"
MAX_NAME_LENGTH = 200
MAX_TAG_LENGTH = 100
# Control characters, path separators and the characters Windows refuses in file names. ':' is also the
# coefficient separator of `generate --steer NAME:COEFF`.
_BAD_NAME = re.compile(r'[\x00-\x1f\x7f/\\<>:"|?*\ud800-\udfff]')  # surrogates: bytes that aren't UTF-8
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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


def target(new_name: str, default_collection: str) -> tuple[str, str]:
    """Where a new vector goes: a bare name stays in `default_collection`, `coll/name` goes to `coll`,
    and `/name` goes to the top level."""
    if isinstance(new_name, str) and new_name.startswith("/"):
        return "", check_name(new_name[1:])
    if isinstance(new_name, str) and "/" in new_name:
        return split_key(new_name)
    return default_collection, check_name(new_name)


def clean_tags(tags: Sequence[str]) -> tuple[str, ...]:
    """Tags stripped and deduplicated (in order); refuses one string, empty tags and control characters."""
    if isinstance(tags, str):
        raise LibraryError("tags must be a list of strings, not one string")
    clean: list[str] = []
    for tag in tags:
        tag = str(tag).strip()
        if not tag or _CONTROL.search(tag) or len(tag) > MAX_TAG_LENGTH:
            raise LibraryError(
                f"invalid tag {tag!r}: non-empty, no control characters, {MAX_TAG_LENGTH} chars at most"
            )
        if tag not in clean:
            clean.append(tag)
    return tuple(clean)
