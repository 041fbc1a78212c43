"""Where each model family keeps its decoder blocks.

ActAdd reads and writes the residual stream at the *input* of decoder block `l` ("resid_pre"), so all the
engine needs from a model is its ordered list of blocks. This table maps Hugging Face `model_type`s to the
attribute path of that list; `find_blocks` also tries every known path as a fallback and accepts an
explicit override for families not listed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from engine.errors import UnsupportedArchitectureError

# model_type -> dotted path from the *CausalLM model object to its nn.ModuleList of decoder blocks.
BLOCK_PATHS: dict[str, str] = {
    "gpt2": "transformer.h",
    "gptj": "transformer.h",
    "gpt_bigcode": "transformer.h",
    "falcon": "transformer.h",
    "bloom": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "opt": "model.decoder.layers",
    "llama": "model.layers",
    "mistral": "model.layers",
    "mixtral": "model.layers",
    "qwen2": "model.layers",
    "qwen2_moe": "model.layers",
    "qwen3": "model.layers",
    "qwen3_moe": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "gemma3": "model.language_model.layers",
    "phi": "model.layers",
    "phi3": "model.layers",
    "stablelm": "model.layers",
    "olmo": "model.layers",
    "olmo2": "model.layers",
    "granite": "model.layers",
    "cohere": "model.layers",
    "starcoder2": "model.layers",
}

# Tried in order when the model_type is not in the table (e.g. a fine-tune with a custom type name).
FALLBACK_PATHS: tuple[str, ...] = (
    "model.layers",
    "model.language_model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
    "transformer.layers",
    "layers",
)


@dataclass(frozen=True)
class BlockLayout:
    """The decoder blocks of one model and the path they were found at."""

    path: str  # dotted attribute path, e.g. "model.layers"
    blocks: nn.ModuleList  # the decoder blocks, block l consumes resid_pre[l]
    hidden_size: int  # width of the residual stream


def _resolve(model: nn.Module, path: str) -> nn.ModuleList | None:
    obj: object = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.ModuleList) and len(obj) > 0 else None


def hidden_size_of(config: object) -> int:
    """The residual width from a transformers config, looking into `text_config` for multimodal ones."""
    text_config = getattr(config, "text_config", None) or config
    for key in ("hidden_size", "n_embd", "d_model", "word_embed_proj_dim"):
        value = getattr(text_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise UnsupportedArchitectureError(
        f"cannot tell the hidden size of model type {getattr(config, 'model_type', '?')!r}: "
        "its config has none of hidden_size, n_embd, d_model"
    )


def find_blocks(model: nn.Module, override: str | None = None) -> BlockLayout:
    """Find the decoder blocks of `model`; `override` is a dotted path that takes precedence."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "unknown")
    candidates = [override] if override else [BLOCK_PATHS.get(model_type), *FALLBACK_PATHS]
    for path in candidates:
        if path and (blocks := _resolve(model, path)) is not None:
            return BlockLayout(path=path, blocks=blocks, hidden_size=hidden_size_of(config))
    looked = ", ".join(p for p in candidates if p)
    raise UnsupportedArchitectureError(
        f"unsupported architecture {model_type!r} ({type(model).__name__}): no list of decoder blocks "
        f"at {looked}; pass an explicit block path to override"
    )


def context_limit(config: Any) -> int | None:
    """The longest sequence a model's positions cover (prompt + generated tokens), if its config says."""
    config = getattr(config, "text_config", None) or config  # multimodal configs nest the text model's
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        if isinstance(value := getattr(config, key, None), int) and value > 0:
            return value
    return None
