"""One row of the model list from headers only: a `.gguf` file or a Hugging Face folder, never its weights.

A GGUF row comes from `engine.gguf_header.gguf_openability`; a folder row from `config.json` and the
safetensors headers (8 bytes of length and a JSON table of shapes). GGUF headers with large vocabularies
take ~0.1 s each to walk, so their verdicts are kept in a small JSON cache keyed by path, size and mtime
(`$ACTADD_CACHE`, else the user cache folder: engine/app_dirs.py): a second listing reads no header it has seen.
A verdict depends on the installed transformers too (which architectures it reads from GGUF), so the cache
records that version and starts empty under another one.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from stat import S_ISREG

from engine import app_dirs
from engine.atomic import atomic_write_text
from engine.gguf_header import gguf_openability
from engine.transformers_tables import transformers_tables, transformers_version

MAX_CACHE_ENTRIES = 4000
CACHE_FORMAT = 2  # 1 was a bare {key: fields} map, not tied to a transformers version


@dataclass(frozen=True)
class ModelEntry:
    """A model found on this machine. `path` is what `--model` (or the Model tab) takes."""

    name: str  # e.g. "llama3.2:1b", "HuggingFaceTB/SmolLM2-135M-Instruct", "lmstudio-community/x/y.Q4_K_M"
    source: str  # one of engine.model_store.SOURCES
    path: str
    format: str  # "gguf" or "folder"
    architecture: str | None
    n_params: int | None
    quantization: str | None  # GGUF type (Q4_K_M), bitsandbytes/GPTQ method, or the folder's dtype
    size_bytes: int
    openable: bool
    reason: str | None  # why not, when not openable

    def to_json(self) -> dict:
        return asdict(self)


def cache_dir() -> Path:
    return app_dirs.cache_root()


class HeaderCache:
    """GGUF verdicts by (path, size, mtime) under one transformers version; loaded once, written back
    atomically when something changed. File: {"format", "transformers", "entries": {key: fields}}."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.entries, self.dirty = path, {}, False
        self.transformers = transformers_version()
        if path is not None:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                data = None  # missing or damaged: rebuilt from the headers
            if (
                isinstance(data, dict)
                and data.get("format") == CACHE_FORMAT
                and data.get("transformers") == self.transformers
                and isinstance(data.get("entries"), dict)
            ):
                self.entries = data["entries"]  # else stale (another transformers, an older layout)

    def gguf_row(self, file: Path, name: str, source: str, size: int) -> ModelEntry:
        try:
            stat = file.stat()
            key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        except OSError as exc:
            return _unreadable(name, source, file, f"{file.name} can't be read: {exc.strerror or exc}")
        if not S_ISREG(stat.st_mode):  # opening a FIFO would block the listing for good
            return _unreadable(name, source, file, f"{file.name} is not a regular file (a pipe or a device)")
        fields = self.entries.get(key)
        if not (isinstance(fields, dict) and {"ok", "reason", "arch", "quant", "params"} <= set(fields)):
            check = gguf_openability(file)
            fields = {
                "ok": check.ok,
                "reason": check.reason,
                "arch": check.architecture,
                "quant": check.quant_type,
                "params": check.n_params,
            }
            self.entries[key], self.dirty = fields, True
        return ModelEntry(
            name=name,
            source=source,
            path=str(file),
            format="gguf",
            architecture=fields["arch"],
            n_params=fields["params"],
            quantization=fields["quant"],
            size_bytes=size,
            openable=bool(fields["ok"]),
            reason=fields["reason"],
        )

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        entries = dict(list(self.entries.items())[-MAX_CACHE_ENTRIES:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = {"format": CACHE_FORMAT, "transformers": self.transformers, "entries": entries}
            atomic_write_text(self.path, json.dumps(data))
        except OSError:
            pass  # a cache that can't be written only costs time next listing


def _unreadable(name: str, source: str, path: Path, reason: str, fmt: str = "gguf") -> ModelEntry:
    return ModelEntry(name, source, str(path), fmt, None, None, None, 0, False, reason)


def _safetensors_params(files: list[Path]) -> int | None:
    """Sum of the tensors' element counts, from the safetensors headers only."""
    total = 0
    for file in files:
        try:
            with open(file, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n > 100 * 2**20:
                    return None
                header = json.loads(f.read(n))
        except (OSError, ValueError, struct.error, RecursionError):
            return None
        for key, info in header.items():
            if key != "__metadata__" and isinstance(info, dict) and isinstance(info.get("shape"), list):
                count = 1
                for d in info["shape"]:
                    count *= int(d)
                total += count
    return total


def folder_row(folder: Path, name: str, source: str, size: int | None = None) -> ModelEntry:
    """A Hugging Face model folder, judged from config.json and its weight files' names and headers."""
    config_path = folder / "config.json"
    try:
        weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        if size is None:
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    except OSError as exc:
        return _unreadable(name, source, folder, f"{folder} can't be read: {exc.strerror or exc}", "folder")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not an object")
    except (OSError, ValueError, RecursionError) as exc:
        why = f"{config_path} is missing or not valid JSON ({type(exc).__name__})"
        return ModelEntry(name, source, str(folder), "folder", None, None, None, size, False, why)
    model_type = config.get("model_type") if isinstance(config.get("model_type"), str) else None
    quant = config.get("quantization_config")
    dtype = config.get("dtype") or config.get("torch_dtype")
    quantization = (
        quant.get("quant_method") if isinstance(quant, dict) else dtype if isinstance(dtype, str) else None
    )
    tables = transformers_tables()
    known, causal = tables.model_types, tables.causal_lm_types
    names: list = config.get("architectures") or []
    names = names if isinstance(names, list) else []
    reason = None
    if model_type is None:
        reason = "config.json names no model_type"
    elif model_type not in known:
        reason = f"architecture {model_type!r} is unknown to transformers" + (
            " (it ships its own code: needs trust_remote_code)" if "auto_map" in config else ""
        )
    elif model_type not in causal and not any(str(n).endswith(("ForCausalLM", "LMHeadModel")) for n in names):
        reason = f"a {model_type!r} model is not a causal language model"
    elif not weights:
        reason = "no weights file (*.safetensors or *.bin)"
    params = _safetensors_params(weights) if weights and weights[0].suffix == ".safetensors" else None
    return ModelEntry(
        name, source, str(folder), "folder", model_type, params, quantization, size, reason is None, reason
    )
