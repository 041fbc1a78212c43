"""Our own metadata inside a llama.cpp control vector: name, prompts, provenance, fingerprint, ... as JSON
under the key `actadd_studio.vector`, which llama.cpp ignores, so a round trip through GGUF loses nothing.

Written by `gguf_bytes`; read back by `read_gguf` only where it matches the file's tensors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from engine.fingerprint import ModelFingerprint
from engine.vector import MAX_METADATA_VALUE_BYTES, METHODS, MODES, SteeringVector

KEY_OURS = "actadd_studio.vector"


def our_metadata(vector: SteeringVector, tensors: dict[int, np.ndarray]) -> str:
    fp = vector.fingerprint
    return json.dumps(
        {
            "format": "actadd-studio/vector",
            "name": vector.name,
            "method": vector.method,
            "default_coeff": float(vector.default_coeff),
            "default_mode": vector.default_mode,
            "fingerprint": json.loads(fp.to_json()) if fp else None,
            "prompts": vector.prompts,
            "provenance": vector.provenance,
            "tags": list(vector.tags),
            "notes": vector.notes,
            "created": vector.created,
            "layers": sorted(n + 1 for n in tensors),
            "layer_mapping": "direction.N = our layer N+1 (llama.cpp adds direction.N to block N's output)",
        },
        ensure_ascii=False,
        default=str,
    )


def parse_our_metadata(text: str, layers: list[int], path: Path) -> tuple[dict, list[str]]:
    """Our own round-trip metadata, validated; ignored (with a warning) when it doesn't fit the tensors."""
    if len(text.encode("utf-8")) > MAX_METADATA_VALUE_BYTES:
        return {}, [f"{path.name}: ignored oversized {KEY_OURS} metadata"]
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError
        out: dict = {}
        if data.get("layers") != layers:
            return {}, [f"{path.name}: ignored {KEY_OURS} metadata that doesn't match the tensors"]
        if isinstance(data.get("name"), str):
            out["name"] = data["name"]
        if data.get("method") in METHODS:
            out["method"] = data["method"]
        if data.get("default_mode") in MODES and data["default_mode"] != "front":
            out["default_mode"] = data["default_mode"]
        coeff = data.get("default_coeff")
        if isinstance(coeff, (int, float)) and math.isfinite(coeff):
            out["default_coeff"] = float(coeff)
        if isinstance(data.get("fingerprint"), dict):
            out["fingerprint"] = ModelFingerprint.from_dict(data["fingerprint"])
        if isinstance(data.get("prompts"), dict):
            out["prompts"] = data["prompts"]
        if isinstance(data.get("provenance"), dict):
            out["provenance"] = data["provenance"]
        tags = data.get("tags")
        if isinstance(tags, list) and all(isinstance(t, str) for t in tags):
            out["tags"] = tuple(tags)
        for key in ("notes", "created"):
            if isinstance(data.get(key), str):
                out[key] = data[key]
        return out, []
    except (ValueError, KeyError, TypeError, RecursionError):
        return {}, [f"{path.name}: ignored malformed {KEY_OURS} metadata"]
