"""Trend tests of sweeps and `suggest` on real pretrained models (slow; skipped without the models).

Point ACTADD_SMOLLM2_DIR / ACTADD_GEMMA3_DIR at dequantized float32 folders of SmolLM2-135M-Instruct and
Gemma-3-270M (docs/replication.md, "Real pretrained models", says how to make them from the registry's
GGUF packages). No hub is reached.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import capture_actadd
from engine.experiments import defaults
from engine.experiments.suggest import SuggestSpec, suggest
from engine.experiments.sweep import SweepSpec, run_sweep
from engine.generation import SamplingConfig

pytestmark = pytest.mark.slow

PROMPTS = ["I went up to my friend and said", "Here is what I think about it:", "Last year, my cousin"]
WEDDING = ["wedding", "weddings", "bride", "groom", "married", "marriage", "ceremony"]


def _folder(variable: str) -> Path:
    value = os.environ.get(variable, "")
    if not value or not (Path(value) / "config.json").is_file():
        pytest.skip(f"set {variable} to a dequantized model folder")
    return Path(value)


@pytest.fixture(scope="module", params=["ACTADD_SMOLLM2_DIR", "ACTADD_GEMMA3_DIR"])
def real(request):
    from engine import load_model

    return load_model(str(_folder(request.param)), device="cpu", dtype="float32")


def test_suggest_finds_a_coherent_wedding_setting_cheaper_than_the_grid(real):
    spec = SuggestSpec(
        vector=capture_actadd(real, " weddings", " ", 0),
        metric="target-words",
        targets=WEDDING,
        prompts=PROMPTS,
        samples_per_prompt=2,
        sampling=SamplingConfig.paper(max_new_tokens=16),
    )
    found = suggest(real, spec)
    assert found.coherent
    assert found.score >= found.baseline  # never worse than not steering
    assert found.forward_passes < found.grid_forward_passes / 2
    assert found.mode == "front" and 0 <= found.layer < len(real.blocks)


def test_love_hate_moves_vader_sentiment_with_the_sign_of_c(real):
    layer = max(1, len(real.blocks) // 5)
    spec = SweepSpec(
        capture_actadd(real, "Love", "Hate", layer),
        coeffs=[-8.0, 8.0],
        prompts=PROMPTS,
        metric="sentiment",
        samples_per_prompt=3,
        sampling=SamplingConfig.paper(max_new_tokens=16),
    )
    cells = {c.coeff: c for c in run_sweep(real, spec).cells}
    positive = {c: defaults.vader_shares(cells[c].completions)[0] for c in cells}
    assert positive[8.0] > positive[-8.0]
