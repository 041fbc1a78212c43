"""Model fingerprints: what a vector records about the model it was captured on.

Two models share a residual basis only if they have the same weights; we can't hash multi-GB weights on
every load, so the fingerprint combines the architecture, the residual width, the depth and a hash of the
tokenizer vocabulary. The hidden size decides hard compatibility; the rest is a strong hint that a vector
was made on this family of checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


@dataclass(frozen=True)
class ModelFingerprint:
    architecture: str  # HF model_type, e.g. "llama"
    hidden_size: int  # residual width d
    n_layers: int  # number of decoder blocks
    vocab_hash: str  # sha256 (first 16 hex) of the sorted tokenizer vocabulary
    model_hint: str = ""  # a human-readable name (folder name or hub id); not part of the identity

    @property
    def id(self) -> str:
        """Short stable identity; the hint is excluded so renaming a folder keeps compatibility."""
        key = f"{self.architecture}|{self.hidden_size}|{self.n_layers}|{self.vocab_hash}"
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def same_model(self, other: ModelFingerprint | None) -> bool:
        return other is not None and self.id == other.id

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description, with the id (used by `--json` and the GUI)."""
        return {
            "id": self.id,
            "architecture": self.architecture,
            "hidden_size": self.hidden_size,
            "n_layers": self.n_layers,
            "vocab_hash": self.vocab_hash,
            "model_hint": self.model_hint,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelFingerprint:
        return cls(
            architecture=str(data["architecture"]),
            hidden_size=int(data["hidden_size"]),
            n_layers=int(data["n_layers"]),
            vocab_hash=str(data["vocab_hash"]),
            model_hint=str(data.get("model_hint", "")),
        )


class Compatibility(str, Enum):
    OK = "ok"
    OTHER_MODEL = "other-model"  # same width, another fingerprint: usable only with an explicit override
    INCOMPATIBLE = "incompatible"  # other width or layers past the model's depth: never usable


def compatibility(
    hidden_size: int, layers: Sequence[int], recorded: ModelFingerprint | None, model: ModelFingerprint
) -> tuple[Compatibility, str]:
    """Whether a vector fits a model, and why: the one rule (`vector.check_fits`, the library, the GUI).

    A vector is a point in the residual basis of the model it was captured on, so its width must be the
    model's hidden size and its layers must exist; a vector from another model of the same width may
    still steer, but only when the caller says so explicitly.
    """
    if hidden_size != model.hidden_size:
        return Compatibility.INCOMPATIBLE, f"hidden size {hidden_size}, the model has {model.hidden_size}"
    if bad := [l for l in layers if l >= model.n_layers]:
        return Compatibility.INCOMPATIBLE, f"uses layer {bad[0]}, the model has {model.n_layers} layers"
    if recorded is None:
        return Compatibility.OK, "no model recorded (imported); hidden size and layers fit"
    if recorded.same_model(model):
        return Compatibility.OK, "captured on this model"
    other = recorded.model_hint or recorded.id
    return (
        Compatibility.OTHER_MODEL,
        f"captured on another model ({other}); same hidden size, usable only with an explicit override",
    )


def vocab_hash(tokenizer: Any) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
