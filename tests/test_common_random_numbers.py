"""Common random numbers: compared rows differ by steering alone, with sampling on.

For each surface (the Python API, `generate --compare`, sweeps, the exported reproducing script; the GUI
panes are in tests/gui/test_gui_common_random_numbers.py): a coefficient of 0 gives the unsteered text
token for token, and a row alone gives the same tokens as that row inside a batch of 8.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from exported_scripts import run_exported_script

from engine import InvalidInputError, SamplingConfig, Steer, capture_actadd, generate, save_vector
from engine.cli import main
from engine.experiments import SweepSpec, run_sweep

PROMPT = "I went up to my friend and said"
# The paper's sampling, with a wider nucleus so that a random-init model has many tokens to choose from.
SAMPLING = SamplingConfig.paper(top_p=0.9, max_new_tokens=16, seed=5)
COEFFS = (4.0, -3.0, 1.0, 2.5, -1.0, 6.0, 0.5, -5.0)


@pytest.fixture
def love(gpt2):
    return capture_actadd(gpt2, "Love", "Hate", 1, name="love")


def _tokens(loaded, rows, sampling=SAMPLING, **kwargs) -> list[list[int]]:
    return [r.token_ids for r in generate(loaded, PROMPT, rows, sampling, **kwargs).rows]


@pytest.mark.parametrize("mode", ["front", "all"])
def test_api_zero_coefficient_equals_unsteered_token_for_token(gpt2, love, mode):
    unsteered, zero, steered = _tokens(
        gpt2, [[], [Steer(love, 0.0, mode=mode)], [Steer(love, 6.0, mode=mode)]]
    )
    assert zero == unsteered and len(zero) == SAMPLING.max_new_tokens
    assert steered != unsteered  # the rows do steer; only c = 0 is forced to agree
    # Without common random numbers the rows of one batch drew different numbers: two unsteered rows
    # of one batch gave different texts. Now they agree, and another seed gives another text.
    assert _tokens(gpt2, [[], []]) == [unsteered, unsteered]
    assert _tokens(gpt2, [[]], replace(SAMPLING, seed=6))[0] != unsteered


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_api_row_alone_equals_the_row_in_a_batch_of_8(loaded_models, arch):
    loaded = loaded_models[arch]
    vector = capture_actadd(loaded, "Love", "Hate", 1)
    batch = _tokens(loaded, [[Steer(vector, c)] for c in COEFFS])
    for i in (0, 3, 7):
        assert _tokens(loaded, [[Steer(vector, COEFFS[i])]])[0] == batch[i]
    assert len({tuple(t) for t in batch}) > 1


def test_api_row_seeds(gpt2, love):
    a, b, c = _tokens(gpt2, [[], [], []], row_seeds=[5, 9, 5])
    assert a == c == _tokens(gpt2, [[]])[0] and b != a
    assert b == _tokens(gpt2, [[]], replace(SAMPLING, seed=9))[0]
    # Unseeded: one random seed shared by all rows, so the panes still agree at c = 0.
    unseeded = replace(SAMPLING, seed=None)
    first, zero = _tokens(gpt2, [[], [Steer(love, 0.0)]], unseeded)
    assert first == zero
    for bad, message in (
        ([1, 2], "2 row seeds for 3 rows"),
        ([1, -2, 3], "seed -2"),
        ([1, 2.5, 3], "seed 2.5"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            generate(gpt2, PROMPT, [[], [], []], SAMPLING, row_seeds=bad)


def test_greedy_is_unchanged_by_seeds(gpt2, love):
    greedy = replace(SAMPLING, temperature=0.0)
    rows = [[], [Steer(love, 0.0)]]
    assert _tokens(gpt2, rows, greedy) == _tokens(gpt2, rows, greedy, row_seeds=[1, 2])


def _cli(capsys, *argv: str) -> dict:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_cli_compare(gpt2, love, model_dirs, tmp_path, capsys):
    path = tmp_path / "love.safetensors"
    save_vector(love, path)
    common = ["generate", "--model", str(model_dirs["gpt2"]), "--prompt", PROMPT, "--json"]
    sampling = ["--top-p", "0.9", "--frequency-penalty", "1", "--max-new-tokens", "16", "--seed", "5"]
    zero = _cli(capsys, *common, *sampling, "--steer", f"{path}:0", "--compare")
    assert zero["token_ids"] == zero["unsteered"]["token_ids"] and len(zero["token_ids"]) == 16
    steered = _cli(capsys, *common, *sampling, "--steer", f"{path}:4", "--compare")
    assert steered["unsteered"]["token_ids"] == zero["unsteered"]["token_ids"]
    assert steered["token_ids"] != zero["token_ids"]
    alone = _cli(capsys, *common, *sampling, "--steer", f"{path}:4")
    assert alone["token_ids"] == steered["token_ids"] == _tokens(gpt2, [[Steer(love, c)] for c in COEFFS])[0]


def test_sweep_cells_differ_only_by_their_coefficients(gpt2, love):
    def sweep(coeffs, samples=2):
        spec = SweepSpec(
            vector=love,
            coeffs=list(coeffs),
            prompts=[PROMPT, "Yesterday we went to the market"],
            targets=["love"],
            samples_per_prompt=samples,
            sampling=SAMPLING,
            effect=False,
        )
        return {c.coeff: c.completions for c in run_sweep(gpt2, spec).cells}

    cells = sweep([0.0, *COEFFS])
    # Sample k of every cell uses seed + k: the c = 0 cell is the unsteered text, sample by sample.
    for prompt_index, prompt in enumerate([PROMPT, "Yesterday we went to the market"]):
        for k in range(2):
            alone = generate(gpt2, prompt, None, replace(SAMPLING, seed=SAMPLING.seed + k)).rows[0].text
            assert cells[0.0][2 * prompt_index + k] == alone
    assert cells[0.0][0] != cells[0.0][1]  # different samples of one prompt do differ
    # A cell's samples do not depend on which other cells share the sweep (and its batches).
    for c in (COEFFS[0], COEFFS[5]):
        assert sweep([c])[c] == cells[c]
    # A sweep without a c = 0 cell runs its unsteered baseline with the same numbers.
    assert len({tuple(v) for v in cells.values()}) > 1


def _script(loaded, vector_path, coeff: float, tmp_path: Path) -> dict:
    from engine.transcript import Transcript, model_record

    transcript = Transcript(
        prompt=PROMPT,
        chat=False,
        model=model_record(loaded.info, loaded.fingerprint),
        sampling=asdict(SAMPLING),
        vectors=[{"name": "love", "path": str(vector_path), "coeff": coeff, "enabled": True, "mode": "all"}],
        outputs={},
    )
    script = tmp_path / f"reproduce_{coeff:g}.py"
    script.write_text(transcript.to_script(), encoding="utf-8")
    return run_exported_script(script)


def test_exported_script(gpt2, love, tmp_path):
    path = tmp_path / "love.safetensors"
    save_vector(love, path)
    zero = _script(gpt2, path, 0.0, tmp_path)
    assert zero["steered"] == zero["unsteered"] == generate(gpt2, PROMPT, None, SAMPLING).rows[0].text
    steered = _script(gpt2, path, 4.0, tmp_path)
    batch = generate(gpt2, PROMPT, [[Steer(love, c, mode="all")] for c in COEFFS], SAMPLING)
    assert steered["steered"] == batch.rows[0].text != steered["unsteered"]


def test_gumbel_max_draws_exact_samples_of_the_filtered_distribution():
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    from engine.sampling import sampling_processors

    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    sampling = SamplingConfig(temperature=0.8, top_p=0.9)
    ids = torch.zeros(1, 1, dtype=torch.long)
    filtered = TopPLogitsWarper(0.9)(ids, TemperatureLogitsWarper(0.8)(ids, logits.clone()))
    expected = torch.softmax(filtered, -1)[0]  # what transformers' own sampling would draw from
    n = 8000
    processors = sampling_processors(sampling, prompt_length=1, row_seeds=range(n), shadows={})
    chosen = processors(ids.expand(n, 1), logits.expand(n, -1).clone()).argmax(-1)
    observed = torch.bincount(chosen, minlength=6).float() / n
    assert observed[expected == 0].sum() == 0  # tokens outside the nucleus are never drawn
    assert torch.allclose(observed, expected, atol=0.02)  # ~4 standard errors at n = 8000
