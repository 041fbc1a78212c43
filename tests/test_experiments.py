"""Experiments: metric units, sweep mechanics on tiny models, and trend tests on the demo model.

The demo-model tests assert directions of effects (the paper's trends), never exact numbers.
"""

from __future__ import annotations

import json
import math
import threading

import pytest
import torch

from engine import SamplingConfig, Steer, capture_actadd, capture_mean_diff, generate
from engine.errors import ActAddError, InvalidInputError
from engine.experiments import SweepSpec, metrics, plot_sweep, run_sweep, stats, vector_for_layer
from engine.experiments.sweep import SweepCell, SweepResult
from engine.models import DEMO_MODEL_DIR
from engine.pairs import PromptPair
from engine.tokens import encode

GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=6)
PROMPTS = ["I went up to my friend and said", "The team"]


# ---- text metrics --------------------------------------------------------------------------------------
def test_count_hits_whole_words_and_phrases():
    vocab = ["bride", "best man", "Vows"]
    assert metrics.count_hits("The bride and the best man said their vows.", vocab) == 3
    assert metrics.count_hits("Bridesmaids are not brides; bestman is not best man", vocab) == 1
    assert metrics.count_hits("", vocab) == 0


def test_topic_fraction_and_word_rate():
    texts = ["the bride smiled", "we ate soup", "a groom, a bride", ""]
    assert metrics.topic_fraction(texts, ["bride", "groom"]) == 0.5
    assert metrics.topic_word_rate(texts, ["bride"]) == pytest.approx(2 / 10)
    assert math.isnan(metrics.topic_fraction([], ["bride"]))


def test_sentiment_shares_by_majority():
    pos, neg = ["love", "lovely", "great"], ["hate", "awful"]
    texts = ["I love it, lovely", "I hate it", "love and hate", "a table"]
    assert metrics.sentiment_label(texts[0], pos, neg) == 1
    assert metrics.sentiment_label(texts[1], pos, neg) == -1
    assert metrics.sentiment_label(texts[2], pos, neg) == 0
    assert metrics.sentiment_shares(texts, pos, neg) == (0.25, 0.25)


def test_repetition_and_degeneracy():
    fluent = "the bride walked down the aisle while the groom waited at the altar with the rings"
    loop = "and the groom said " * 6
    salad = "groom groom bride groom bride groom groom bride groom bride"
    topic_salad = "weddings weddings weather food sports sports weddings food weddings travel weather"
    assert metrics.repetition_rate(fluent) < 0.1
    assert metrics.repetition_rate(loop) > 0.7
    assert not metrics.is_degenerate(fluent)
    assert metrics.is_degenerate(loop)
    assert metrics.is_degenerate(salad)
    assert metrics.is_degenerate(topic_salad)  # varied enough, but no function words
    assert metrics.is_degenerate("   ")  # nothing generated
    assert not metrics.is_degenerate("yes yes yes")  # too short to judge
    assert metrics.degeneracy_rate([fluent, loop]) == 0.5


# ---- steered forward metrics on tiny models --------------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_perplexity_batched_rows_equal_single_rows(loaded_models, arch):
    loaded = loaded_models[arch]
    vector = capture_actadd(loaded, "Love", "Hate", 1)
    texts = ["The team won the match.", "Love is patient and kind. I love weddings, the bride and the groom."]
    rows = [[Steer(vector, 4.0)], [Steer(vector, -2.0)], [], [Steer(vector, 3.0, mode="all")]]
    row_texts = [texts[0], texts[1], texts[1], texts[0]]
    batched = metrics.perplexities(loaded, row_texts, rows, prefixes=["", "", " weddings", ""])
    single = [
        metrics.perplexities(loaded, [t], [r], prefixes=[p])[0]
        for t, r, p in zip(row_texts, rows, ["", "", " weddings", ""], strict=True)
    ]
    assert batched == pytest.approx(single, rel=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_unsteered_perplexity_matches_the_model_loss(loaded_models, arch):
    loaded = loaded_models[arch]
    text = "The team won the match; sports fans cheered in the stadium."
    ids = torch.tensor([encode(loaded.tokenizer, text)])
    with torch.inference_mode():
        loss = loaded.model(input_ids=ids, labels=ids).loss
    assert metrics.perplexities(loaded, [text], [[]])[0] == pytest.approx(math.exp(float(loss)), rel=1e-4)


def test_prefix_scores_the_same_tokens(gpt2):
    text = "We ate pasta and bread."
    (plain, n_plain), (prompted, n_prompted) = metrics.token_nll(
        gpt2, [text], [[], []], prefixes=["", " weddings"]
    )
    assert n_plain == n_prompted == len(encode(gpt2.tokenizer, text)) - 1
    assert plain != prompted


def test_zero_coefficient_leaves_perplexity_and_target_prob_unchanged(gpt2):
    vector = capture_actadd(gpt2, "Love", "Hate", 0)
    text = "Travel by train to the coast."
    assert metrics.perplexities(gpt2, [text], [[Steer(vector, 0.0)], []]) == pytest.approx(
        metrics.perplexities(gpt2, [text], [[]])[0:1] * 2, rel=1e-6
    )
    probs = metrics.target_prob(gpt2, PROMPTS[:1], [[Steer(vector, 0.0)], [], [Steer(vector, 8.0)]], ["love"])
    assert probs[0] == pytest.approx(probs[1], rel=1e-6)
    assert probs[2] != pytest.approx(probs[1], rel=1e-6)
    assert all(0.0 <= p <= 1.0 for p in probs)


def test_corpus_perplexities_weights_tokens(gpt2):
    texts = ["The team won.", "We ate pasta and bread, the food was warm and the soup was good."]
    [corpus] = metrics.corpus_perplexities(gpt2, texts, [[]])
    scored = metrics.token_nll(gpt2, texts, [[], []])
    assert corpus == pytest.approx(math.exp(sum(n for n, _ in scored) / sum(c for _, c in scored)), rel=1e-6)


def test_front_vector_longer_than_text_is_refused(gpt2):
    vector = capture_actadd(gpt2, "I talk about weddings constantly", "I do not talk about weddings", 0)
    with pytest.raises(InvalidInputError, match="front injection"):
        metrics.perplexities(gpt2, ["Hi."], [[Steer(vector, 1.0)]])


# ---- sweep mechanics -----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_batched_sweep_rows_equal_separate_greedy_runs(loaded_models, arch):
    loaded = loaded_models[arch]
    vector = capture_actadd(loaded, "Love", "Hate", 0)
    spec = SweepSpec(vector, coeffs=[-4.0, 0.0, 6.0], layers=[0, 2], prompts=PROMPTS, targets=["love"],
                     sampling=GREEDY)  # fmt: skip
    result = run_sweep(loaded, spec)
    assert len(result.cells) == 6 and not result.cancelled
    for cell in result.cells:
        layer_vector, at_layer = vector_for_layer(loaded, vector, cell.layer)
        assert at_layer is None  # an ActAdd pair is re-captured, never moved
        for prompt, completion in zip(PROMPTS, cell.completions, strict=True):
            single = generate(loaded, prompt, [[Steer(layer_vector, cell.coeff)]], GREEDY).rows[0].text
            assert completion == single
        assert cell.samples == [p + c for p, c in zip(PROMPTS, cell.completions, strict=True)]


def test_sweep_uses_few_generate_calls(gpt2, monkeypatch):
    import engine.experiments.sweep_cells as sweep_module

    calls = []
    real = sweep_module.generate

    def counting(loaded, prompts, rows, *args, **kwargs):
        calls.append(len(rows))
        return real(loaded, prompts, rows, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "generate", counting)
    vector = capture_actadd(gpt2, "Love", "Hate", 0)
    spec = SweepSpec(vector, coeffs=[-2, -1, 0, 1, 2], layers=[0, 1, 2], prompts=PROMPTS, targets=["love"],
                     samples_per_prompt=3, sampling=SamplingConfig.paper(max_new_tokens=3))  # fmt: skip
    result = run_sweep(gpt2, spec)
    assert len(result.cells) == 15
    assert sum(calls) == (15 - 2) * 2 * 3  # c = 0 is unsteered at every layer: sampled once, not 3 times
    zero = [c for c in result.cells if c.coeff == 0]
    assert len(zero) == 3 and all(c.completions == zero[0].completions for c in zero)
    assert len(calls) <= 2  # 90 rows: one or two batches, not one call per setting


def test_fluency_perplexity_and_the_coherence_guard(gpt2):
    from engine.experiments.coherence import CoherenceGuard

    prompt = "I went up to my friend and said"
    greedy = generate(gpt2, prompt, [[]], SamplingConfig(temperature=0.0, max_new_tokens=8)).rows[0].text
    garbage = " zq xv jj kk pp zq ww"
    fluent, odd, empty = metrics.fluency_perplexities(gpt2, [prompt], [greedy, garbage, "  "])
    assert fluent < odd and math.isnan(empty)
    guard = CoherenceGuard(max_ppl_ratio=4.0)
    text = "the bride walked down the aisle while the groom waited at the altar"
    assert guard.sample_ok(text, 3.9, 1.0)
    assert not guard.sample_ok(text, 4.1, 1.0)  # implausible to the unsteered model
    assert not guard.sample_ok("", math.nan, 1.0)  # empty
    assert guard.sample_ok(text, math.nan, 1.0)  # nothing scored: the word checks decide
    assert guard.bad_share([text, text, ""], [1.0, 8.0, math.nan], 1.0) == pytest.approx(2 / 3)


def test_sweep_without_zero_coefficient_adds_one_unsteered_baseline(gpt2, monkeypatch):
    import engine.experiments.sweep_cells as sweep_module

    rows_seen = []
    real = sweep_module.generate

    def counting(loaded, prompts, rows, *args, **kwargs):
        rows_seen.extend(rows)
        return real(loaded, prompts, rows, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "generate", counting)
    vector = capture_actadd(gpt2, "Love", "Hate", 0)
    spec = SweepSpec(vector, coeffs=[1, 2], layers=[0, 1], prompts=PROMPTS, targets=["love"],
                     sampling=SamplingConfig.paper(max_new_tokens=3))  # fmt: skip
    result = run_sweep(gpt2, spec)
    assert len(result.cells) == 4
    assert len(rows_seen) == (4 + 1) * len(PROMPTS)
    assert sum(1 for r in rows_seen if not r) == len(PROMPTS)  # the baseline rows are unsteered
    assert all(math.isfinite(c.fluency) or not any(t.strip() for t in c.completions) for c in result.cells)


def test_layer_sweep_recaptures_pairs_and_moves_only_bare_vectors(gpt2):
    vector = capture_actadd(gpt2, " weddings", " ", 0)
    moved, at = vector_for_layer(gpt2, vector, 2)
    assert at is None and moved.layer_ids == [2]
    assert torch.equal(moved.layers[2], capture_actadd(gpt2, " weddings", " ", 2).layers[2])
    pairs = [PromptPair("I love it", "I hate it"), PromptPair("Love wins", "Hate wins")]
    direction = capture_mean_diff(gpt2, pairs, 0)
    recaptured, at = vector_for_layer(gpt2, direction, 1)
    assert at is None and torch.allclose(recaptured.layers[1], capture_mean_diff(gpt2, pairs, 1).layers[1])
    bare = direction.replace(prompts={})
    same, at = vector_for_layer(gpt2, bare, 1)
    assert same is bare and at == 1
    two_layers = capture_actadd(gpt2, "Love", "Hate", [0, 1]).replace(prompts={})
    picked, at = vector_for_layer(gpt2, two_layers, 1)
    assert at is None and picked.layer_ids == [1]
    with pytest.raises(InvalidInputError, match="no stored prompts"):
        vector_for_layer(gpt2, two_layers, 2)


def test_own_layers_and_target_prob_and_perplexity_metrics(gpt2):
    vector = capture_actadd(gpt2, "Love", "Hate", 1)
    prob = run_sweep(gpt2, SweepSpec(vector, coeffs=[0, 4], metric="target-prob", targets=["love"]))
    assert [c.layer for c in prob.cells] == [1, 1]
    unsteered = metrics.target_prob(gpt2, prob.spec.prompts, [[]] * len(prob.spec.prompts), ["love"])
    assert prob.cells[0].value == pytest.approx(sum(unsteered) / len(unsteered), rel=1e-6)
    text = "The team won the match; sports fans cheered in the stadium."
    ppl = run_sweep(gpt2, SweepSpec(vector, coeffs=[0, 4], metric="perplexity", reference_text=text))
    assert ppl.cells[0].value == pytest.approx(metrics.perplexities(gpt2, [text], [[]])[0], rel=1e-6)
    assert ppl.best() is min(ppl.cells, key=lambda c: c.value)  # lower perplexity is better
    with pytest.raises(InvalidInputError):
        run_sweep(gpt2, SweepSpec(vector, coeffs=[0], metric="perplexity"))
    with pytest.raises(InvalidInputError):
        run_sweep(gpt2, SweepSpec(vector, coeffs=[0], metric="target-words"))  # no targets
    with pytest.raises(ActAddError):
        run_sweep(gpt2, SweepSpec(vector, coeffs=[0], layers=[7], targets=["x"]))


def test_cancel_before_and_during_a_sweep(gpt2):
    vector = capture_actadd(gpt2, "Love", "Hate", 0)
    spec = SweepSpec(vector, coeffs=[0, 1, 2, 3], layers=[0, 1, 2], prompts=PROMPTS * 20, targets=["love"],
                     samples_per_prompt=2, sampling=SamplingConfig.paper(max_new_tokens=4))  # fmt: skip
    cancel = threading.Event()
    cancel.set()
    result = run_sweep(gpt2, spec, cancel=cancel)
    assert result.cancelled and result.cells == []

    cancel = threading.Event()
    seen = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done > 0:
            cancel.set()  # stop after the first tokens of the first batch

    result = run_sweep(gpt2, spec, progress=progress, cancel=cancel)
    assert result.cancelled
    assert len(result.cells) < 12
    _, coeffs, values = result.grid()
    assert coeffs == [0.0, 1.0, 2.0, 3.0]
    assert all(math.isnan(v) for row in values for v in row) or len(result.cells) > 0


def test_progress_is_monotone_and_complete(gpt2):
    vector = capture_actadd(gpt2, "Love", "Hate", 0)
    seen = []
    spec = SweepSpec(vector, coeffs=[0, 2], layers=[0, 1], prompts=PROMPTS, targets=["love"],
                     sampling=SamplingConfig.paper(max_new_tokens=3))  # fmt: skip
    run_sweep(gpt2, spec, progress=lambda d, t: seen.append((d, t)))
    dones = [d for d, _ in seen]
    assert dones[0] == 0 and dones == sorted(dones)
    assert seen[-1][0] == seen[-1][1]


def _fake_result(vector, layers, coeffs, degenerate=()):
    spec = SweepSpec(vector, coeffs=list(coeffs), layers=list(layers), targets=["x"])
    cells = [
        SweepCell(l, c, value=0.1 * l + 0.01 * c, repetition=0.0, degenerate=(l, c) in degenerate,
                  samples=[f"sample {l} {c}"])
        for l in layers
        for c in coeffs
    ]  # fmt: skip
    return SweepResult(spec, cells, model="tiny")


def test_grid_best_csv_and_png(gpt2, tmp_path):
    vector = capture_actadd(gpt2, "Love", "Hate", 0)
    result = _fake_result(vector, [0, 1, 2], [-4.0, 0.0, 4.0], degenerate={(2, 4.0)})
    layers, coeffs, values = result.grid()
    assert layers == [0, 1, 2] and coeffs == [-4.0, 0.0, 4.0]
    assert values[1][2] == pytest.approx(0.14)
    best = result.best()
    assert (best.layer, best.coeff) == (2, 0.0)  # (2, 4.0) is higher but degenerate
    result.to_csv(tmp_path / "s.csv")
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0].startswith("layer,coeff,metric,value") and len(lines) == 10
    plot_sweep(result, tmp_path / "heat.png")
    plot_sweep(_fake_result(vector, [1], [0.0, 2.0, 4.0], degenerate={(1, 4.0)}), tmp_path / "line.png")
    for name in ("heat.png", "line.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_do_not_touch_the_global_backend(gpt2, tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    vector = capture_actadd(gpt2, "Love", "Hate", 0)
    plot_sweep(_fake_result(vector, [0, 1], [0.0, 1.0]), tmp_path / "p.png")
    assert matplotlib.get_backend() == before


@pytest.mark.slow
def test_replication_runs_end_to_end_on_a_tiny_model(gpt2, tmp_path):
    """Mechanics only (a random model has no trends): every experiment writes its files and summary."""
    from engine.experiments.replication import Settings, run_experiments

    settings = Settings(n_prompts=2, samples=1, max_new_tokens=4, topic_coeffs=[0, 4], sentiment_coeffs=[-4, 0, 4],
                        ppl_coeffs=[0, 4], injection_coeffs=[0, 4], method_coeffs=[1], n_pairs=4, n_texts=2,
                        timing_repeats=1)  # fmt: skip
    names = ["topic", "sentiment", "perplexity", "prompting", "injection", "methods", "overhead"]
    reports = run_experiments(gpt2, names, tmp_path, settings=settings)
    assert set(reports) == set(names)
    for report in reports.values():
        for name in report.files:
            assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["topic"]["working_layer"] in (0, 1, 2)
    assert summary["perplexity"]["base"]["wedding"] > 0


def test_quantization_cosine_uses_every_position_so_a_vector_without_bos_has_one():
    """SmolLM2 has no BOS: a one-token pair gives a [1, hidden] vector (its cosine was NaN when position 0
    was dropped as if it were a shared BOS); a shared BOS row is zero in both and changes nothing."""
    from engine.experiments.paper.quantization import cosine

    torch.manual_seed(0)
    one, noisy = torch.randn(1, 16), torch.randn(1, 16)
    assert cosine(one, one) == pytest.approx(1.0) and cosine(one, -one) == pytest.approx(-1.0)
    bos = torch.zeros(1, 16)
    with_bos = cosine(torch.cat([bos, one]), torch.cat([bos, one + 0.1 * noisy]))
    assert with_bos == pytest.approx(cosine(one, one + 0.1 * noisy)) and 0.9 < with_bos < 1.0
    assert math.isnan(cosine(bos, one))  # a zero vector has no direction


# ---- trends on the demo model ----------------------------------------------------------------------------
needs_demo = pytest.mark.skipif(
    not (DEMO_MODEL_DIR / "config.json").exists(), reason="the demo model is not built"
)


@pytest.fixture(scope="module")
def demo():
    from engine import load_model

    return load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def demo_context(demo, tmp_path_factory):
    from engine.experiments.replication import Context, Settings, load_lexicon

    return Context(
        demo, tmp_path_factory.mktemp("demo"), Settings.quick(), load_lexicon(demo), lambda _: None
    )


@needs_demo
def test_demo_topic_fraction_rises_with_c_at_the_best_layer(demo_context):
    result = demo_context.topic_sweep()
    by = {(c.layer, c.coeff): c.value for c in result.cells}
    gains = {l: by[(l, 4.0)] - by[(l, 0.0)] for l in demo_context.layers}
    best = max(gains, key=gains.get)
    assert by[(best, 4.0)] > by[(best, 0.0)]
    assert gains[best] > 0.2  # a clear effect, not noise: many times the sampling error of the baseline


@needs_demo
def test_demo_sentiment_shift_has_the_sign_of_c(demo_context):
    result = demo_context.sentiment_sweep()
    layer = demo_context.sentiment_layer()
    cells = {c.coeff: c for c in result.cells if c.layer == layer}
    polarity = {c: demo_context.polarity(cells[c].completions) for c in (-8.0, 0.0, 8.0)}
    assert polarity[0.0] > polarity[-8.0] and polarity[8.0] > polarity[-8.0]
    # With the paper's top-p of 0.3 the demo's unsteered samples are usually all positive already (a
    # polarity of 1.0, see the README); with common random numbers c = 0 is that ceiling exactly, and +8
    # can only show where the baseline leaves room.
    if polarity[0.0] < 1.0:
        assert polarity[8.0] > polarity[0.0]


@needs_demo
def test_demo_sentiment_report_has_a_second_pair_measured_with_the_same_seeds(demo_context):
    import csv

    from engine.experiments.paper.sentiment import SECOND_PAIR, run_sentiment

    report = run_sentiment(demo_context)
    second = report.summary["second_pair"]
    assert second["pair"] == list(SECOND_PAIR) and second["coeffs"] == [-8.0, 0.0, 8.0]
    assert second["n_per_cell"] == len(demo_context.prompts) * demo_context.settings.samples
    # c = 0 of the second pair is the sweep's own unsteered cell (same seeds, not sampled again)
    layer = report.summary["layer"]
    zero = {c.coeff: c for c in demo_context.sentiment_sweep().cells if c.layer == layer}[0.0]
    assert (second["positive"][1], second["negative"][1]) == demo_context.shares(zero.completions)
    rows = list(csv.DictReader(demo_context.path("sentiment_second_pair.csv").open()))
    assert [float(r["coeff"]) for r in rows] == [-8.0, 0.0, 8.0]
    assert "Happy − Sad" in report.markdown


def _off_target_ratios(context) -> dict[str, tuple[float, float]]:
    """{text set: (ActAdd ratio, prompting ratio)} at the working topic setting."""
    from engine.experiments.replication import TOPIC_PAIR, _text_sets

    layer, coeff = context.topic_setting()
    vector = context.vector(TOPIC_PAIR, layer)
    out = {}
    for name, texts in _text_sets(context).items():
        base, steered, prompted = metrics.corpus_perplexities(
            context.loaded, texts, [[], [Steer(vector, coeff)], []], prefixes=["", "", TOPIC_PAIR[0]]
        )
        out[name] = (steered / base, prompted / base)
    return out


@needs_demo
def test_demo_off_target_perplexity_follows_the_papers_directions(demo_context):
    ratios = _off_target_ratios(demo_context)
    actadd_wedding, _ = ratios["wedding"]
    actadd_unrelated, prompting_unrelated = ratios["unrelated"]
    assert actadd_wedding < 1.0  # on-topic text gets more likely (paper: 0.875)
    assert actadd_wedding < 1.2
    assert actadd_unrelated < prompting_unrelated  # ActAdd hurts unrelated text less (paper: 0.994 < 1.132)


@needs_demo
def test_demo_unrelated_text_perplexity_ratio_below_1_2(demo_context):
    actadd_unrelated, _ = _off_target_ratios(demo_context)["unrelated"]
    assert actadd_unrelated < 1.2


def test_working_topic_setting_is_the_smallest_c_within_sampling_error_of_the_best(gpt2, tmp_path):
    from engine.experiments.replication import Context, Settings, load_lexicon

    vector = capture_actadd(gpt2, "Love", "Hate", 0)
    context = Context(gpt2, tmp_path, Settings.quick(), load_lexicon(gpt2), lambda _: None)

    def setting(values: dict[tuple[int, float], float], n: int = 18, degenerate=()) -> tuple[int, float]:
        result = _fake_result(vector, [0, 1], [0.0, 1.0, 4.0], degenerate=degenerate)
        for cell in result.cells:
            cell.value = values.get((cell.layer, cell.coeff), 0.0)
            cell.completions = ["text"] * n
            cell.ci_low, cell.ci_high = stats.wilson(round(cell.value * n), n)
        context._topic = result
        return context.topic_setting()

    # 0.94 vs 1.00 is one sample in 18: inside the best cell's interval (0.82-1), so the smaller c wins
    assert setting({(0, 1.0): 0.94, (0, 4.0): 1.0}) == (0, 1.0)
    # 0.75 is below the best cell's lower bound (0.82): the best cell wins
    assert setting({(0, 1.0): 0.75, (0, 4.0): 1.0}) == (0, 4.0)
    # with 200 samples per cell the error is small, so 0.94 is no longer as good as 1.00
    assert setting({(0, 1.0): 0.94, (0, 4.0): 1.0}, n=200) == (0, 4.0)
    # a degenerate cell is never chosen, however high
    assert setting({(0, 1.0): 0.2, (0, 4.0): 1.0, (1, 4.0): 0.7}, degenerate={(0, 4.0)}) == (1, 4.0)
