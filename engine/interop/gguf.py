"""llama.cpp control vectors (GGUF), read and written with the `gguf` package.

The format: `general.architecture = "controlvector"`, one float tensor `direction.N` of shape [hidden]
per layer, and the keys `controlvector.model_hint` (the model's architecture, e.g. "llama") and
`controlvector.layer_count` (repeng writes it as uint32, llama.cpp's cvector-generator as int32; both
write the number of direction tensors). llama.cpp's `--control-vector` adds `direction.N` to the
**output of decoder block N** (0-based) at every position, prompt and generated alike.

Our layer l is the *input* of block l (`hidden_states[l]`), i.e. the output of block l-1, so:

    ours l  ->  direction.{l-1}          direction.N  ->  ours N+1

- l = 0 (the embedding output) has no llama.cpp equivalent.
- l = 1 would be `direction.0`, which makes llama.cpp reject the whole file (and then generate
  *unsteered* text with exit code 0), so it is refused too; `skip_invalid_layers` drops both instead.
- A position-wise ActAdd vector `[n, hidden]` is not a direction: llama.cpp would need one `[hidden]`
  vector for every position. It is refused unless converted (mean over positions, or one position).

We also store our own metadata (name, prompts, provenance, fingerprint, ...) under the key
`actadd_studio.vector`, which llama.cpp ignores, so a round trip through GGUF loses nothing
(`gguf_metadata`). Hostile files are bounded before gguf's reader sees them (`gguf_prescan`).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from engine.errors import IncompatibleVectorError, VectorFileError
from engine.fingerprint import ModelFingerprint
from engine.interop import as_direction, check_import_size, imported_vector, map_block_outputs
from engine.interop.gguf_metadata import KEY_OURS, our_metadata, parse_our_metadata
from engine.interop.gguf_prescan import prescan_gguf
from engine.vector import MAX_LAYER_INDEX, SteeringVector

ARCHITECTURE = "controlvector"
KEY_MODEL_HINT = f"{ARCHITECTURE}.model_hint"
KEY_LAYER_COUNT = f"{ARCHITECTURE}.layer_count"
_DIRECTION = re.compile(r"^direction\.(0|[1-9][0-9]{0,5})$")


# ---- export -------------------------------------------------------------------------------------------
def gguf_directions(
    vector: SteeringVector, *, direction: str | int | None = None, skip_invalid_layers: bool = False
) -> tuple[SteeringVector, dict[int, np.ndarray], list[str]]:
    """(the [hidden] vector, {N: direction.N array}, warnings) for a vector, or a clear refusal."""
    warnings: list[str] = []
    label = repr(vector.name) if vector.name else "this vector"
    if vector.is_positional:
        if direction is None:
            raise IncompatibleVectorError(
                f"{label} is a position-wise ActAdd vector (shape {vector.shape}); llama.cpp adds one "
                "[hidden] direction at every position, so it can't be exported as is. Convert it to a "
                "direction first (`library to-direction`, mean over positions or one position), or export "
                "with --direction mean / --direction POSITION"
            )
        position = None if direction == "mean" else int(direction)
        vector = vector.to_direction(position)
        how = "the mean over positions" if position is None else f"position {position}"
        warnings.append(f"{label} was converted to a [hidden] direction ({how}) for llama.cpp")
    layers = vector.layer_ids
    bad = {
        l: (
            "layer 0 is the embedding output, which llama.cpp control vectors can't steer"
            if l == 0
            else "layer 1 would be direction.0, which makes llama.cpp reject the whole file"
        )
        for l in layers
        if l < 2
    }
    if bad and not skip_invalid_layers:
        raise IncompatibleVectorError(
            f"{label} can't be exported to llama.cpp: "
            + "; ".join(bad.values())
            + " (llama.cpp's direction.N "
            "acts on the output of block N, our layer l on its input, so l maps to direction.{l-1}; "
            "use --skip-invalid-layers to drop these layers)"
        )
    if bad:
        warnings.append(f"dropped layers {sorted(bad)} that llama.cpp can't express")
    tensors = {
        l - 1: vector.layers[l].detach().to("cpu").float().numpy().astype(np.float32)
        for l in layers
        if l not in bad
    }
    if not tensors:
        raise IncompatibleVectorError(f"{label} has no layer that llama.cpp can express (it needs l >= 2)")
    return vector, tensors, warnings


def gguf_bytes(
    vector: SteeringVector,
    *,
    direction: str | int | None = None,
    skip_invalid_layers: bool = False,
    model_hint: str | None = None,
    layer_count_type: str = "uint32",
) -> tuple[bytes, list[str]]:
    """The GGUF control-vector file for `vector`, and warnings about what was converted or dropped."""
    import gguf

    vector, tensors, warnings = gguf_directions(
        vector, direction=direction, skip_invalid_layers=skip_invalid_layers
    )
    if layer_count_type not in ("uint32", "int32"):
        raise ValueError("layer_count_type is 'uint32' (repeng) or 'int32' (llama.cpp)")
    hint = (
        model_hint
        if model_hint is not None
        else (vector.fingerprint.architecture if vector.fingerprint else "")
    )
    with tempfile.TemporaryDirectory(prefix="actadd-gguf-") as tmp:
        out = Path(tmp) / "vector.gguf"
        writer = gguf.GGUFWriter(out, ARCHITECTURE)
        writer.add_string(KEY_MODEL_HINT, hint)
        add_count = writer.add_uint32 if layer_count_type == "uint32" else writer.add_int32
        add_count(KEY_LAYER_COUNT, len(tensors))
        writer.add_string(KEY_OURS, our_metadata(vector, tensors))
        for n in sorted(tensors):
            writer.add_tensor(f"direction.{n}", tensors[n])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        data = out.read_bytes()
    return data, warnings


# ---- import ---------------------------------------------------------------------------------------------
_INT_TYPES = ("UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "UINT64", "INT64")


def _scalar(field, path: Path, key: str):
    """(value, type name) of a scalar GGUF field, or (None, None) when absent."""
    if field is None:
        return None, None
    types = [t.name for t in field.types]
    if len(types) != 1 or types[0] == "ARRAY":
        raise VectorFileError(f"{path.name}: {key} must be a single value, found {types}")
    try:
        return field.contents(), types[0]
    except Exception as exc:
        raise VectorFileError(f"{path.name}: {key} is unreadable") from exc


def read_gguf(path: Path | str, *, model: ModelFingerprint | None = None) -> tuple[SteeringVector, list[str]]:
    """Read and validate a llama.cpp control vector; `direction.N` becomes our layer N+1.

    Reports (as warnings) what llama.cpp itself would do wrong with the file: `direction.0` (the whole
    file is rejected), indices past the model (ignored), and indices that look shifted by one.
    """
    import gguf

    path = Path(path).expanduser()
    check_import_size(path)
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise VectorFileError(f"{path.name}: not a GGUF file")
    prescan_gguf(path)
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError, IndexError, struct errors... on bad input
        raise VectorFileError(f"{path.name}: malformed GGUF ({type(exc).__name__}: {exc})"[:300]) from exc
    warnings: list[str] = []

    arch, arch_type = _scalar(reader.get_field("general.architecture"), path, "general.architecture")
    if arch_type != "STRING" or arch != ARCHITECTURE:
        raise VectorFileError(
            f"{path.name}: a GGUF file with architecture {arch!r}, not a llama.cpp control vector "
            f"(architecture {ARCHITECTURE!r})"
        )
    hint, hint_type = _scalar(reader.get_field(KEY_MODEL_HINT), path, KEY_MODEL_HINT)
    if hint_type not in (None, "STRING"):
        raise VectorFileError(f"{path.name}: {KEY_MODEL_HINT} must be a string")
    hint = (hint or "")[:200]
    count, count_type = _scalar(reader.get_field(KEY_LAYER_COUNT), path, KEY_LAYER_COUNT)
    if count_type is None:
        warnings.append(f"{path.name}: no {KEY_LAYER_COUNT} key (llama.cpp doesn't need it)")
    elif count_type not in _INT_TYPES:
        raise VectorFileError(f"{path.name}: {KEY_LAYER_COUNT} must be an integer, found {count_type}")
    elif count_type not in ("UINT32", "INT32"):
        warnings.append(
            f"{path.name}: {KEY_LAYER_COUNT} is {count_type}; repeng writes uint32, llama.cpp int32"
        )
    if count is not None and not 0 < count <= MAX_LAYER_INDEX:
        raise VectorFileError(f"{path.name}: {KEY_LAYER_COUNT} = {count} is out of range")

    if len(reader.tensors) > MAX_LAYER_INDEX:
        raise VectorFileError(f"{path.name}: {len(reader.tensors)} tensors is too many for a control vector")
    directions: dict[int, np.ndarray] = {}
    for tensor in reader.tensors:
        match = _DIRECTION.match(tensor.name)
        if not match:
            raise VectorFileError(
                f"{path.name}: unexpected tensor {tensor.name[:60]!r} (expected direction.N)"
            )
        index = int(match.group(1))
        if index >= MAX_LAYER_INDEX:
            raise VectorFileError(f"{path.name}: {tensor.name} is out of range")
        if index in directions:
            raise VectorFileError(f"{path.name}: {tensor.name} appears twice")
        type_name = getattr(tensor.tensor_type, "name", str(tensor.tensor_type))
        if type_name not in ("F32", "F16"):
            raise VectorFileError(f"{path.name}: {tensor.name} is {type_name}; expected F32 or F16")
        dims = [int(d) for d in tensor.shape]
        if sum(d != 1 for d in dims) > 1 or int(np.prod(dims)) != int(tensor.n_elements):
            raise VectorFileError(f"{path.name}: {tensor.name} has shape {dims}; expected [hidden]")
        try:
            directions[index] = as_direction(np.asarray(tensor.data).reshape(-1), tensor.name, path)
        except (ValueError, TypeError) as exc:
            raise VectorFileError(f"{path.name}: {tensor.name} is unreadable") from exc
    if not directions:
        raise VectorFileError(f"{path.name}: holds no direction.N tensors")
    indices = sorted(directions)

    if 0 in directions:
        warnings.append(
            f"{path.name}: has direction.0, which makes llama.cpp reject the whole file; imported as our "
            "layer 1 (the output of block 0)"
            + (
                f"; the indices 0..{count - 1} look shifted by one (llama.cpp's run 1..{count})"
                if count is not None and indices == list(range(count))
                else ""
            )
        )
    if count is not None and count < len(directions):
        warnings.append(
            f"{path.name}: {KEY_LAYER_COUNT} = {count} but the file has {len(directions)} direction tensors"
        )
    if model is not None and hint and model.architecture and hint != model.architecture:
        warnings.append(f"{path.name}: made for a {hint!r} model, the model is {model.architecture!r}")
    layers, more = map_block_outputs(directions, source=path, label="direction indices", model=model)
    warnings.extend(more)

    ours_text, ours_type = _scalar(reader.get_field(KEY_OURS), path, KEY_OURS)
    ours: dict = {}
    if ours_type == "STRING":
        ours, more = parse_our_metadata(ours_text, sorted(layers), path)
        warnings.extend(more)
    del reader  # drop the memory map

    vector = imported_vector(
        layers,
        source_format="gguf (llama.cpp control vector)",
        source=path,
        model=model,
        restored=ours,
        model_hint=hint,
        layer_count=count,
        layer_count_type=(count_type or "").lower(),
        direction_indices=indices,
        layer_mapping="direction.N -> layer N+1",
    )
    return vector, warnings
