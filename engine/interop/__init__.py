"""Import and export between the library and the steering ecosystem.

Formats (layer numbers are mapped on the way in and out; see docs/library.md for the table):

| format                         | module                  | direction | what                              |
|--------------------------------|-------------------------|-----------|-----------------------------------|
| `.zip` bundle + manifest.json  | `engine.interop.bundle` | both      | one vector or a whole collection  |
| llama.cpp control vector GGUF  | `engine.interop.gguf`   | both      | `direction.N` tensors             |
| repeng `.npy` / `.npz`         | `engine.interop.repeng` | import    | `{layer: [hidden]}` or `[L, hidden]` |
| steering-vectors safetensors   | `engine.interop.repeng` | import    | `layer_activations` `{layer: [hidden]}` |
| our own `.safetensors`         | `engine.vector`         | both      | a single vector file              |

Every import is untrusted input: sizes are bounded before anything is read, dtypes, shapes and
NaN/inf are checked, nothing is ever unpickled, and a bundle is never extracted onto the file system
by its member names. Every export is an atomic write that refuses to overwrite unless asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.atomic import atomic_write_bytes
from engine.errors import AlreadyExistsError, IncompatibleVectorError, LibraryError, VectorFileError
from engine.fingerprint import ModelFingerprint
from engine.vector import SteeringVector, now_iso, vector_to_bytes

MAX_IMPORT_BYTES = 512 * 1024**2  # one imported file; steering vectors are KB to a few MB
MAX_HIDDEN_SIZE = 65536
FORMATS = ("bundle", "gguf", "repeng", "steering-vectors", "vector")


@dataclass
class ImportResult:
    saved: list[tuple[str, Path]] = field(default_factory=list)  # (library key, path)
    warnings: list[str] = field(default_factory=list)


@dataclass
class ExportResult:
    path: Path
    keys: list[str]
    warnings: list[str] = field(default_factory=list)


# ---- shared checks --------------------------------------------------------------------------------
def check_import_size(path: Path, limit: int = MAX_IMPORT_BYTES) -> int:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VectorFileError(f"{path.name}: cannot read ({exc.strerror or exc})") from exc
    if not path.is_file():
        raise VectorFileError(f"{path.name}: not a file")
    if size > limit:
        raise VectorFileError(f"{path.name}: {size} bytes is more than any steering vector needs ({limit})")
    return size


def as_direction(array, what: str, source: Path) -> np.ndarray:
    """Check one imported `[hidden]` direction (leading dimensions of 1 are allowed) -> float32 copy."""
    arr = np.asarray(array)
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (2, 4, 8):
        raise VectorFileError(f"{source.name}: {what} has dtype {arr.dtype}; expected float16/32/64")
    if arr.ndim == 0 or any(d != 1 for d in arr.shape[:-1]):
        raise VectorFileError(f"{source.name}: {what} has shape {list(arr.shape)}; expected [hidden]")
    arr = arr.reshape(-1)
    if not 0 < arr.shape[0] <= MAX_HIDDEN_SIZE:
        raise VectorFileError(
            f"{source.name}: {what} has {arr.shape[0]} values; expected 1..{MAX_HIDDEN_SIZE}"
        )
    out = np.array(arr, dtype=np.float32, copy=True)
    if not np.isfinite(out).all():
        raise VectorFileError(f"{source.name}: {what} contains NaN or infinite values")
    return out


def map_block_outputs(
    directions: dict[int, np.ndarray],
    *,
    source: Path,
    label: str,
    model: ModelFingerprint | None,
) -> tuple[dict[int, np.ndarray], list[str]]:
    """Map "output of block N" numbering (llama.cpp, repeng, steering-vectors) to ours (input of block
    N+1), checking against the model when one is given.

    With a model of n blocks: N >= n is past the model (llama.cpp ignores it; it usually means the indices
    are shifted by one), and N = n-1 is the last block's output, which has no block input to steer here.
    Both are dropped with a warning. A different hidden size is refused.
    """
    warnings: list[str] = []
    if not directions:
        raise VectorFileError(f"{source.name}: holds no directions")
    hidden = {a.shape[0] for a in directions.values()}
    if len(hidden) != 1:
        raise VectorFileError(f"{source.name}: directions have different sizes {sorted(hidden)}")
    (hidden_size,) = hidden
    kept = dict(directions)
    if model is not None:
        if hidden_size != model.hidden_size:
            raise IncompatibleVectorError(
                f"{source.name}: directions have {hidden_size} values, the model's hidden size is "
                f"{model.hidden_size}"
            )
        n = model.n_layers
        past = sorted(i for i in kept if i >= n)
        if past:
            shifted = max(kept) == n
            warnings.append(
                f"{source.name}: {label} {past} point past the model's {n} blocks (valid: 0..{n - 1}); "
                "llama.cpp silently ignores them"
                + ("; the indices look shifted by one" if shifted else "")
                + ". Dropped."
            )
        last = [i for i in kept if i == n - 1]
        if last:
            warnings.append(
                f"{source.name}: {label} [{n - 1}] acts on the last block's output, after which there is no "
                "block input to steer in this app. Dropped."
            )
        kept = {i: a for i, a in kept.items() if i < n - 1}
        if not kept:
            raise IncompatibleVectorError(f"{source.name}: no direction fits the model's {n} blocks")
    return {i + 1: a for i, a in sorted(kept.items())}, warnings


def import_provenance(source_format: str, source: Path, **extra) -> dict:
    from engine import __version__

    return {
        "source_format": source_format,
        "source_file": source.name,
        "imported": now_iso(),
        "library_version": __version__,
        **extra,
    }


def with_import_record(provenance: dict, record: dict) -> dict:
    """Add an import record to a vector's provenance, keeping earlier ones in `import_history`."""
    out = dict(provenance)
    if isinstance(out.get("import"), dict):
        out["import_history"] = [*out.get("import_history", []), out["import"]]
    out["import"] = record
    return out


def imported_vector(
    layers: dict[int, np.ndarray],
    *,
    source_format: str,
    source: Path,
    model: ModelFingerprint | None,
    default_coeff: float = 1.0,
    restored: dict | None = None,
    **provenance_extra,
) -> SteeringVector:
    """The library vector of imported directions ({our layer: [hidden]}), its import recorded in provenance.

    `restored` is our own metadata found in the file (GGUF: `gguf_metadata.parse_our_metadata`, already
    validated): name, method, default mode and coefficient, fingerprint, prompts, earlier provenance, tags,
    notes, created. What it holds wins over the defaults of a plain import.
    """
    import torch

    from engine import __version__

    ours = restored or {}
    if not math.isfinite(float(default_coeff)):
        default_coeff = 1.0
    record = import_provenance(source_format, source, **provenance_extra)
    provenance = {"library_version": __version__, **with_import_record(ours.get("provenance", {}), record)}
    return SteeringVector(
        layers={l: torch.from_numpy(a.astype(np.float32)) for l, a in layers.items()},
        method=ours.get("method", "imported"),
        name=ours.get("name") or source.stem,
        default_coeff=ours.get("default_coeff", float(default_coeff)),
        default_mode=ours.get("default_mode", "all"),
        fingerprint=ours.get("fingerprint") or model,
        prompts=ours.get("prompts", {}),
        provenance=provenance,
        tags=ours.get("tags", ()),
        notes=ours.get("notes", ""),
        created=ours.get("created") or now_iso(),
    )


def write_export(dest: Path, data: bytes, *, overwrite: bool) -> Path:
    dest = Path(dest).expanduser()
    try:
        atomic_write_bytes(dest, data, overwrite=overwrite)
    except FileExistsError as exc:
        raise AlreadyExistsError(f"{dest} already exists; choose another file or overwrite it") from exc
    except OSError as exc:
        raise LibraryError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    return dest


# ---- dispatch --------------------------------------------------------------------------------------------
def detect_format(path: Path) -> str:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return "bundle"
    if suffix == ".gguf":
        return "gguf"
    if suffix in (".npy", ".npz"):
        return "repeng"
    if suffix == ".safetensors":
        from engine.interop.repeng import looks_like_steering_vectors

        return "steering-vectors" if looks_like_steering_vectors(path) else "vector"
    raise LibraryError(
        f"cannot tell the format of {path.name} from its extension; "
        "use .zip, .gguf, .npy, .npz or .safetensors, or name the format"
    )


def read_single(
    path: Path, fmt: str, *, model: ModelFingerprint | None = None
) -> tuple[SteeringVector, list[str]]:
    """Read (and validate) one vector from a non-bundle file."""
    path = Path(path).expanduser()
    if fmt == "gguf":
        from engine.interop.gguf import read_gguf

        return read_gguf(path, model=model)
    if fmt == "repeng":
        from engine.interop.repeng import read_repeng

        return read_repeng(path, model=model)
    if fmt == "steering-vectors":
        from engine.interop.repeng import read_steering_vectors

        return read_steering_vectors(path, model=model)
    if fmt == "vector":
        from engine.vector import check_fits, load_vector

        check_import_size(path)
        vector = load_vector(path)
        warnings = []
        if model is not None:
            warnings = check_fits(vector, model, allow_other_model=True)
        record = import_provenance("actadd-studio vector", path)
        vector = vector.replace(provenance=with_import_record(vector.provenance, record))
        return vector, warnings
    raise LibraryError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def import_file(
    library,
    path: Path | str,
    *,
    fmt: str = "auto",
    name: str | None = None,
    collection: str | None = None,
    overwrite: bool = False,
    model: ModelFingerprint | None = None,
) -> ImportResult:
    """Import a file into the library (a bundle may hold many vectors).

    `model`, when known, is checked against (hidden size, layer range, llama.cpp index shifts) and recorded
    as the fingerprint of vectors whose file doesn't carry one.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise LibraryError(f"{path} does not exist")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "bundle":
        from engine.interop.bundle import import_bundle

        return import_bundle(library, path, collection=collection, overwrite=overwrite, name=name)
    vector, warnings = read_single(path, fmt, model=model)
    if model is not None and vector.fingerprint is None:
        vector = vector.replace(fingerprint=model)
    elif model is not None and vector.fingerprint is not None and not vector.fingerprint.same_model(model):
        warnings.append(
            f"{path.name} records another model ({vector.fingerprint.model_hint or vector.fingerprint.id}) "
            "than the one given; kept the recorded one"
        )
    target = name or path.stem
    try:
        from engine.library import check_name

        check_name(target)
    except LibraryError as exc:
        raise LibraryError(f"{exc}; give the import a name (--name)") from exc
    saved = library.save(vector, target, collection=collection or "", overwrite=overwrite)
    from engine.library import make_key

    return ImportResult(saved=[(make_key(collection or "", target), saved)], warnings=warnings)


def export(
    library,
    keys: list[str] | str,
    dest: Path | str,
    *,
    fmt: str = "auto",
    overwrite: bool = False,
    direction: str | int | None = None,
    skip_invalid_layers: bool = False,
) -> ExportResult:
    """Export one vector (GGUF, `.safetensors` or a bundle) or several (a bundle) to `dest`."""
    dest = Path(dest).expanduser()
    key_list = [keys] if isinstance(keys, str) else list(keys)
    if not key_list:
        raise LibraryError("nothing to export")
    if dest.exists() and not overwrite:  # say so before any conversion (the write itself never clobbers)
        raise AlreadyExistsError(f"{dest} already exists; choose another file or overwrite it")
    if fmt == "auto":
        suffix = dest.suffix.lower()
        fmt = {".zip": "bundle", ".gguf": "gguf", ".safetensors": "vector"}.get(suffix, "")
        if not fmt:
            raise LibraryError(
                f"cannot tell the export format from {dest.name}; use .zip, .gguf or .safetensors"
            )
    if fmt == "bundle":
        from engine.interop.bundle import export_bundle

        return export_bundle(library, key_list, dest, overwrite=overwrite)
    if len(key_list) != 1:
        raise LibraryError(f"a {fmt} file holds one vector; export several as a .zip bundle")
    vector = library.load(key_list[0])
    if fmt == "gguf":
        from engine.interop.gguf import gguf_bytes

        data, warnings = gguf_bytes(vector, direction=direction, skip_invalid_layers=skip_invalid_layers)
        return ExportResult(write_export(dest, data, overwrite=overwrite), key_list, warnings)
    if fmt == "vector":
        return ExportResult(write_export(dest, vector_to_bytes(vector), overwrite=overwrite), key_list, [])
    raise LibraryError(f"cannot export to {fmt!r}; export formats are bundle, gguf and vector")
