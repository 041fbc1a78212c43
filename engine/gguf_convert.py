"""Opening a `.gguf` file: one clear check, then a one-time streaming conversion to a safetensors folder.

transformers can load a GGUF itself (`from_pretrained(folder, gguf_file=...)`), but it dequantizes the whole
file into float32 tensors held in memory at once (a 7B Q4 file needs ~28 GB), and it refuses a
`quantization_config` beside `gguf_file`, so bitsandbytes 4/8-bit can't be applied. Instead the file is
converted once, tensor by tensor, into a cached folder (config.json, tokenizer files, model.safetensors) in
the chosen dtype; loading then takes the ordinary folder path, with any quantization.

Everything GGUF-specific comes from transformers itself: the config (`load_gguf_checkpoint`'s dict, made
into a config as `AutoConfig` does), the tokenizer (`AutoTokenizer` with `gguf_file`), the supported architectures, the GGUF->HF tensor names
(`get_gguf_hf_weights_map`) and the per-architecture fixes (`TENSOR_PROCESSORS`: llama's q/k permutes,
GPT-2's transposes, Gemma's norm offsets). Dequantizing is `gguf.quants.dequantize`, as in transformers,
then a cast to the dtype, so in float32 the weights are bit for bit what transformers' own GGUF load gives.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import shutil
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine import model_cache
from engine.errors import ActAddError, CancelledError, ModelLoadError, UnsupportedArchitectureError
from engine.gguf_header import (
    GGUFHeader,
    TensorEntry,
    gguf_openability,
    is_gguf_file,
    openable_gguf_architectures,
)

# fraction done in [0, 1] -> None; called from the converting thread
ConvertProgress = Callable[[float], None]

_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def is_gguf(path: Path) -> bool:
    """A regular file named *.gguf, or one that begins with the GGUF magic (Ollama's blobs have no suffix)."""
    return path.is_file() and (path.suffix.lower() == ".gguf" or is_gguf_file(path))


def supported_architectures() -> list[str]:
    """The GGUF architectures this app opens, as transformers lists them (engine.gguf_header)."""
    return list(openable_gguf_architectures())


@dataclass(frozen=True)
class GgufFile:
    """What the checks learnt from a file's header: enough to convert it without parsing it again."""

    path: Path
    architecture: str  # general.architecture as written in the file
    header: GGUFHeader  # its metadata and tensor table
    tensors: list[TensorEntry]  # the table as the converter reads it
    config: dict  # transformers' config dict for it (load_gguf_checkpoint(return_tensors=False)["config"])


def check_gguf(path: Path) -> GgufFile:
    """Refuse anything but a whole causal LM of a supported architecture, with one clear line.

    The verdict is `engine.gguf_header.gguf_openability`, the rule the model listing shows too; a refusal
    names the file's architecture and the supported list. Raises ModelLoadError / UnsupportedArchitectureError.
    """
    check = gguf_openability(path)
    architecture = check.architecture or "unknown"
    if not check.ok or check.header is None:
        reason = (check.reason or f"{path.name} can't be opened").rstrip(".")
        if check.header is None:  # not a readable GGUF at all: there is no architecture to name
            raise ModelLoadError(reason)
        supported = ", ".join(supported_architectures())
        detail = "" if "supported:" in reason else f"; GGUF architectures it opens: {supported}"
        raise UnsupportedArchitectureError(f"{reason} (architecture {architecture!r}){detail}")

    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:  # transformers' own reader: it applies its architecture renames (qwen2moe -> qwen2_moe ...)
        parsed = load_gguf_checkpoint(str(path), return_tensors=False)
    except Exception as exc:
        raise UnsupportedArchitectureError(
            f"{path.name} has architecture {architecture!r}, which transformers cannot read from GGUF; "
            f"GGUF architectures it opens: {', '.join(supported_architectures())}"
        ) from exc
    return GgufFile(path, architecture, check.header, check.header.tensor_table(), parsed["config"])


def _drop_pages(blob: np.memmap) -> None:
    """Let the kernel drop the file pages read so far from this process's resident set.

    The file is memory-mapped whole; pages that were read count toward RSS until unmapped, so without this
    a streaming conversion would still end up "holding" the whole file.
    """
    mapped = getattr(blob, "_mmap", None)
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):
            mapped.madvise(mmap.MADV_DONTNEED)


def _dequantize(blob: np.memmap, info: TensorEntry) -> np.ndarray:
    """One tensor as float32 numpy in torch order, exactly as `gguf.quants.dequantize` gives it.

    Dequantized in slices of rows, into one output array: the K-quant kernels make several temporaries the
    size of their input, which for a 262k-row embedding would be gigabytes at once.
    """
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, dequantize

    qtype = info.qtype
    raw = blob[info.offset : info.offset + info.nbytes]
    shape = tuple(info.shape) or (1,)
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        data = raw.view(np.float32 if qtype == GGMLQuantizationType.F32 else np.float16).reshape(shape)
    else:  # the layout gguf's reader gives: [..., bytes per row]
        block, type_size = GGML_QUANT_SIZES[qtype]
        data = raw.reshape(*shape[:-1], shape[-1] // block * type_size)
    if data.ndim < 2:
        return np.array(dequantize(data, qtype), dtype=np.float32, copy=True).reshape(info.shape)
    out = np.empty(shape, dtype=np.float32)
    step = max(1, (8 << 20) // max(1, int(np.prod(shape[1:]))))  # ~8M values (32 MB) a slice
    for begin in range(0, shape[0], step):
        out[begin : begin + step] = dequantize(data[begin : begin + step], qtype)
    return out.reshape(info.shape)


def _owned(array: np.ndarray) -> torch.Tensor:
    """A tensor over `array`, copied only when it isn't already a writable contiguous array of our own."""
    if not (array.flags.writeable and array.flags.c_contiguous):
        array = np.array(array, order="C", copy=True)
    return torch.from_numpy(array)


class _SafetensorsStream:
    """Write tensors one at a time into a single model.safetensors, holding none of them.

    safetensors puts its JSON header (every name, shape and offset) before the data, and has no streaming
    writer, so the data goes to a side file first and is copied behind the header at the end.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data_path = folder / "model.safetensors.data"
        self.data = self.data_path.open("wb")
        self.header: dict[str, dict] = {}
        self.offset = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self.header:
            raise ModelLoadError(f"the GGUF maps two tensors onto {name}")
        raw = tensor.contiguous().view(torch.uint8).numpy()  # little-endian bytes, [numel * itemsize]
        self.data.write(raw.data)
        end = self.offset + raw.nbytes
        self.header[name] = {
            "dtype": _SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [self.offset, end],
        }
        self.offset = end

    def finish(self) -> None:
        self.data.close()
        header = json.dumps({"__metadata__": {"format": "pt"}, **self.header}, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)  # the spec allows space padding; 8-byte alignment for the data
        with (self.folder / "model.safetensors").open("wb") as out, self.data_path.open("rb") as data:
            out.write(struct.pack("<Q", len(header)))
            out.write(header)
            shutil.copyfileobj(data, out, 16 << 20)
        self.data_path.unlink()


def _write_config_and_tokenizer(source: GgufFile, folder: Path):
    from transformers import CONFIG_MAPPING, AutoTokenizer

    # What AutoConfig.from_pretrained(gguf_file=...) does with the same dict, without parsing the file again.
    config = CONFIG_MAPPING[source.config["model_type"]].from_dict(dict(source.config))
    tokenizer = AutoTokenizer.from_pretrained(
        source.path.parent, gguf_file=source.path.name, local_files_only=True
    )
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return config


def _convert_weights(
    source: GgufFile, config, dtype: torch.dtype, folder: Path, report: ConvertProgress, cancel
) -> None:
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    # The steps of load_gguf_checkpoint(return_tensors=True), in its order, one tensor at a time.
    parsed: dict = {"config": dict(source.config), "tensors": {}}  # processors may park tensors here
    processor = TENSOR_PROCESSORS.get(source.architecture, TensorProcessor)(config=parsed["config"])
    with torch.device("meta"):  # only the parameter names are needed: no memory
        skeleton = AutoModelForCausalLM.from_config(config)
    names = get_gguf_hf_weights_map(skeleton, processor)
    del skeleton

    blob = np.memmap(source.path, mode="r", dtype=np.uint8)
    out = _SafetensorsStream(folder)
    total = sum(t.nbytes for t in source.tensors) or 1
    done = 0
    try:
        for info in source.tensors:
            if cancel is not None and cancel.is_set():
                raise CancelledError(f"opening {source.path.name} was cancelled")
            weights = _dequantize(blob, info)
            result = processor.process(
                weights=weights, name=info.name, tensor_key_mapping=names, parsed_parameters=parsed
            )
            if result.name in names:
                out.add(names[result.name], _owned(result.weights).to(dtype))
            del weights, result
            _drop_pages(blob)
            done += info.nbytes
            report(done / total)
        for name, parked in parsed["tensors"].items():
            out.add(name, parked.to(dtype))
        parsed["tensors"].clear()
        out.finish()
    finally:
        if not out.data.closed:
            out.data.close()
        del blob


class _FromCallback(Exception):
    """Carries an exception raised by the caller's progress callback through the conversion unchanged."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def open_gguf(
    path: Path,
    dtype: torch.dtype = torch.float32,
    progress: ConvertProgress | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """The cached safetensors folder for this GGUF in `dtype`, converting it first if needed."""
    callback = progress or (lambda fraction: None)

    def report(fraction: float) -> None:
        try:
            callback(fraction)
        except BaseException as exc:  # e.g. the GUI's own "cancelled" exception: the caller's, not ours
            raise _FromCallback(exc) from exc

    if dtype not in _SAFETENSORS_DTYPES:
        raise ModelLoadError(f"a GGUF can be opened in float32, float16 or bfloat16, not {dtype}")
    dtype_name = str(dtype).removeprefix("torch.")
    entry = model_cache.entry_dir(path, dtype_name)
    if (entry / "model.safetensors").is_file() and (entry / "config.json").is_file():
        model_cache.touch(entry)
        callback(1.0)
        return entry
    source = check_gguf(path)
    _check_disk_space(path, source, dtype)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.parent / f".tmp-{entry.name}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        config = _write_config_and_tokenizer(source, tmp)
        _convert_weights(source, config, dtype, tmp, report, cancel)
        (tmp / "source.json").write_text(
            json.dumps({"gguf": str(path.resolve()), "size": path.stat().st_size, "dtype": dtype_name}),
            encoding="utf-8",
        )
        model_cache.touch(tmp)
        try:
            tmp.rename(entry)  # atomic: a folder is either complete or absent
        except OSError:
            if not (entry / "model.safetensors").is_file():  # another process finished first: use theirs
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as exc:  # cancelled, interrupted or failed: leave no half-written folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, _FromCallback):
            raise exc.error from None
        if isinstance(exc, ActAddError) or not isinstance(exc, Exception):
            raise
        if isinstance(exc, OSError):
            raise ModelLoadError(
                f"could not write the converted copy of {path.name} in {entry.parent}: {exc}"
            ) from exc
        detail = (str(exc) or type(exc).__name__).splitlines()[0][:200]
        raise ModelLoadError(f"could not convert {path.name}: {type(exc).__name__}: {detail}") from exc
    model_cache.evict(keep=entry)
    return entry


def _check_disk_space(path: Path, source: GgufFile, dtype: torch.dtype) -> None:
    n_elements = sum(math.prod(t.shape) for t in source.tensors)
    needed = 2 * n_elements * torch.empty((), dtype=dtype).element_size()  # side file + final file
    root = model_cache.converted_dir()
    probe = root
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise ModelLoadError(
            f"opening {path.name} needs about {needed / 1e9:.1f} GB free in {root} for a one-time conversion, "
            f"but only {free / 1e9:.1f} GB is free; set ACTADD_CACHE to a folder on a larger disk"
        )
