"""Imports from repeng (`.npy` / `.npz`) and steering-vectors (`layer_activations` in safetensors).

Both libraries number layers by decoder block and add their vector to the block's **output**:
- repeng's `ControlVector.directions` is `{layer: [hidden]}`; `ControlModel` adds `directions[i]` to the
  output of `model.layers[i]` (its GGUF export writes `direction.{i}` unchanged).
- steering-vectors' `SteeringVector.layer_activations` is `{layer: [hidden]}` with
  `layer_type="decoder_block"`: the output of block `layer`.
The output of block i is the input of block i+1, so their layer i is our layer i + 1.

Accepted layouts (numpy is always read with `allow_pickle=False`; pickled dicts are refused):
- `.npz` of `{layer: [hidden]}` (keys "12", "layer_12", "layer.12" or "direction.12"),
- `.npy` of shape `[n_layers, hidden]`, row i being layer i (all-zero rows are skipped),
- `.safetensors` whose tensors are named "12" or "layer_activations.12".
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from engine.errors import VectorFileError
from engine.fingerprint import ModelFingerprint
from engine.interop import (
    MAX_IMPORT_BYTES,
    as_direction,
    check_import_size,
    imported_vector,
    map_block_outputs,
)
from engine.vector import SteeringVector
from engine.vector_file import FORMAT_NAME, MAX_LAYER_INDEX, read_safetensors_header

_NPZ_KEY = re.compile(r"^(?:layer[._-]?|layers\.|direction\.)?(0|[1-9][0-9]{0,3})$")
_SV_KEY = re.compile(r"^(?:layer_activations\.)?(0|[1-9][0-9]{0,3})$")
_SV_DTYPES = ("F16", "BF16", "F32", "F64")  # a tuple: a header's dtype may be an unhashable list
_PICKLE_HELP = (
    "it holds a pickled Python object (for example a dict saved with np.save), and pickles are never "
    "loaded because they can run code. Save the directions with np.savez(path, **{str(layer): array}) "
    "or as a [n_layers, hidden] array instead"
)


def _layer(text: str, pattern: re.Pattern, path: Path, what: str) -> int:
    match = pattern.match(text)
    if not match or int(match.group(1)) >= MAX_LAYER_INDEX:
        raise VectorFileError(f"{path.name}: unexpected {what} {text[:60]!r} (expected a layer number)")
    return int(match.group(1))


# ---- repeng -----------------------------------------------------------------------------------------------
def _check_npz_archive(path: Path) -> None:
    """Bound the archive before numpy decompresses anything (zip bombs, absurd member counts)."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    # NotImplementedError: a central directory claiming a zip version Python can't read ("zip file version 11.5")
    except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError, EOFError) as exc:
        raise VectorFileError(f"{path.name}: not a valid .npz archive") from exc
    if len(infos) > MAX_LAYER_INDEX:
        raise VectorFileError(f"{path.name}: {len(infos)} arrays is too many")
    if sum(i.file_size for i in infos) > MAX_IMPORT_BYTES:
        raise VectorFileError(f"{path.name}: its arrays would unpack to more than {MAX_IMPORT_BYTES} bytes")
    for info in infos:
        if not info.filename.endswith(".npy") or "/" in info.filename or info.flag_bits & 0x1:
            raise VectorFileError(f"{path.name}: unexpected member {info.filename[:60]!r} in the .npz")


def _read_npz(path: Path) -> tuple[dict[int, np.ndarray], str]:
    _check_npz_archive(path)
    directions: dict[int, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                index = _layer(key, _NPZ_KEY, path, "array")
                if index in directions:
                    raise VectorFileError(f"{path.name}: layer {index} appears twice")
                try:
                    array = npz[key]
                except ValueError as exc:
                    raise VectorFileError(
                        f"{path.name}: array {key!r} can't be read: {_PICKLE_HELP}"
                    ) from exc
                directions[index] = as_direction(array, f"layer {key}", path)
    except VectorFileError:
        raise
    except Exception as exc:  # zipfile/numpy format errors
        raise VectorFileError(f"{path.name}: malformed .npz ({type(exc).__name__})") from exc
    return directions, "npz {layer: [hidden]}"


def _read_npy(path: Path) -> tuple[dict[int, np.ndarray], str]:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise VectorFileError(f"{path.name}: {_PICKLE_HELP}") from exc
        raise VectorFileError(f"{path.name}: malformed .npy ({exc})"[:300]) from exc
    except Exception as exc:
        raise VectorFileError(f"{path.name}: malformed .npy ({type(exc).__name__})") from exc
    if not isinstance(array, np.ndarray):
        raise VectorFileError(f"{path.name}: not a single array")
    if array.dtype.kind != "f" or array.dtype.itemsize not in (2, 4, 8):
        raise VectorFileError(f"{path.name}: dtype {array.dtype}; expected float16/32/64")
    if array.ndim == 1:
        raise VectorFileError(
            f"{path.name}: a single [hidden] direction carries no layer; save it as .npz "
            "{layer: array} (repeng's ControlVector.directions)"
        )
    if array.ndim != 2 or not 0 < array.shape[0] <= MAX_LAYER_INDEX:
        raise VectorFileError(f"{path.name}: shape {list(array.shape)}; expected [n_layers, hidden]")
    directions = {i: as_direction(row, f"row {i}", path) for i, row in enumerate(array) if np.any(row != 0)}
    if not directions:
        raise VectorFileError(f"{path.name}: every row is zero")
    return directions, f"npy [n_layers={array.shape[0]}, hidden]"


def read_repeng(
    path: Path | str, *, model: ModelFingerprint | None = None
) -> tuple[SteeringVector, list[str]]:
    """Import repeng directions: `.npz` `{layer: [hidden]}` or `.npy` `[n_layers, hidden]`."""
    path = Path(path).expanduser()
    check_import_size(path)
    with path.open("rb") as handle:
        magic = handle.read(6)
    if magic.startswith(b"PK\x03\x04"):
        directions, layout = _read_npz(path)
    elif magic == b"\x93NUMPY":
        directions, layout = _read_npy(path)
    else:
        raise VectorFileError(f"{path.name}: not a numpy .npy or .npz file")
    layers, warnings = map_block_outputs(directions, source=path, label="repeng layers", model=model)
    vector = imported_vector(
        layers,
        source_format=f"repeng ({layout})",
        source=path,
        model=model,
        source_layers=sorted(directions),
        layer_mapping="repeng layer i (output of block i) -> layer i+1",
    )
    return vector, warnings


# ---- steering-vectors ---------------------------------------------------------------------------------
def _safetensors_header(path: Path) -> dict:
    check_import_size(path)
    header, _, _ = read_safetensors_header(path, max_file_bytes=MAX_IMPORT_BYTES, kind="safetensors file")
    return header


def looks_like_steering_vectors(path: Path) -> bool:
    """True for a safetensors file of `layer_activations` (not an ActAdd Studio vector)."""
    try:
        header = _safetensors_header(Path(path))
    except VectorFileError:
        return False
    metadata = header.pop("__metadata__", None)
    if isinstance(metadata, dict) and metadata.get("format") == FORMAT_NAME:
        return False
    return bool(header) and all(_SV_KEY.match(k) for k in header)


def read_steering_vectors(
    path: Path | str, *, model: ModelFingerprint | None = None
) -> tuple[SteeringVector, list[str]]:
    """Import steering-vectors' `layer_activations` saved with safetensors (their layer l = our l+1)."""
    from safetensors.torch import load as load_safetensors_bytes

    path = Path(path).expanduser()
    header = _safetensors_header(path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise VectorFileError(f"{path.name}: malformed metadata")
    if metadata.get("format") == FORMAT_NAME:
        raise VectorFileError(f"{path.name}: an ActAdd Studio vector, not steering-vectors activations")
    layer_type = metadata.get("layer_type", "decoder_block")
    if layer_type != "decoder_block":
        raise VectorFileError(
            f"{path.name}: layer_type {str(layer_type)[:40]!r}; only decoder_block activations can be imported"
        )
    if not header:
        raise VectorFileError(f"{path.name}: holds no tensors")
    if len(header) > MAX_LAYER_INDEX:
        raise VectorFileError(f"{path.name}: {len(header)} tensors is too many")
    names: dict[str, int] = {}
    for key, info in header.items():
        index = _layer(key, _SV_KEY, path, "tensor")
        if index in names.values():
            raise VectorFileError(f"{path.name}: layer {index} appears twice")
        if not isinstance(info, dict) or info.get("dtype") not in _SV_DTYPES:
            raise VectorFileError(f"{path.name}: tensor {key!r} must be a float tensor")
        names[key] = index
    try:
        tensors = load_safetensors_bytes(path.read_bytes())
    except Exception as exc:
        raise VectorFileError(f"{path.name}: corrupt safetensors data ({type(exc).__name__})") from exc
    directions = {
        names[key]: as_direction(t.detach().float().numpy(), f"tensor {key!r}", path)
        for key, t in tensors.items()
    }
    layers, warnings = map_block_outputs(
        directions, source=path, label="steering-vectors layers", model=model
    )
    vector = imported_vector(
        layers,
        source_format="steering-vectors (layer_activations, safetensors)",
        source=path,
        model=model,
        source_layers=sorted(directions),
        layer_type=layer_type,
        layer_mapping="steering-vectors layer l (output of decoder block l) -> layer l+1",
    )
    return vector, warnings
