"""Model fingerprints: what a vector records about the model it was captured on.

Two models share a residual basis only if they have the same weights; we can't hash multi-GB weights on
every load, so the fingerprint combines the architecture, the residual width, the depth and a hash of the
tokenizer vocabulary. The hidden size decides hard compatibility; the rest is a strong hint that a vector
was made on this family of checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


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

    @classmethod
    def from_dict(cls, data: dict) -> ModelFingerprint:
        return cls(
            architecture=str(data["architecture"]),
            hidden_size=int(data["hidden_size"]),
            n_layers=int(data["n_layers"]),
            vocab_hash=str(data["vocab_hash"]),
            model_hint=str(data.get("model_hint", "")),
        )


def vocab_hash(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
