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

The package: `names` (naming rules), `entries` (VectorEntry, built one way from header values), `index`
(the listing and its cache), `trash` (delete, restore, the lock); this module is the `Library` facade.
"""

from __future__ import annotations

import builtins
import contextlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.atomic import atomic_write_bytes
from engine.errors import AlreadyExistsError, IncompatibleVectorError, LibraryError
from engine.fingerprint import Compatibility, ModelFingerprint, compatibility
from engine.library import trash as _trash
from engine.library.entries import BadFile, FingerprintCache, Listing, VectorEntry, build_entry, header_values
from engine.library.index import INDEX_NAME, INDEX_VERSION, IndexedListing, IndexRecord
from engine.library.names import (
    MAX_NAME_LENGTH,
    SUFFIX,
    check_name,
    clean_tags,
    default_library_dir,
    make_key,
    split_key,
    target,
)
from engine.library.trash import LOCK_NAME, ORIGIN_NAME, TRASH_DIR, locked
from engine.vector import SteeringVector, load_vector, now_iso, vector_to_bytes
from engine.vector import combine as combine_vectors

__all__ = [
    "INDEX_NAME",
    "INDEX_VERSION",
    "LOCK_NAME",
    "MAX_NAME_LENGTH",
    "ORIGIN_NAME",
    "SUFFIX",
    "TRASH_DIR",
    "BadFile",
    "Compatibility",
    "IndexRecord",
    "Library",
    "Listing",
    "VectorEntry",
    "check_name",
    "default_library_dir",
    "make_key",
    "split_key",
]


class Library(IndexedListing):
    """A vector library folder: listing (headers only), reading, editing, and a trash."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_library_dir()
        super().__init__()

    def __repr__(self) -> str:
        return f"Library({str(self.root)!r})"

    # ---- paths and names --------------------------------------------------------------------------------
    def path_of(self, name: str, collection: str = "") -> Path:
        folder = self.root / check_name(collection) if collection else self.root
        return folder / f"{check_name(name)}{SUFFIX}"

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

    def _collection_dirs(self) -> builtins.list[Path]:
        try:
            return sorted(
                Path(e.path)
                for e in os.scandir(self.root)
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
            )
        except OSError:
            return []

    def collections(self) -> builtins.list[str]:
        return [p.name for p in self._collection_dirs()]

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.root)

    # ---- listing ----------------------------------------------------------------------------------------
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
            entries = [e for e in entries if e.matches_text(text)]
        if model is not None:
            entries = [e for e in entries if self.compatibility(e, model)[0] != Compatibility.INCOMPATIBLE]
        return Listing(entries=entries, bad_files=listing.bad_files)

    def entry(self, key: str) -> VectorEntry:
        """The listing entry of one vector (reads its header)."""
        path, collection, name = self._resolve_own(key)
        return self._entry_at(path, collection, name)

    @staticmethod
    def _entry_at(path: Path, collection: str, name: str) -> VectorEntry:
        fps = FingerprintCache()
        try:
            values = header_values(path, fps)
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise LibraryError(f"{make_key(collection, name)!r} disappeared") from exc
        return build_entry(values, name=name, collection=collection, path=path, size=size, fps=fps)

    # ---- compatibility ------------------------------------------------------------------------------
    def compatibility(self, entry: VectorEntry, fingerprint: ModelFingerprint) -> tuple[Compatibility, str]:
        """Whether a vector can be used on a model, and why (`engine.fingerprint.compatibility`)."""
        return compatibility(entry.hidden_size, entry.layers, entry.fingerprint, fingerprint)

    def compatible(
        self, fingerprint: ModelFingerprint
    ) -> builtins.list[tuple[VectorEntry, Compatibility, str]]:
        """The vectors usable on a model: OK ones first, then OTHER_MODEL ones (which need an override)."""
        found = [(e, *self.compatibility(e, fingerprint)) for e in self._all().entries]
        usable = [t for t in found if t[1] != Compatibility.INCOMPATIBLE]
        usable.sort(key=lambda t: t[1] != Compatibility.OK)
        return usable

    # ---- reading --------------------------------------------------------------------------------------
    def load(self, key_or_file: str) -> SteeringVector:
        return load_vector(self.resolve(key_or_file))

    def show(self, key: str, *, model: ModelFingerprint | None = None) -> dict[str, Any]:
        """Everything about one vector: its entry (`VectorEntry.to_dict`) plus the number of positions,
        norms per layer, provenance, the models it fits and, given `model`, whether it fits that one."""
        path = self.resolve(key)
        vector = load_vector(path)
        try:
            collection, name = self._inside(path)
        except LibraryError:
            collection, name = "", path.stem
        info = self._entry_at(path, collection, name).to_dict()
        fp = vector.fingerprint
        fits = f"any model with hidden size {vector.hidden_size} and more than {max(vector.layer_ids)} layers"
        info.update(
            n_tokens=vector.n_tokens,
            norms={str(l): n for l, n in vector.norms().items()},
            provenance=vector.provenance,
            compatible_models={
                "same_model": (
                    {**fp.to_dict(), "note": "vectors steer best on the model they were captured on"}
                    if fp is not None
                    else None
                ),
                "other_models": f"{fits}, with an explicit override"
                if fp is not None
                else f"no model recorded; {fits}",
            },
        )
        if model is not None:
            status, reason = compatibility(vector.hidden_size, vector.layer_ids, fp, model)
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
            target_collection, target_name = target(
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
        self._rewrite(key, tags=clean_tags(tags))

    def set_notes(self, key: str, notes: str) -> None:
        if not isinstance(notes, str):
            raise LibraryError("notes must be text")
        if len(notes.encode("utf-8", "surrogatepass")) > 256 * 1024:
            raise LibraryError("notes are limited to 256 KiB")
        self._rewrite(key, notes=notes)

    def duplicate(self, key: str, new_name: str) -> Path:
        """A copy under a new name (a bare name stays in the same collection)."""
        path, collection, _ = self._resolve_own(key)
        target_collection, target_name = target(new_name, collection)
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
        target_collection, target_name = target(new_name, first_collection)
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
        target_collection, target_name = target(new_name, collection)
        return self._write(direction, target_collection, target_name, overwrite=False)

    # ---- trash ---------------------------------------------------------------------------------------
    @property
    def trash_dir(self) -> Path:
        return self.root / TRASH_DIR

    def delete(self, key: str) -> str:
        """Move a vector into `<root>/.trash/<trash id>/`; returns the trash id for `restore`."""
        return _trash.delete(self, key)

    def trash(self) -> builtins.list[VectorEntry]:
        """Deleted vectors, newest first; `entry.key` is the trash id to pass to `restore`."""
        return _trash.trash(self)

    def restore(self, trash_id: str, *, new_name: str | None = None) -> Path:
        """Put a deleted vector back (under `new_name` if its old name is taken meanwhile)."""
        return _trash.restore(self, trash_id, new_name=new_name)

    def empty_trash(self, trash_id: str | None = None) -> int:
        """Permanently delete one trash item or all of them; returns how many were removed."""
        return _trash.empty_trash(self, trash_id)

    def sweep_temp_files(self, older_than_s: float = 24 * 3600) -> int:
        """Remove `.tmp-*` leftovers of killed writers older than `older_than_s` (never a live write)."""
        return _trash.sweep_temp_files(self, older_than_s)
