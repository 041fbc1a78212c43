"""ActAdd Studio's engine: steering local language models with activation addition. No Qt in here.

The public API, in the order of a session::

    loaded = load_model("demo")                 # or a folder or a .gguf file, quantize="4bit"
    love = capture_actadd(loaded, "Love", "Hate", layers=0)       # [n_tokens, hidden] per layer
    result = generate(loaded, "I think that", [[], [Steer(love, 8.0)]], SamplingConfig.paper())
    save_vector(love, "love-hate.safetensors")
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.capture import capture_actadd, capture_mean_diff, capture_pca, pair_differences, resid_pre
    from engine.devices import available_devices
    from engine.errors import (
        ActAddError,
        AlreadyExistsError,
        CancelledError,
        IncompatibleVectorError,
        InvalidInputError,
        LibraryError,
        ModelLoadError,
        UnsupportedArchitectureError,
        VectorFileError,
    )
    from engine.fingerprint import ModelFingerprint
    from engine.generation import GenerationResult, RowResult, SamplingConfig, TokenEvent, generate
    from engine.model_store import ModelEntry, list_models, remember_recent
    from engine.models import DEMO_MODEL_DIR, LoadedModel, ModelInfo, load_model, memory_report, unload
    from engine.pairs import PromptPair, read_pairs
    from engine.steering import Steer, SteeringPlan, hook_count
    from engine.tokens import align_pair, alignment_preview, bos_rule, encode, space_token_id
    from engine.vector import SteeringVector, check_fits, combine, load_vector, read_header, save_vector

# Each public name -> the module that defines it. Imported on first use (PEP 562), so that `import engine`
# (and every `engine.*` submodule, which imports the package first) stays cheap: the CLI's `models` and
# `--help` never need torch or transformers, which take ~10 s to import on a busy machine.
_EXPORTS = {
    "capture_actadd": "engine.capture",
    "capture_mean_diff": "engine.capture",
    "capture_pca": "engine.capture",
    "pair_differences": "engine.capture",
    "resid_pre": "engine.capture",
    "available_devices": "engine.devices",
    "ActAddError": "engine.errors",
    "AlreadyExistsError": "engine.errors",
    "CancelledError": "engine.errors",
    "IncompatibleVectorError": "engine.errors",
    "InvalidInputError": "engine.errors",
    "LibraryError": "engine.errors",
    "ModelLoadError": "engine.errors",
    "UnsupportedArchitectureError": "engine.errors",
    "VectorFileError": "engine.errors",
    "ModelFingerprint": "engine.fingerprint",
    "GenerationResult": "engine.generation",
    "RowResult": "engine.generation",
    "SamplingConfig": "engine.generation",
    "TokenEvent": "engine.generation",
    "generate": "engine.generation",
    "ModelEntry": "engine.model_store",
    "list_models": "engine.model_store",
    "remember_recent": "engine.model_store",
    "DEMO_MODEL_DIR": "engine.models",
    "LoadedModel": "engine.models",
    "ModelInfo": "engine.models",
    "load_model": "engine.models",
    "memory_report": "engine.models",
    "unload": "engine.models",
    "PromptPair": "engine.pairs",
    "read_pairs": "engine.pairs",
    "Steer": "engine.steering",
    "SteeringPlan": "engine.steering",
    "hook_count": "engine.steering",
    "align_pair": "engine.tokens",
    "alignment_preview": "engine.tokens",
    "bos_rule": "engine.tokens",
    "encode": "engine.tokens",
    "space_token_id": "engine.tokens",
    "SteeringVector": "engine.vector",
    "check_fits": "engine.vector",
    "combine": "engine.vector",
    "load_vector": "engine.vector",
    "read_header": "engine.vector",
    "save_vector": "engine.vector",
}


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__version__ = "0.1.0"

__all__ = [
    "DEMO_MODEL_DIR",
    "ActAddError",
    "AlreadyExistsError",
    "CancelledError",
    "GenerationResult",
    "IncompatibleVectorError",
    "InvalidInputError",
    "LibraryError",
    "LoadedModel",
    "ModelEntry",
    "ModelFingerprint",
    "ModelInfo",
    "ModelLoadError",
    "PromptPair",
    "RowResult",
    "SamplingConfig",
    "Steer",
    "SteeringPlan",
    "SteeringVector",
    "TokenEvent",
    "UnsupportedArchitectureError",
    "VectorFileError",
    "__version__",
    "align_pair",
    "alignment_preview",
    "available_devices",
    "bos_rule",
    "capture_actadd",
    "capture_mean_diff",
    "capture_pca",
    "check_fits",
    "combine",
    "encode",
    "generate",
    "hook_count",
    "list_models",
    "load_model",
    "load_vector",
    "memory_report",
    "pair_differences",
    "read_header",
    "read_pairs",
    "remember_recent",
    "resid_pre",
    "save_vector",
    "space_token_id",
    "unload",
]
