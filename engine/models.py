"""Loading local Hugging Face causal LMs, optionally quantized with bitsandbytes.

`load_model` takes a local folder, a `.gguf` file (converted once into a cached folder:
engine/gguf_convert.py), the word "demo" (the embedded demo model), or a hub id already in the local
cache; there is no network access. Every failure a user can cause is turned into a `ModelLoadError` that
names the file at fault.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from engine.architectures import BlockLayout, find_blocks
from engine.devices import KNOWN_DEVICES, device_map_for, on_accelerator
from engine.errors import ActAddError, ModelLoadError, UnsupportedArchitectureError
from engine.fingerprint import ModelFingerprint, vocab_hash
from engine.model_stats import parameter_count
from engine.resources import resources_dir
from engine.vocab_check import check_vocab_fits

DEMO_MODEL_DIR = resources_dir() / "demo-model"
QUANTIZATIONS = ("none", "8bit", "4bit")
DEVICES = KNOWN_DEVICES  # which of them this machine has: engine.devices.available_devices()
DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# (stage, fraction done in [0, 1]) -> None; called from the loading thread.
ProgressCallback = Callable[[str, float], None]


@dataclass(frozen=True)
class ModelInfo:
    source: str  # what the user asked for (folder, "demo", hub id)
    path: str  # resolved local folder
    architecture: str  # config.model_type
    n_layers: int
    hidden_size: int
    n_params: int
    dtype: str  # dtype of the hidden states, e.g. "float32"
    device: str  # device of the input embeddings, e.g. "cpu" or "cuda:0"
    quantize: str  # one of QUANTIZATIONS
    block_path: str  # where the decoder blocks were found, e.g. "model.layers"
    has_chat_template: bool


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: ModelInfo
    fingerprint: ModelFingerprint
    layout: BlockLayout

    @property
    def blocks(self) -> nn.ModuleList:
        return self.layout.blocks

    @property
    def device(self) -> torch.device:
        weight: torch.Tensor = self.model.get_input_embeddings().weight  # type: ignore[assignment]
        return weight.device


def resolve_source(source: str | Path | None) -> Path:
    """Map "demo"/None, a folder, or a cached hub id to a local folder; a .gguf file maps to itself."""
    if source is None or str(source) == "demo":
        if not (DEMO_MODEL_DIR / "config.json").exists():
            raise ModelLoadError(f"the embedded demo model is missing from {DEMO_MODEL_DIR}")
        return DEMO_MODEL_DIR
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    from engine.gguf_convert import is_gguf

    if is_gguf(path):
        return path
    if path.exists():
        raise ModelLoadError(
            f"{path} is a file but not a GGUF; choose a .gguf file or the model's folder (the one holding config.json)"
        )
    text = str(source)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, local_files_only=True))
        except Exception as exc:
            raise ModelLoadError(f"{text!r} is not a local folder and not in the local model cache") from exc
    raise ModelLoadError(f"no such model folder: {path}")


def _check_regular_files(folder: Path) -> None:
    """Refuse FIFOs, sockets, devices and broken links among the folder's files.

    transformers opens config.json, the tokenizer files and the weights by name; a FIFO under one of those
    names would block the load forever, and a device such as /dev/zero would be read without end.
    """
    for entry in folder.iterdir():
        if not entry.is_dir() and not entry.is_file():
            raise ModelLoadError(f"{entry} is not a regular file (a pipe, a device or a broken link)")


def _read_config(folder: Path) -> dict:
    config_path = folder / "config.json"
    if not config_path.exists():
        raise ModelLoadError(f"{folder} has no config.json; is this a Hugging Face model folder?")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # "[[[[..." recurses
        raise ModelLoadError(f"{config_path} is not valid JSON") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_path} is not a JSON object")
    return config


def _check_remote_code(folder: Path, config: dict, trust_remote_code: bool) -> None:
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if "auto_map" in config and model_type not in CONFIG_MAPPING and not trust_remote_code:
        raise ModelLoadError(
            f"{folder / 'config.json'} asks to run Python code shipped with the model (auto_map); that code "
            "could do anything on this computer, so it is refused unless you turn on trust_remote_code"
        )
    if model_type is None:
        raise UnsupportedArchitectureError(f"{folder / 'config.json'} names no model_type")
    if model_type not in CONFIG_MAPPING and not trust_remote_code:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {model_type!r} in {folder / 'config.json'}: transformers does not know it"
        )


def weight_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return [f for f in files if not f.name.startswith(".")]


def _check_fits_memory(folder: Path, quantize: str, device: str) -> None:
    """Refuse up front a model whose weights clearly exceed the memory available to them."""
    size = sum(f.stat().st_size for f in weight_files(folder))
    needed = size * {"none": 1.0, "8bit": 0.3, "4bit": 0.17}[quantize]
    budget = psutil.virtual_memory().available
    if device in ("cuda", "auto") and torch.cuda.is_available():
        budget = max(budget, sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())))
    if needed > budget:
        raise ModelLoadError(
            f"the weights in {folder} need about {needed / 1e9:.1f} GB at {quantize} quantization, "
            f"but only {budget / 1e9:.1f} GB is free; try 4-bit, a smaller model, or free memory"
        )


def _quantization_config(quantize: str, compute_dtype: torch.dtype):
    if quantize == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        # bitsandbytes warns on every 8-bit matmul that float32 inputs are cast to float16: expected, noisy.
        warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype
    )


def _explain_load_failure(folder: Path, exc: BaseException) -> ModelLoadError:
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, torch.OutOfMemoryError | MemoryError) or "out of memory" in lowered:
        detail = text.splitlines()[0][:200] if text else "the weights do not fit"  # MemoryError() has no text
        return ModelLoadError(f"not enough memory to load {folder.name}: {detail}")
    if "ignore_mismatched_sizes" in lowered or "size mismatch" in lowered:
        files = ", ".join(f.name for f in weight_files(folder)) or "weights"
        return ModelLoadError(
            f"the weights ({files}) in {folder} do not have the shapes that its config.json describes; "
            "the files belong to different models"
        )
    if "offload" in lowered or "dispatched on the cpu or the disk" in lowered:
        return ModelLoadError(f"{folder.name} does not fit in the memory budget (it would need disk offload)")
    if "safetensor" in lowered or "header" in lowered or "incomplete" in lowered or "deserializ" in lowered:
        files = ", ".join(f.name for f in weight_files(folder)) or "weights"
        return ModelLoadError(f"the weights file ({files}) in {folder} is truncated or corrupt")
    if not weight_files(folder):
        return ModelLoadError(f"{folder} has no weights file (*.safetensors or *.bin)")
    return ModelLoadError(
        f"could not load {folder.name}: {type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"
    )


def load_model(
    source: str | Path | None = "demo",
    *,
    quantize: str = "none",
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    max_memory: dict | None = None,
    block_path: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer for steering. See the module docstring for `source`.

    `cancel` stops a GGUF's one-time conversion (CancelledError); a folder loads in one transformers call.
    """
    report = progress or (lambda stage, fraction: None)
    if quantize not in QUANTIZATIONS or device not in DEVICES or dtype not in DTYPES:
        raise ModelLoadError(
            f"quantize must be one of {QUANTIZATIONS}, device one of {DEVICES}, dtype one of {tuple(DTYPES)}"
        )
    device_map = device_map_for(device, quantize, max_memory)  # engine/devices.py: mps, xpu, bitsandbytes
    report("resolving", 0.0)
    folder = resolve_source(source)
    on_gpu = on_accelerator(device_map)
    # A quantized model keeps its embeddings, norms and LM head unquantized; in float32 those alone outweigh
    # the 4-bit blocks of a small model, so quantized loads use bfloat16 on the CPU too.
    torch_dtype = DTYPES[dtype] or (torch.bfloat16 if on_gpu or quantize != "none" else torch.float32)
    gguf_file: Path | None = None
    if folder.is_file():  # a .gguf: convert once (cached), then load the folder like any other
        from engine.gguf_convert import open_gguf

        gguf_file = folder
        folder = open_gguf(folder, torch_dtype, lambda f: report("converting", f), cancel)
    _check_regular_files(folder)  # before anything opens a file: a FIFO would block the open forever
    config = _read_config(folder)
    _check_remote_code(folder, config, trust_remote_code)
    if max_memory is None:
        _check_fits_memory(folder, quantize, device)

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from engine.fused_ops import fuse_activations

    try:  # the tokenizer loader parses config.json too, and would take the blame for a bad value in it
        AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code, local_files_only=True)
    except Exception as exc:
        detail = (str(exc) or type(exc).__name__).splitlines()[0][:200]
        raise ModelLoadError(f"{folder / 'config.json'} has an invalid value: {detail}") from exc
    report("tokenizer", 0.1)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            folder, trust_remote_code=trust_remote_code, local_files_only=True
        )
    except Exception as exc:
        raise ModelLoadError(
            f"could not load the tokenizer files in {folder}: {(str(exc) or type(exc).__name__).splitlines()[0][:200]}"
        ) from exc
    # Without any tokenizer file, transformers quietly builds an empty tokenizer (one token), and every
    # prompt would become a single token and every output empty text.
    if len(tokenizer) < 64 and not any(
        (folder / name).exists() for name in ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
    ):
        raise ModelLoadError(
            f"{folder} has no tokenizer file (tokenizer.json, tokenizer.model or vocab.json); "
            "the download may be incomplete"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token

    report("weights", 0.2)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=torch_dtype,
            device_map=device_map,
            max_memory=max_memory,
            quantization_config=_quantization_config(quantize, torch_dtype),
            trust_remote_code=trust_remote_code,
            local_files_only=True,
        )
    except ActAddError:
        raise
    except Exception as exc:
        gc.collect()
        raise _explain_load_failure(folder, exc) from exc
    if "disk" in set(getattr(model, "hf_device_map", {}).values()):
        del model
        gc.collect()
        raise ModelLoadError(
            f"{folder.name} does not fit in the memory budget: part of it would be offloaded to disk, "
            "which is too slow to use; try 4-bit, a smaller model, or more memory"
        )
    model.eval()
    fuse_activations(model)  # same function, one kernel: see engine/fused_ops.py
    if quantize != "none":
        release_freed_heap()  # converting the weights freed more than the model keeps
    report("checking", 0.9)

    layout = find_blocks(model, block_path)
    embed_rows = int(model.get_input_embeddings().weight.shape[0])  # type: ignore[index]
    check_vocab_fits(tokenizer, embed_rows, folder)  # refuses only ids that ordinary text can reach
    model_type = config.get("model_type", "unknown")
    fingerprint = ModelFingerprint(
        architecture=model_type,
        hidden_size=layout.hidden_size,
        n_layers=len(layout.blocks),
        vocab_hash=vocab_hash(tokenizer),
        model_hint="demo" if folder == DEMO_MODEL_DIR else (gguf_file.stem if gguf_file else folder.name),
    )
    embeddings = model.get_input_embeddings().weight
    info = ModelInfo(
        source=str(source) if source is not None else "demo",
        path=str(folder),
        architecture=model_type,
        n_layers=len(layout.blocks),
        hidden_size=layout.hidden_size,
        n_params=parameter_count(model),  # logical count: 4-bit weights pack two per byte
        dtype=str(torch_dtype).removeprefix("torch."),
        device=str(embeddings.device),
        quantize=quantize,
        block_path=layout.path,
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
    )
    report("ready", 1.0)
    return LoadedModel(model=model, tokenizer=tokenizer, info=info, fingerprint=fingerprint, layout=layout)


def release_freed_heap() -> None:
    """Give heap that Python and torch have freed back to the OS (glibc keeps it otherwise).

    Loading a 360M-parameter model in 4-bit on the CPU frees ~1 GB of float weights after quantizing them;
    without this the process keeps it resident for good.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        pass


def unload(loaded: LoadedModel | None) -> None:
    """Drop a model and give its memory back (as far as Python and CUDA allow)."""
    if loaded is None:
        return
    loaded.model = None  # type: ignore[assignment]
    gc.collect()
    release_freed_heap()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def memory_report(loaded: LoadedModel | None = None) -> dict[str, float]:
    """Resident memory of this process, the model's weights, and CUDA memory, in MB."""
    report = {"rss_mb": psutil.Process(os.getpid()).memory_info().rss / 2**20}
    if loaded is not None and loaded.model is not None:
        report["weights_mb"] = loaded.model.get_memory_footprint() / 2**20
    if torch.cuda.is_available():
        report["vram_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
        report["vram_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
    return report
