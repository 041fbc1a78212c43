"""`.zip` bundles: one vector or a whole collection, with a `manifest.json`, for sharing.

Layout::

    manifest.json                         {"format": "actadd-studio/bundle", "format_version": 1,
                                           "vectors": [{"file", "name", "collection", "sha256", "bytes", ...}]}
    vectors/<name>.safetensors            top-level vectors
    vectors/<collection>/<name>.safetensors

Import treats the zip as hostile: members with absolute paths, `..`, backslashes, drive letters or
control characters, symlinks, encrypted members and duplicates are refused outright; the member count
and the total declared uncompressed size are bounded before anything is decompressed, and reads stop at
the declared size (zip bombs); every vector is checked with `load_vector`'s checks and its sha256 against
the manifest. Nothing is extracted by member name: vectors are saved through the library under checked
names. Either every vector of the bundle is imported or none (name collisions are checked first).
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from engine.errors import AlreadyExistsError, LibraryError, VectorFileError
from engine.interop import ExportResult, ImportResult, import_provenance, with_import_record, write_export
from engine.vector import MAX_FILE_BYTES, load_vector, now_iso

BUNDLE_FORMAT = "actadd-studio/bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 8 * 1024**2
MAX_BUNDLE_FILES = 10_000
MAX_BUNDLE_BYTES = 4 * 1024**3  # total uncompressed


def export_bundle(library, keys: list[str], dest: Path, *, overwrite: bool = False) -> ExportResult:
    """Write the vectors named by `keys` (library keys or files) into one `.zip` bundle."""
    from engine import __version__
    from engine.library import make_key

    if not keys:
        raise LibraryError("nothing to export")
    buffer = io.BytesIO()
    records = []
    seen: set[str] = set()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in keys:
            path = library.resolve(key)
            try:
                collection, name = library._inside(path)
            except LibraryError:
                collection, name = "", path.stem
            vector = load_vector(path)  # only valid vectors leave the library
            data = path.read_bytes()
            member = f"vectors/{make_key(collection, name)}.safetensors"
            if member in seen:
                continue
            seen.add(member)
            archive.writestr(member, data)
            records.append(
                {
                    "file": member,
                    "name": name,
                    "collection": collection,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "bytes": len(data),
                    "method": vector.method,
                    "layers": vector.layer_ids,
                    "shape": vector.shape,
                    "model": vector.fingerprint.model_hint if vector.fingerprint else "",
                }
            )
        manifest = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "created": now_iso(),
            "library_version": __version__,
            "vectors": records,
        }
        archive.writestr(MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1))
    path = write_export(dest, buffer.getvalue(), overwrite=overwrite)
    return ExportResult(path=path, keys=[make_key(r["collection"], r["name"]) for r in records])


def _check_member_name(name: str, bundle: Path) -> None:
    bad = (
        not name
        or name.startswith(("/", "\\"))
        or "\\" in name
        or (len(name) > 1 and name[1] == ":")
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or any(part in ("..", ".") for part in PurePosixPath(name).parts)
        or PurePosixPath(name).is_absolute()
    )
    if bad:
        raise VectorFileError(f"{bundle.name}: refusing unsafe member path {name[:80]!r}")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, bundle: Path) -> bytes:
    """Read at most the declared size (and never more than `limit`), whatever the compressed stream says."""
    cap = min(info.file_size, limit)
    try:
        with archive.open(info) as handle:
            data = handle.read(cap + 1)
    # ValueError: a member name flagged UTF-8 that isn't (UnicodeDecodeError in zipfile's open)
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        NotImplementedError,
        RuntimeError,
        OSError,
        ValueError,
    ) as exc:
        raise VectorFileError(f"{bundle.name}: member {info.filename!r} is corrupt ({exc})"[:300]) from exc
    if len(data) > cap:
        raise VectorFileError(f"{bundle.name}: member {info.filename!r} is larger than declared")
    return data


def read_bundle(
    path: Path,
    *,
    max_files: int = MAX_BUNDLE_FILES,
    max_total_bytes: int = MAX_BUNDLE_BYTES,
) -> tuple[list[tuple[str, str, bytes]], dict]:
    """Validate a bundle: [(collection, name, vector bytes)] plus the manifest. Raises VectorFileError."""
    from engine.library import check_name

    path = Path(path).expanduser()
    if not path.is_file():  # a FIFO would block zipfile's open forever
        raise VectorFileError(f"{path.name}: not a file")
    try:
        archive = zipfile.ZipFile(path)
    # NotImplementedError: a central directory claiming a zip version Python can't read ("zip file version 25.5")
    except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError, EOFError) as exc:
        raise VectorFileError(f"{path.name}: not a valid .zip bundle") from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > max_files + 1:
            raise VectorFileError(f"{path.name}: {len(infos)} files is more than the {max_files} allowed")
        names: set[str] = set()
        total = 0
        for info in infos:
            _check_member_name(info.filename, path)
            if info.filename in names:
                raise VectorFileError(f"{path.name}: member {info.filename!r} appears twice")
            names.add(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise VectorFileError(f"{path.name}: refusing symlink member {info.filename!r}")
            if info.flag_bits & 0x1:
                raise VectorFileError(f"{path.name}: refusing encrypted member {info.filename!r}")
            if info.file_size > MAX_FILE_BYTES:
                raise VectorFileError(f"{path.name}: member {info.filename!r} is implausibly large")
            total += info.file_size
        if total > max_total_bytes:
            raise VectorFileError(
                f"{path.name}: unpacks to {total} bytes, more than the {max_total_bytes} allowed"
            )
        by_name = {i.filename: i for i in infos}
        if MANIFEST not in by_name:
            raise VectorFileError(f"{path.name}: no {MANIFEST}; not an ActAdd Studio bundle")
        try:
            manifest = json.loads(_read_member(archive, by_name[MANIFEST], MAX_MANIFEST_BYTES, path))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise VectorFileError(f"{path.name}: {MANIFEST} is not valid JSON") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise VectorFileError(f"{path.name}: {MANIFEST} is not an ActAdd Studio bundle manifest")
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > BUNDLE_VERSION:
            raise VectorFileError(f"{path.name}: bundle format version {version!r} is not supported")
        records = manifest.get("vectors")
        if not isinstance(records, list) or not records:
            raise VectorFileError(f"{path.name}: the manifest lists no vectors")
        out: list[tuple[str, str, bytes]] = []
        keys: set[tuple[str, str]] = set()
        for record in records:
            if not isinstance(record, dict):
                raise VectorFileError(f"{path.name}: malformed manifest entry")
            member, name, collection = record.get("file"), record.get("name"), record.get("collection", "")
            if not (isinstance(member, str) and isinstance(name, str) and isinstance(collection, str)):
                raise VectorFileError(f"{path.name}: malformed manifest entry {str(record)[:80]}")
            try:
                check_name(name)
                if collection:
                    check_name(collection)
            except LibraryError as exc:
                raise VectorFileError(f"{path.name}: {exc}") from exc
            if (collection, name) in keys:
                raise VectorFileError(f"{path.name}: {collection}/{name} is listed twice")
            keys.add((collection, name))
            if member not in by_name:
                raise VectorFileError(f"{path.name}: the manifest names {member[:80]!r}, which is missing")
            data = _read_member(archive, by_name[member], MAX_FILE_BYTES, path)
            digest = record.get("sha256")
            if digest is not None and digest != hashlib.sha256(data).hexdigest():
                raise VectorFileError(f"{path.name}: {member!r} does not match its sha256 in the manifest")
            out.append((collection, name, data))
    return out, manifest


def import_bundle(
    library,
    path: Path,
    *,
    collection: str | None = None,
    overwrite: bool = False,
    name: str | None = None,
    max_files: int = MAX_BUNDLE_FILES,
    max_total_bytes: int = MAX_BUNDLE_BYTES,
) -> ImportResult:
    """Import every vector of a bundle (into `collection` if given, else into their own collections)."""
    from engine.library import check_name, make_key

    path = Path(path).expanduser()
    items, _ = read_bundle(path, max_files=max_files, max_total_bytes=max_total_bytes)
    if name is not None:
        if len(items) != 1:
            raise LibraryError(f"{path.name} holds {len(items)} vectors; --name works for one")
        items = [(items[0][0], check_name(name), items[0][2])]
    if collection is not None and collection:
        check_name(collection)
    vectors = []
    with tempfile.TemporaryDirectory(prefix="actadd-bundle-") as tmp:
        for i, (own_collection, vector_name, data) in enumerate(items):
            scratch = Path(tmp) / f"{i}.safetensors"
            scratch.write_bytes(data)
            try:
                vector = load_vector(scratch)
            except VectorFileError as exc:
                raise VectorFileError(
                    f"{path.name}: {make_key(own_collection, vector_name)} is not a valid vector: {exc}"
                ) from exc
            target = own_collection if collection is None else collection
            vectors.append((target, vector_name, vector))
    targets = [(c, n) for c, n, _ in vectors]
    if len(set(targets)) != len(targets):
        raise LibraryError(f"{path.name}: two vectors would get the same name in collection {collection!r}")
    if not overwrite and (taken := [make_key(c, n) for c, n in targets if library.path_of(n, c).exists()]):
        raise AlreadyExistsError(
            f"already in the library: {', '.join(taken[:5])}{' ...' if len(taken) > 5 else ''}; "
            "nothing imported"
        )
    result = ImportResult()
    record = import_provenance("actadd-studio bundle", path)
    for target, vector_name, vector in vectors:
        vector = vector.replace(provenance=with_import_record(vector.provenance, record))
        saved = library.save(vector, vector_name, collection=target, overwrite=overwrite)
        result.saved.append((make_key(target, vector_name), saved))
    return result
