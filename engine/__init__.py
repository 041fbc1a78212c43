"""ActAdd Studio's engine: steering local language models with activation addition. No Qt in here.

The public API, in the order of a session::

    loaded = load_model("demo")                 # or a folder or a .gguf file, quantize="4bit"
    love = capture_actadd(loaded, "Love", "Hate", layers=0)       # [n_tokens, hidden] per layer
    result = generate(loaded, "I think that", [[], [Steer(love, 8.0)]], SamplingConfig.paper())
    save_vector(love, "love-hate.safetensors")
"""

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
