"""Shared fixtures: tiny models of several architectures, built once per test session."""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tiny_models import build_tiny_model

# The recent-models list and the GGUF header cache: never the user's own folders during tests.
_SCRATCH = tempfile.mkdtemp(prefix="actadd-test-")
os.environ.setdefault("ACTADD_CONFIG_DIR", os.path.join(_SCRATCH, "config"))
# Fetched real models stay in the per-user cache (downloaded once per machine); the rest goes to scratch.
from engine.app_dirs import fetched_models_dir  # noqa: E402

os.environ.setdefault("ACTADD_MODELS_DIR", str(fetched_models_dir()))
os.environ.setdefault("ACTADD_CACHE", os.path.join(_SCRATCH, "cache"))


@pytest.fixture(autouse=True)
def _automatic_garbage_collection_back_on():
    """After a test whose last window closed, finish the window's deferred final collection now (it
    otherwise waits for an event-loop pass), so the tests after it run with automatic collection on."""
    yield
    garbage = sys.modules.get("gui.garbage")
    if garbage is not None and not gc.isenabled() and garbage.GuiThreadGarbageCollector._open == 0:
        garbage.collect_then_enable()


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """model_type -> folder of a saved tiny random-init model (built lazily, once)."""
    root = tmp_path_factory.mktemp("tiny-models")

    class _Lazy(dict):
        def __missing__(self, arch: str) -> Path:
            self[arch] = build_tiny_model(arch, root / arch)
            return self[arch]

    return _Lazy()


@pytest.fixture(scope="session")
def loaded_models(model_dirs):
    """model_type -> LoadedModel, loaded through the real `load_model` path (cached per session)."""
    from engine import load_model

    class _Lazy(dict):
        def __missing__(self, arch: str):
            self[arch] = load_model(model_dirs[arch], device="cpu")
            return self[arch]

    return _Lazy()


@pytest.fixture
def gpt2(loaded_models):
    return loaded_models["gpt2"]


@pytest.fixture
def llama(loaded_models):
    return loaded_models["llama"]


@pytest.fixture(scope="session")
def smollm2_gguf():
    """The real SmolLM2-135M-Instruct .gguf, fetched once into $ACTADD_CACHE (tests/real_models.py)."""
    from real_models import real_model_file

    return real_model_file("smollm2")


@pytest.fixture(scope="session")
def gemma3_gguf():
    """The real Gemma-3-270M .gguf, fetched once into $ACTADD_CACHE (tests/real_models.py)."""
    from real_models import real_model_file

    return real_model_file("gemma3")
