"""Sweep defaults, confidence intervals, the coherence guard and `sweep --suggest` (tiny models, fast)."""

from __future__ import annotations

import json
import math
import threading

import pytest

from engine import capture_actadd
from engine.cli import main as cli_main
from engine.errors import InvalidInputError
from engine.experiments import coherence, defaults, plots, stats
from engine.experiments.suggest import (
    SuggestSpec,
    Tried,
    _next_ratios,
    is_clear,
    suggest,
)
from engine.experiments.sweep import SweepCell, SweepResult, SweepSpec
from engine.generation import SamplingConfig
from engine.models import DEMO_MODEL_DIR
from engine.residual_norms import residual_norm_profile
from engine.strength import per_position_norm

needs_demo = pytest.mark.skipif(
    not (DEMO_MODEL_DIR / "config.json").exists(), reason="the demo model is not built"
)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---- confidence intervals ---------------------------------------------------------------------------------
def test_wilson_interval_known_values_and_edges():
    low, high = stats.wilson(1, 6)
    assert low == pytest.approx(0.0301, abs=1e-3) and high == pytest.approx(0.5635, abs=1e-3)
    assert stats.wilson(0, 10)[0] == 0.0 and stats.wilson(0, 10)[1] > 0.2  # not zero-width at 0 hits
    assert stats.wilson(10, 10)[1] == 1.0 and stats.wilson(10, 10)[0] < 0.8
    assert stats.wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("dof", "exact"), [(1, 12.706), (2, 4.303), (5, 2.571), (10, 2.228), (30, 2.042)])
def test_t_quantile_matches_the_table(dof, exact):
    assert stats.t_quantile(dof) == pytest.approx(exact, rel=0.01)


def test_mean_ci_covers_the_mean_and_skips_nan():
    low, high = stats.mean_ci([1.0, 2.0, 3.0, math.nan])
    assert low < 2.0 < high and high - 2.0 == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)
    assert math.isnan(stats.mean_ci([])[0]) and stats.mean_ci([5.0]) == (5.0, 5.0)


def _cell(layer, coeff, hits, n, degenerate=False):
    low, high = stats.wilson(hits, n)
    return SweepCell(layer, coeff, value=hits / n, repetition=0.0, degenerate=degenerate,
                     samples=["x"] * n, ci_low=low, ci_high=high)  # fmt: skip


def test_best_is_not_one_hit_in_six(gpt2):
    vector = capture_actadd(gpt2, "Love", "Hate", 0)
    lucky, steady = _cell(0, 8.0, 1, 6), _cell(1, 4.0, 10, 24)  # 0.17 of 6 vs 0.42 of 24
    tiny_lucky = _cell(2, 2.0, 2, 2)  # 2 of 2 = 1.00, lower bound 0.34
    result = SweepResult(
        SweepSpec(vector, coeffs=[2.0, 4.0, 8.0], targets=["x"]), [lucky, steady, tiny_lucky]
    )
    assert result.best() is tiny_lucky  # 0.34 > 0.24: a lower bound, not a raw value, decides
    steady_big = _cell(1, 4.0, 20, 24)  # 0.83 of 24, lower bound 0.64
    result.cells = [lucky, steady_big, tiny_lucky]
    assert result.best() is steady_big


def test_share_plots_never_go_below_zero(gpt2, tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    vector = capture_actadd(gpt2, "Love", "Hate", 0)
    result = SweepResult(
        SweepSpec(vector, coeffs=[0.0, 4.0], targets=["x"]), [_cell(0, 0.0, 0, 8), _cell(0, 4.0, 1, 8)]
    )
    plots.plot_sweep(result, tmp_path / "a.png")
    plots.plot_lines(
        tmp_path / "b.png",
        [0, 1],
        {"share": [0.0, 0.1]},
        bands={"share": ([0.0, 0.0], [0.3, 0.4])},
        share=True,
    )
    for fig in figures:
        assert fig.axes[0].get_ylim()[0] >= 0.0


# ---- coherence guard ----------------------------------------------------------------------------------------
def test_repetition_signals():
    loop = "and the bride and the groom and the bride and the groom and the bride and the groom"
    fluent = "the bride walked down the aisle while the groom waited at the altar with his brother"
    assert coherence.repeated_ngram_share(loop) > 0.5 > coherence.repeated_ngram_share(fluent) == 0.0
    assert coherence.distinct_n(loop) < 0.5 < coherence.distinct_n(fluent) == 1.0
    guard = coherence.CoherenceGuard()
    assert guard.sample_ok(fluent, 2.0, 1.0) and not guard.sample_ok(loop, 1.0, 1.0)
    assert guard.cell_ok(0.25) and not guard.cell_ok(0.5) and not guard.cell_ok(math.nan)
    assert coherence.median([3.0, math.nan, 1.0, 2.0, 10.0]) == 2.5


# ---- defaults that follow the vector ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("positive", "negative", "metric", "sign", "some_targets"),
    [
        ("Love", "Hate", "sentiment", 1, []),
        ("Anger", "Calm", "sentiment", -1, []),
        ("Intent to praise", "Intent to hurt", "sentiment", 1, []),
        (" weddings", " ", "target-words", 1, ["wedding", "weddings"]),
        (" parties", " ", "target-words", 1, ["party", "parties"]),
        ("I talk about weddings constantly", "I do not talk about weddings constantly", "target-words", 1,
         ["weddings"]),
    ],
)  # fmt: skip
def test_measure_follows_the_pair(positive, negative, metric, sign, some_targets):
    measure = defaults.measure_for_pair(positive, negative)
    assert (measure.metric, measure.sign) == (metric, sign)
    assert set(some_targets) <= set(measure.targets)


def test_a_pair_without_words_needs_targets():
    with pytest.raises(defaults.InvalidInputError, match="--targets"):
        defaults.measure_for_pair(" ", "  ")


def test_vader_shares():
    pos, neg = defaults.vader_shares(["What a wonderful day!", "This is awful.", "The door is brown."])
    assert (pos, neg) == (pytest.approx(1 / 3), pytest.approx(1 / 3))


def test_sweep_of_a_sentiment_pair_defaults_to_vader(model_dirs, tmp_path, capsys):
    code, out, _ = _run(
        capsys, "sweep", "--model", str(model_dirs["gpt2"]), "--positive", "Love", "--negative", "Hate",
        "--coeffs", "0,4", "--layers", "1", "--prompt", "I went up to", "--samples", "2",
        "--max-new-tokens", "3", "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 0
    payload = json.loads(out)
    assert payload["metric"] == "sentiment"
    for cell in payload["cells"]:
        low, high = cell["ci"]
        assert 0.0 <= low <= cell["value"] <= high <= 1.0


# ---- the coefficient scale --------------------------------------------------------------------------------
def test_suggest_searches_normalised_strengths(gpt2):
    """A tried ratio r is the normalised strength `r n`: c = r * typical residual norm / the vector's size."""
    vector = capture_actadd(gpt2, "Love", "Hate", 1)
    spec = SuggestSpec(
        vector, targets=["love"], layers=[1], ratios=(0.5, 2.0), max_rounds=0, prompts=["I think"],
        samples_per_prompt=1, sampling=SamplingConfig.paper(max_new_tokens=2),
    )  # fmt: skip
    found = suggest(gpt2, spec)
    norms = residual_norm_profile(gpt2)
    size = per_position_norm(vector.layers[1])
    assert size > 0 and norms[1] > 0
    for tried in found.tried:
        assert tried.cell.coeff == pytest.approx(tried.ratio * norms[1] / size, rel=0.05)  # 2 sig. figures
    assert {t.ratio for t in found.tried} == {0.5, 2.0}


def test_refinement_bisects_around_the_best_and_stops_at_broken(gpt2):
    def tried(layer, ratio, value, broken=False):
        return Tried(_cell(layer, ratio, round(value * 10), 10, degenerate=broken), ratio, "coarse")

    history = [tried(3, 2, 0.2), tried(3, 8, 0.6), tried(3, 32, 0.9, broken=True)]
    assert _next_ratios(history, [3], (2, 8, 32)) == [(3, 4.0), (3, 16.0)]
    history += [tried(3, 16, 0.7, broken=True)]
    assert _next_ratios(history, [3], (2, 8, 32)) == [(3, 4.0)]  # never at or past a broken ratio
    all_broken = [tried(5, r, 0.0, broken=True) for r in (2, 8, 32)]
    assert _next_ratios(all_broken, [5], (2, 8, 32)) == [(5, 0.5), (5, 1.0)]  # go weaker


def test_the_search_is_clear_once_a_cell_cannot_be_beaten_or_is_clearly_strong():
    base_high = stats.wilson(0, 8)[1]  # unsteered: 0 of 8
    every_hit = Tried(_cell(3, 4.0, 8, 8), 4.0, "coarse")  # 8 of 8: lower bound 0.68 < 0.8
    assert every_hit.cell.ci_low < 0.8 and is_clear(every_hit, base_high, 0.8)
    assert not is_clear(Tried(_cell(3, 4.0, 7, 8), 4.0, "coarse"), base_high, 0.8)  # could still improve
    assert is_clear(Tried(_cell(3, 4.0, 95, 100), 4.0, "coarse"), base_high, 0.8)  # bound above 0.8
    # every sample hit, but the unsteered model already does that: no effect to be clear about
    assert not is_clear(every_hit, stats.wilson(8, 8)[1], 0.8)
    assert not is_clear(None, base_high, 0.8)


@needs_demo
def test_suggest_stops_after_the_coarse_sweep_when_a_cell_hits_every_sample():
    from engine import load_model

    demo = load_model("demo", device="cpu")
    vector = capture_actadd(demo, " weddings", " ", 0)
    spec = SuggestSpec(
        vector, targets=["wedding", "weddings", "bride", "groom"], layers=[0, 1],
        prompts=["I went up to my friend and said", "Last year, my cousin"], samples_per_prompt=2,
        sampling=SamplingConfig.paper(max_new_tokens=12),
    )  # fmt: skip
    found = suggest(demo, spec)
    assert found.stopped_early and found.score == 1.0 and found.layer == 0
    assert {t.stage for t in found.tried} == {"coarse"}  # no refinement round ran
    spec.layers, spec.max_rounds = [1], 1  # layer 1 alone hits some samples, not all: it must refine
    slower = suggest(demo, spec)
    assert not slower.stopped_early and "refine 1" in {t.stage for t in slower.tried}


def test_suggest_reports_progress_up_to_its_budget_and_stops_on_cancel(gpt2):
    vector = capture_actadd(gpt2, " weddings", " ", 1)
    spec = SuggestSpec(
        vector, targets=["wedding"], prompts=["I went"], samples_per_prompt=1,
        sampling=SamplingConfig.paper(max_new_tokens=2), layers=[1],
    )  # fmt: skip
    calls: list[tuple[int, int]] = []
    found = suggest(gpt2, spec, progress=lambda done, total: calls.append((done, total)))
    # The most it can take: 1 unsteered + 3 coarse cells + 2 rounds of 2 refined ones, 1 row x 2 tokens each.
    assert {total for _, total in calls} == {(1 + 3 + 2 * 2) * 2}
    dones = [done for done, _ in calls]
    assert dones == sorted(dones) and dones[-1] == 16 and found.forward_passes > 0
    assert sum(1 for d in dones if 0 < d < 16) >= 4  # it moves during the search, not only at its end

    cancel, calls = threading.Event(), []

    def stop_at_the_first_token(done: int, total: int) -> None:
        calls.append((done, total))
        if done > 0:
            cancel.set()

    with pytest.raises(InvalidInputError, match="cancelled before any setting was measured"):
        suggest(gpt2, spec, progress=stop_at_the_first_token, cancel=cancel)
    assert max(done for done, _ in calls) < 16  # a stopped search never reports itself complete


# ---- sweep --suggest -------------------------------------------------------------------------------------------
def test_suggest_json_contract_and_the_setting_is_usable_as_is(model_dirs, tmp_path, capsys):
    model = str(model_dirs["gpt2"])
    code, out, err = _run(
        capsys, "sweep", "--suggest", "--model", model, "--positive", " weddings", "--negative", " ",
        "--layers", "0,1", "--prompt", "I went up to my friend and said", "--samples", "2",
        "--max-new-tokens", "3", "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 0, err
    payload = json.loads(out)
    for key in ("layer", "coeff", "mode", "metric", "score", "coherent", "forward_passes"):
        assert key in payload, key
    assert payload["metric"] == "target-words" and "wedding" in payload["targets"]
    assert payload["mode"] == "front" and payload["layer"] in (0, 1)
    chosen = [t for t in payload["tried"] if (t["layer"], t["coeff"]) == (payload["layer"], payload["coeff"])]
    assert payload["strength"] == chosen[0]["ratio"]
    assert isinstance(payload["coherent"], bool) and payload["forward_passes"] > 0
    assert payload["clear_effect"] == (payload["ci"][0] > payload["baseline_ci"][1])
    tried = payload["tried"]
    assert {t["layer"] for t in tried if t["stage"] == "coarse"} == {0, 1}
    assert (payload["layer"], payload["coeff"]) in {(t["layer"], t["coeff"]) for t in tried}
    # generation: 2 rows x (3 tokens + 1 scoring pass) per cell, plus the unsteered cell and captures
    assert payload["forward_passes"] >= (len(tried) + 1) * 2 * 4
    code, out, err = _run(
        capsys, "generate", "--model", model, "--prompt", "I went up to my friend and said",
        "--steer", payload["steer"], "--mode", payload["mode"], "--max-new-tokens", "3", "--json",
    )  # fmt: skip
    assert code == 0, err
    steering = json.loads(out)["steering"][0]
    assert steering["coeff"] == pytest.approx(payload["coeff"])


def test_suggest_a_sentiment_pair_uses_vader(model_dirs, tmp_path, capsys):
    code, out, err = _run(
        capsys, "sweep", "--suggest", "--model", str(model_dirs["gpt2"]), "--positive", "Love", "--negative",
        "Hate", "--layers", "1", "--prompt", "I think", "--samples", "1", "--max-new-tokens", "2",
        "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["metric"] == "sentiment"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--coeffs", "1"], "--vector NAME_OR_FILE, or --positive and --negative"),
        (["--vector", "v", "--positive", "a", "--negative", "b"], "either --vector or"),
        (["--positive", "a", "--negative", "b", "--metric", "target-prob"], "sampled text"),
        (["--positive", "a", "--negative", "b", "--mode", "ablate"], "ablate"),
        (["--positive", "birds", "--negative", "b", "--layers", "0,7"], "out of range"),
        (["--positive", "a", "--negative", "b"], "cannot derive target words"),
        (["--positive", "a", "--negative", "b", "--experiment", "topic"], "either --experiment or --suggest"),
        (["--vector", "no-such-vector"], "no vector named"),
    ],
)
def test_suggest_bad_input_is_one_line_and_exit_2(model_dirs, tmp_path, capsys, args, message):
    code, out, err = _run(
        capsys, "sweep", "--suggest", "--model", str(model_dirs["gpt2"]), "--library", str(tmp_path / "lib"),
        "--out", str(tmp_path), *args,
    )  # fmt: skip
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
