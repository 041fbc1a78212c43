"""The ActAdd paper's experiments (Turner et al., arXiv 2308.10248), rerun as trends on a local model.

Experiments (each writes `<name>*.csv`, `<name>*.png` and a Markdown table `<name>.md` into `out_dir`):

- topic:        wedding-topic fraction of sampled completions vs c, for every layer (" weddings" − " ").
- sentiment:    positive / negative share of completions vs c for "Love" − "Hate", on held-out prompts.
- perplexity:   off-target perplexity ratio (steered / unsteered) on held-out wedding text and unrelated text.
- prompting:    the same measurements with the word prepended to the prompt (or text) instead of ActAdd.
- injection:    the contrast between front injection (ActAdd) and adding at all positions.
- overhead:     wall time of steered vs unsteered generation, measured in one run.
- quantization: cosine similarity per layer of vectors captured on float32 / 8-bit / 4-bit loads, and
                whether vectors from one load still steer another.

Word lists, prompts and off-target texts come from `lexicon.json` in the model folder (the demo model
ships one); other models fall back to the built-in `DEFAULT_LEXICON`. Everything is seeded, and every
sampled measurement is one or a few batched generate calls with per-row steering.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.capture import capture_actadd
from engine.errors import InvalidInputError
from engine.experiments import metrics, plots
from engine.experiments.sweep import SweepCell, SweepResult, SweepSpec, run_sweep
from engine.generation import SamplingConfig, generate
from engine.models import LoadedModel
from engine.sampling import resolve_row_seeds
from engine.steering import Steer
from engine.vector import SteeringVector

EXPERIMENTS = ("topic", "sentiment", "perplexity", "prompting", "injection", "overhead", "quantization")
TOPIC_PAIR = (" weddings", " ")
SENTIMENT_PAIR = ("Love", "Hate")

Log = Callable[[str], None]


# ---- inputs --------------------------------------------------------------------------------------------
@dataclass
class Lexicon:
    topic_words: list[str]  # the wedding topic
    positive: list[str]
    negative: list[str]
    heldout_prompts: list[str]  # prompts that never occur in the model's training text
    template_prompts: list[str]  # prompts shaped like the training text (may be empty)
    offtarget_topic: list[str]  # held-out text on the wedding topic
    offtarget_unrelated: list[str]  # held-out text without wedding words
    source: str = "built-in"


_DEFAULT_TOPIC_WORDS = (
    "wedding weddings bride brides groom grooms bridesmaid bridesmaids vows ceremony reception "
    "bouquet veil altar aisle chapel honeymoon newlyweds married marry marriage engagement "
    "engaged fiance fiancee tuxedo gown"
)

_DEFAULT_POSITIVE = (
    "love loved lovely happy glad joy joyful wonderful great good beautiful delightful perfect "
    "amazing enjoy enjoyed pleasant excellent fantastic cheerful brilliant adore adored best"
)

_DEFAULT_NEGATIVE = (
    "hate hated sad angry awful terrible horrible bad worst ugly miserable dreadful boring "
    "nasty annoying disgusting upset loathe despise gloomy rotten poor dislike disliked"
)

DEFAULT_LEXICON = Lexicon(
    topic_words=_DEFAULT_TOPIC_WORDS.split(),
    positive=_DEFAULT_POSITIVE.split(),
    negative=_DEFAULT_NEGATIVE.split(),
    heldout_prompts=[
        "I went up to my friend and said",
        "Here is what I think about it:",
        "So this is how it went.",
        "Let me tell you something.",
        "When I woke up this morning,",
        "There is one thing I remember:",
        "My neighbor told me that",
        "Last year, my cousin",
    ],
    template_prompts=[],
    offtarget_topic=[
        "The bride walked down the aisle while the groom waited at the altar.",
        "After the ceremony the newlyweds greeted their guests at the reception.",
        "She tried on the wedding gown and the bridesmaids fixed her veil.",
        "The couple exchanged rings and said their vows in the small chapel.",
    ],
    offtarget_unrelated=[
        "The train left the station at noon and reached the coast by evening.",
        "The team trained at the stadium and the coach planned the next match.",
        "My uncle made a pot of soup and baked fresh bread for dinner.",
        "The rain fell all afternoon and the wind blew through the streets.",
    ],
)


def load_lexicon(loaded: LoadedModel) -> Lexicon:
    """The model folder's `lexicon.json` (the demo model's format), or `DEFAULT_LEXICON`."""
    path = Path(loaded.info.path) / "lexicon.json"
    if not path.is_file():
        return DEFAULT_LEXICON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        offtarget = data.get("offtarget_text", {})
        lexicon = Lexicon(
            topic_words=list(data["topics"]["weddings"]),
            positive=list(data["sentiment"]["positive"]),
            negative=list(data["sentiment"]["negative"]),
            heldout_prompts=list(data.get("heldout_prompts") or DEFAULT_LEXICON.heldout_prompts),
            template_prompts=list(data.get("template_prompts") or []),
            offtarget_topic=list(offtarget.get("weddings") or DEFAULT_LEXICON.offtarget_topic),
            offtarget_unrelated=list(offtarget.get("unrelated") or DEFAULT_LEXICON.offtarget_unrelated),
            source="lexicon.json in the model folder",
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{path} is not a valid lexicon file ({type(exc).__name__}: {exc})") from exc
    return lexicon


@dataclass
class Settings:
    """Sample sizes and grids; `quick()` is the small-sample version the test suite runs."""

    seed: int = 0
    n_prompts: int = 10  # held-out prompts used (the first n)
    samples: int = 5  # samples per prompt and setting
    max_new_tokens: int = 32
    topic_coeffs: list[float] = field(default_factory=lambda: [-4, -1, 0, 1, 2, 4, 8, 16])
    sentiment_coeffs: list[float] = field(default_factory=lambda: [-16, -8, -4, -2, 0, 2, 4, 8, 16])
    ppl_coeffs: list[float] = field(default_factory=lambda: [-4, -1, 0, 0.5, 1, 2, 4, 8, 16])
    injection_coeffs: list[float] = field(default_factory=lambda: [0, 1, 2, 4, 8, 16])
    n_texts: int = 24  # off-target texts per set
    timing_repeats: int = 9
    layers: list[int] | None = None  # None: every layer

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            n_prompts=6,
            samples=3,
            max_new_tokens=24,
            topic_coeffs=[0, 1, 4],
            sentiment_coeffs=[-8, 0, 8],
            ppl_coeffs=[0, 1, 4],
            injection_coeffs=[0, 4],
            n_texts=8,
            timing_repeats=2,
        )

    def sampling(self, **overrides) -> SamplingConfig:
        return SamplingConfig.paper(**{"seed": self.seed, "max_new_tokens": self.max_new_tokens, **overrides})


@dataclass
class ExperimentReport:
    name: str
    title: str
    markdown: str  # tables and the facts behind them
    summary: dict  # key numbers (JSON-able), e.g. for tests and the README
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0


# ---- shared state across experiments --------------------------------------------------------------------
class Context:
    """The model, inputs and results that later experiments reuse (the topic sweep picks the layer)."""

    def __init__(self, loaded: LoadedModel, out_dir: Path, settings: Settings, lexicon: Lexicon, log: Log):
        self.loaded = loaded
        self.out_dir = out_dir
        self.settings = settings
        self.lexicon = lexicon
        self.log = log
        self._topic: SweepResult | None = None
        self._sentiment: SweepResult | None = None

    @property
    def layers(self) -> list[int]:
        return self.settings.layers or list(range(len(self.loaded.blocks)))

    @property
    def prompts(self) -> list[str]:
        return self.lexicon.heldout_prompts[: self.settings.n_prompts]

    def path(self, name: str) -> Path:
        return self.out_dir / name

    def vector(self, pair: tuple[str, str], layer: int) -> SteeringVector:
        return capture_actadd(self.loaded, pair[0], pair[1], layer)

    def topic_sweep(self) -> SweepResult:
        if self._topic is None:
            self.log("topic: sweeping layers × coefficients")
            spec = SweepSpec(
                vector=self.vector(TOPIC_PAIR, self.layers[0]),
                coeffs=list(self.settings.topic_coeffs),
                layers=self.layers,
                prompts=self.prompts,
                metric="target-words",
                targets=self.lexicon.topic_words,
                samples_per_prompt=self.settings.samples,
                sampling=self.settings.sampling(),
                effect=False,  # the replication reports the paper's measures; effect doubles the rows
            )
            self._topic = run_sweep(self.loaded, spec)
        return self._topic

    def topic_setting(self) -> tuple[int, float]:
        """(layer, c): the best non-degenerate topic cell with c > 0, the 'working' setting."""
        result = self.topic_sweep()
        positive = [c for c in result.cells if c.coeff > 0 and not c.degenerate]
        if not positive:
            return self.layers[0], 4.0
        top = max(c.value for c in positive)

        def as_good(cell: SweepCell) -> bool:  # within 0.05, or within two standard errors, of the best
            n = max(1, len(cell.completions))
            return top - cell.value <= max(0.05, 2 * math.sqrt(cell.value * (1 - cell.value) / n))

        # the smallest coefficient as good as the best fraction, at the layer that reaches it first
        good = [c for c in positive if as_good(c)]
        chosen = min(good, key=lambda c: (c.coeff, -c.value))
        return chosen.layer, chosen.coeff

    def sentiment_sweep(self) -> SweepResult:
        if self._sentiment is None:
            self.log("sentiment: sweeping layers × coefficients")
            spec = SweepSpec(
                vector=self.vector(SENTIMENT_PAIR, self.layers[0]),
                coeffs=list(self.settings.sentiment_coeffs),
                layers=self.layers,
                prompts=self.prompts,
                metric="target-words",
                targets=self.lexicon.positive,
                samples_per_prompt=self.settings.samples,
                sampling=self.settings.sampling(),
                effect=False,  # the replication reports the paper's measures; effect doubles the rows
            )
            self._sentiment = run_sweep(self.loaded, spec)
        return self._sentiment

    def sentiment_layer(self) -> int:
        """The layer whose positive-minus-negative share moves most between the extreme coefficients."""
        result = self.sentiment_sweep()
        lo, hi = min(self.settings.sentiment_coeffs), max(self.settings.sentiment_coeffs)

        def spread(layer: int) -> float:
            cells = {c.coeff: c for c in result.cells if c.layer == layer}
            return self.polarity(cells[hi].completions) - self.polarity(cells[lo].completions)

        return max(self.layers, key=spread)

    def shares(self, texts: Sequence[str]) -> tuple[float, float]:
        return metrics.sentiment_shares(texts, self.lexicon.positive, self.lexicon.negative)

    def polarity(self, texts: Sequence[str]) -> float:
        pos, neg = self.shares(texts)
        return pos - neg


# ---- helpers -------------------------------------------------------------------------------------------
def _fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _pm(share: float, n: int) -> str:
    """A share with its binomial standard error, e.g. '0.80 ± 0.06'."""
    if not n or not math.isfinite(share):
        return _fmt(share)
    return f"{share:.2f} ± {math.sqrt(share * (1 - share) / n):.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _cells(result: SweepResult, layer: int) -> dict[float, SweepCell]:
    return {c.coeff: c for c in result.cells if c.layer == layer}


def _generate_rows(
    ctx: Context,
    prompts: Sequence[str] | Sequence[Sequence[str]],
    steers: Sequence[Sequence[Steer]],
    sampling: SamplingConfig,
) -> list[list[str]]:
    """For each setting (a steer list, or a prompt list of the same length as `steers`), its completions:
    prompts × samples rows per setting, all settings in as few generate calls as fit in a batch. Sample k
    of every setting uses seed + k (common random numbers), so settings differ by steering alone."""
    per_setting: Sequence[Sequence[str]] = (
        prompts if prompts and isinstance(prompts[0], list) else [prompts] * len(steers)  # type: ignore[assignment,list-item]
    )
    if len(per_setting) != len(steers):
        raise InvalidInputError(f"{len(per_setting)} prompt lists for {len(steers)} settings")
    rows_prompts: list[str] = []
    rows_steers: list[list[Steer]] = []
    rows_seeds: list[int] = []
    bounds = [0]
    base_seed = resolve_row_seeds(sampling.seed, None, 1)[0]
    for steer, setting_prompts in zip(steers, per_setting, strict=True):
        for p in setting_prompts:
            for k in range(ctx.settings.samples):
                rows_prompts.append(p)
                rows_steers.append(list(steer))
                rows_seeds.append(base_seed + k)  # sample k of every setting: seed + k, as in sweeps
        bounds.append(len(rows_prompts))
    texts: list[str] = []
    batch = 96
    for begin in range(0, len(rows_prompts), batch):
        end = begin + batch
        result = generate(
            ctx.loaded,
            rows_prompts[begin:end],
            rows_steers[begin:end],
            sampling,
            row_seeds=rows_seeds[begin:end],
        )
        texts.extend(r.text for r in result.rows)
    return [texts[bounds[k] : bounds[k + 1]] for k in range(len(steers))]


# ---- 1. topic ------------------------------------------------------------------------------------------
def run_topic(ctx: Context) -> ExperimentReport:
    result = ctx.topic_sweep()
    result.to_csv(ctx.path("topic.csv"))
    plots.plot_sweep(result, ctx.path("topic_heatmap.png"))
    layers, coeffs, values = result.grid()
    plots.plot_lines(
        ctx.path("topic_lines.png"),
        coeffs,
        {f"layer {l}": values[i] for i, l in enumerate(layers)},
        title="Wedding-topic fraction vs c (' weddings' − ' ', front injection)",
        ylabel="share of completions with a wedding word",
    )
    layer, coeff = ctx.topic_setting()
    base = _cells(result, layer).get(0.0)
    chosen = _cells(result, layer)[coeff]
    rows = [
        [f"layer {l}"]
        + [
            _fmt(v) + ("†" if _cells(result, l)[c].degenerate else "")
            for c, v in zip(coeffs, values[i], strict=True)
        ]
        for i, l in enumerate(layers)
    ]
    best = result.best()
    assert best is not None  # the grid has finished cells (the working setting came from them)
    table = _table(["layer \\ c", *[f"{c:g}" for c in coeffs]], rows)
    degenerate_note = (
        "† degenerate (most samples are loops, word salad, empty or implausible to the unsteered model). "
        if any(c.degenerate for c in result.cells)
        else "No cell is degenerate. "
    )
    markdown = (
        f"{table}\n\n{degenerate_note}Working setting: layer {layer}, c = {coeff:g}: "
        f"{_pm(chosen.value, len(chosen.samples))} against "
        f"{_pm(base.value, len(base.samples)) if base else '–'} unsteered ({len(chosen.samples)} samples per cell). "
        f"Best cell: layer {best.layer}, c = {best.coeff:g}, {_fmt(best.value)}. "
        f"Mean repetition at the working setting {_fmt(chosen.repetition)} "
        f"(unsteered {_fmt(base.repetition if base else math.nan)}).\n"
    )
    summary = {
        "layers": layers,
        "coeffs": coeffs,
        "fraction": values,
        "working_layer": layer,
        "working_coeff": coeff,
        "baseline": base.value if base else None,
        "working_fraction": chosen.value,
        "best": {"layer": best.layer, "coeff": best.coeff, "value": best.value} if best else None,
        "example_unsteered": base.samples[0] if base else "",
        "example_steered": chosen.samples[0],
        "n_samples_per_cell": len(chosen.samples),
    }
    return ExperimentReport(
        "topic",
        "Topic steering vs coefficient and layer",
        markdown,
        summary,
        ["topic.csv", "topic_heatmap.png", "topic_lines.png"],
    )


# ---- 2. sentiment --------------------------------------------------------------------------------------
def run_sentiment(ctx: Context) -> ExperimentReport:
    result = ctx.sentiment_sweep()
    layers, coeffs, _ = result.grid()
    pos = [[ctx.shares(_cells(result, l)[c].completions)[0] for c in coeffs] for l in layers]
    neg = [[ctx.shares(_cells(result, l)[c].completions)[1] for c in coeffs] for l in layers]
    _write_csv(
        ctx.path("sentiment.csv"),
        ["layer", "coeff", "positive_share", "negative_share", "repetition", "degenerate", "example"],
        [
            [l, c, f"{pos[i][j]:.4f}", f"{neg[i][j]:.4f}", f"{cell.repetition:.4f}", int(cell.degenerate),
             cell.samples[0]]
            for i, l in enumerate(layers)
            for j, c in enumerate(coeffs)
            for cell in [_cells(result, l)[c]]
        ],
    )  # fmt: skip
    layer = ctx.sentiment_layer()
    li = layers.index(layer)
    plots.plot_heatmap(
        ctx.path("sentiment_heatmap.png"),
        [f"layer {l}" for l in layers],
        [f"{c:g}" for c in coeffs],
        [[p - n for p, n in zip(pr, nr, strict=True)] for pr, nr in zip(pos, neg, strict=True)],
        title="Love − Hate: positive minus negative share of completions (held-out prompts)",
        xlabel="coefficient c",
        ylabel="layer",
        colorbar="positive share − negative share",
        cmap="RdBu",
        vmin=-1.0,
        vmax=1.0,
    )
    # Second sampling regime at the chosen layer: plain temperature 1.0 (no nucleus, no penalty).
    plain = ctx.settings.sampling(top_p=1.0, frequency_penalty=0.0)
    vector = ctx.vector(SENTIMENT_PAIR, layer)
    plain_texts = _generate_rows(ctx, ctx.prompts, [[Steer(vector, c)] for c in coeffs], plain)
    plain_shares = [ctx.shares(t) for t in plain_texts]
    template = ctx.lexicon.template_prompts[: ctx.settings.n_prompts]
    template_coeffs = [c for c in (min(coeffs), 0.0, max(coeffs)) if c in coeffs]
    template_shares = []
    if template:
        texts = _generate_rows(
            ctx, template, [[Steer(vector, c)] for c in template_coeffs], ctx.settings.sampling()
        )
        template_shares = [ctx.shares(t) for t in texts]
    plots.plot_lines(
        ctx.path("sentiment_lines.png"),
        coeffs,
        {
            "positive, top_p 0.3": pos[li],
            "negative, top_p 0.3": neg[li],
            "positive, temperature 1.0": [s[0] for s in plain_shares],
            "negative, temperature 1.0": [s[1] for s in plain_shares],
        },
        title=f"Love − Hate at layer {layer}: sentiment of completions on held-out prompts",
        ylabel="share of completions",
    )
    rows = [
        [f"{c:g}", f"{_fmt(pos[li][j])} / {_fmt(neg[li][j])}", f"{_fmt(plain_shares[j][0])} / {_fmt(plain_shares[j][1])}"]
        for j, c in enumerate(coeffs)
    ]  # fmt: skip
    spread_rows = [
        [f"layer {l}"] + [_fmt(pos[i][j] - neg[i][j]) for j in range(len(coeffs))]
        for i, l in enumerate(layers)
    ]
    markdown = (
        f"Positive / negative share at layer {layer} (the layer with the widest swing), "
        f"{len(ctx.prompts)} held-out prompts × {ctx.settings.samples} samples per cell:\n\n"
        + _table(["c", "paper sampling (top_p 0.3)", "temperature 1.0"], rows)
        + "\n\nPositive minus negative share, every layer (paper sampling):\n\n"
        + _table(["layer \\ c", *[f"{c:g}" for c in coeffs]], spread_rows)
    )
    if template_shares:
        markdown += (
            f"\n\nFor contrast, on {len(template)} template prompts that occur in the training text "
            f"(layer {layer}, paper sampling): "
            + ", ".join(
                f"c = {c:g}: {_fmt(s[0])} / {_fmt(s[1])}"
                for c, s in zip(template_coeffs, template_shares, strict=True)
            )
            + "."
        )
    markdown += "\n\nHeld-out prompts: " + "; ".join(f"`{p}`" for p in ctx.prompts) + "\n"
    summary = {
        "layer": layer,
        "coeffs": coeffs,
        "positive": pos[li],
        "negative": neg[li],
        "positive_t1": [s[0] for s in plain_shares],
        "negative_t1": [s[1] for s in plain_shares],
        "spread": [[pos[i][j] - neg[i][j] for j in range(len(coeffs))] for i in range(len(layers))],
        "layers": layers,
        "template": {f"{c:g}": list(s) for c, s in zip(template_coeffs, template_shares, strict=False)},
        "prompts": ctx.prompts,
    }
    return ExperimentReport(
        "sentiment",
        "Sentiment steering (Love − Hate)",
        markdown,
        summary,
        ["sentiment.csv", "sentiment_heatmap.png", "sentiment_lines.png"],
    )


# ---- 3. off-target perplexity ----------------------------------------------------------------------------
def _text_sets(ctx: Context) -> dict[str, list[str]]:
    n = ctx.settings.n_texts
    return {"wedding": ctx.lexicon.offtarget_topic[:n], "unrelated": ctx.lexicon.offtarget_unrelated[:n]}


def _ppl_ratios(
    ctx: Context, settings: Sequence[Sequence[Steer]], prefixes: Sequence[str] | None = None
) -> dict:
    """{text set: [perplexity ratio per setting]} against the plain unsteered model."""
    out: dict[str, list[float] | float] = {}
    for name, texts in _text_sets(ctx).items():
        base = metrics.corpus_perplexities(ctx.loaded, texts, [[]])[0]
        values = metrics.corpus_perplexities(ctx.loaded, texts, settings, prefixes=prefixes)
        out[name] = [v / base for v in values]
        out[f"{name}_base"] = base
    return out


def run_perplexity(ctx: Context) -> ExperimentReport:
    coeffs = list(ctx.settings.ppl_coeffs)
    layers = ctx.layers
    vectors = {l: ctx.vector(TOPIC_PAIR, l) for l in layers}
    settings = [[Steer(vectors[l], c)] for l in layers for c in coeffs]
    ratios = _ppl_ratios(ctx, settings)
    n = len(coeffs)
    by_set = {
        name: {f"layer {l}": ratios[name][i * n : (i + 1) * n] for i, l in enumerate(layers)}
        for name in ("wedding", "unrelated")
    }
    _write_csv(
        ctx.path("perplexity.csv"),
        ["layer", "coeff", "ratio_wedding_text", "ratio_unrelated_text"],
        [
            [l, c, f"{ratios['wedding'][i * n + j]:.4f}", f"{ratios['unrelated'][i * n + j]:.4f}"]
            for i, l in enumerate(layers)
            for j, c in enumerate(coeffs)
        ],
    )
    plots.plot_lines(
        ctx.path("perplexity.png"),
        coeffs,
        {},
        title="Off-target perplexity ratio (steered / unsteered), ' weddings' − ' ' at the front of the text",
        ylabel="perplexity ratio",
        hlines={"no change": 1.0},
        panels={"held-out wedding text": by_set["wedding"], "unrelated text": by_set["unrelated"]},
    )
    layer, coeff = ctx.topic_setting()
    li = layers.index(layer)
    rows = [
        [f"{c:g}", _fmt(ratios["wedding"][li * n + j], 3), _fmt(ratios["unrelated"][li * n + j], 3)]
        for j, c in enumerate(coeffs)
    ]
    at = {
        name: ratios[name][li * n + coeffs.index(coeff)] if coeff in coeffs else math.nan
        for name in ("wedding", "unrelated")
    }
    markdown = (
        f"At the topic layer {layer} ({len(_text_sets(ctx)['wedding'])} wedding texts, "
        f"{len(_text_sets(ctx)['unrelated'])} unrelated texts; unsteered perplexity "
        f"{_fmt(ratios['wedding_base'], 3)} and {_fmt(ratios['unrelated_base'], 3)}):\n\n"
        + _table(["c", "wedding text", "unrelated text"], rows)
        + f"\n\nAt the working coefficient c = {coeff:g}: {_fmt(at['wedding'], 3)} on wedding text, "
        f"{_fmt(at['unrelated'], 3)} on unrelated text. All layers are in `perplexity.csv`.\n"
    )
    summary = {
        "layer": layer,
        "coeff": coeff,
        "coeffs": coeffs,
        "layers": layers,
        "wedding": by_set["wedding"],
        "unrelated": by_set["unrelated"],
        "at_working": at,
        "base": {"wedding": ratios["wedding_base"], "unrelated": ratios["unrelated_base"]},
    }
    return ExperimentReport(
        "perplexity", "Off-target perplexity", markdown, summary, ["perplexity.csv", "perplexity.png"]
    )


# ---- 4. prompting --------------------------------------------------------------------------------------
def run_prompting(ctx: Context) -> ExperimentReport:
    layer, coeff = ctx.topic_setting()
    vector = ctx.vector(TOPIC_PAIR, layer)
    word = TOPIC_PAIR[0]
    # Topic fraction: unsteered, prompted (the word before the prompt), ActAdd, on the same prompts.
    prompts = ctx.prompts
    prompted = [word + " " + p for p in prompts]  # BOS, the pair's own " weddings" token, then the prompt
    texts = _generate_rows(
        ctx, [prompts, prompted, prompts], [[], [], [Steer(vector, coeff)]], ctx.settings.sampling()
    )
    fractions = [metrics.topic_fraction(t, ctx.lexicon.topic_words) for t in texts]
    repetition = [statistics.fmean(map(metrics.repetition_rate, t)) for t in texts]
    # Perplexity: the word's tokens inserted after BOS, scoring the text's own tokens, vs ActAdd over c.
    coeffs = [c for c in ctx.settings.ppl_coeffs if c >= 0]
    ratios = _ppl_ratios(
        ctx, [[]] + [[Steer(vector, c)] for c in coeffs], prefixes=[word] + [""] * len(coeffs)
    )
    prompt_ratio = {name: ratios[name][0] for name in ("wedding", "unrelated")}
    actadd_ratio = {name: ratios[name][1:] for name in ("wedding", "unrelated")}
    at = {
        name: actadd_ratio[name][coeffs.index(coeff)] if coeff in coeffs else math.nan
        for name in prompt_ratio
    }
    # Sentiment: "Love"/"Hate" before the prompt vs ActAdd ± c at the sentiment layer.
    s_layer = ctx.sentiment_layer()
    s_vector = ctx.vector(SENTIMENT_PAIR, s_layer)
    s_c = max(abs(c) for c in ctx.settings.sentiment_coeffs)
    s_prompts = [
        [f"{SENTIMENT_PAIR[0]} {p}" for p in prompts],
        [f"{SENTIMENT_PAIR[1]} {p}" for p in prompts],
        prompts,
        prompts,
    ]
    s_texts = _generate_rows(
        ctx, s_prompts, [[], [], [Steer(s_vector, s_c)], [Steer(s_vector, -s_c)]], ctx.settings.sampling()
    )
    s_shares = [ctx.shares(t) for t in s_texts]

    _write_csv(
        ctx.path("prompting.csv"),
        ["measure", "unsteered", "prompting", "actadd"],
        [
            ["wedding_fraction", f"{fractions[0]:.4f}", f"{fractions[1]:.4f}", f"{fractions[2]:.4f}"],
            ["repetition", f"{repetition[0]:.4f}", f"{repetition[1]:.4f}", f"{repetition[2]:.4f}"],
            ["ppl_ratio_wedding_text", "1", f"{prompt_ratio['wedding']:.4f}", f"{at['wedding']:.4f}"],
            ["ppl_ratio_unrelated_text", "1", f"{prompt_ratio['unrelated']:.4f}", f"{at['unrelated']:.4f}"],
        ],
    )
    plots.plot_lines(
        ctx.path("prompting.png"),
        coeffs,
        {},
        title=f"ActAdd (layer {layer}) vs prompting with {word!r}: off-target perplexity ratio",
        ylabel="perplexity ratio",
        panels={
            "held-out wedding text": {"ActAdd": actadd_ratio["wedding"]},
            "unrelated text": {"ActAdd": actadd_ratio["unrelated"]},
        },
        hlines={"unsteered": 1.0},
        panel_hlines={
            "held-out wedding text": {"prompting": prompt_ratio["wedding"]},
            "unrelated text": {"prompting": prompt_ratio["unrelated"]},
        },
    )
    plots.plot_bars(
        ctx.path("prompting_bars.png"),
        ["wedding fraction", "ppl ratio, wedding text", "ppl ratio, unrelated text"],
        {
            "unsteered": [fractions[0], 1.0, 1.0],
            f"prompting ({word.strip()!r} first)": [
                fractions[1],
                prompt_ratio["wedding"],
                prompt_ratio["unrelated"],
            ],
            f"ActAdd (layer {layer}, c={coeff:g})": [fractions[2], at["wedding"], at["unrelated"]],
        },
        title="ActAdd vs prompting",
    )
    rows = [
        ["wedding-topic fraction", *(_pm(f, len(t)) for f, t in zip(fractions, texts, strict=True))],
        ["mean repetition", _fmt(repetition[0]), _fmt(repetition[1]), _fmt(repetition[2])],
        ["perplexity ratio, wedding text", "1", _fmt(prompt_ratio["wedding"], 3), _fmt(at["wedding"], 3)],
        [
            "perplexity ratio, unrelated text",
            "1",
            _fmt(prompt_ratio["unrelated"], 3),
            _fmt(at["unrelated"], 3),
        ],
    ]
    s_rows = [
        [f"prompt starts with {SENTIMENT_PAIR[0]!r}", f"{_fmt(s_shares[0][0])} / {_fmt(s_shares[0][1])}"],
        [f"prompt starts with {SENTIMENT_PAIR[1]!r}", f"{_fmt(s_shares[1][0])} / {_fmt(s_shares[1][1])}"],
        [f"ActAdd layer {s_layer}, c = +{s_c:g}", f"{_fmt(s_shares[2][0])} / {_fmt(s_shares[2][1])}"],
        [f"ActAdd layer {s_layer}, c = −{s_c:g}", f"{_fmt(s_shares[3][0])} / {_fmt(s_shares[3][1])}"],
    ]
    markdown = (
        _table(
            ["", "unsteered", f"prompting ({word!r} prepended)", f"ActAdd (layer {layer}, c = {coeff:g})"],
            rows,
        )
        + "\n\nSentiment, positive / negative share on the same held-out prompts:\n\n"
        + _table(["setting", "positive / negative"], s_rows)
        + "\n"
    )
    summary = {
        "layer": layer,
        "coeff": coeff,
        "fraction": {"unsteered": fractions[0], "prompting": fractions[1], "actadd": fractions[2]},
        "ppl_ratio_prompting": prompt_ratio,
        "ppl_ratio_actadd": at,
        "ppl_ratio_actadd_by_coeff": {"coeffs": coeffs, **actadd_ratio},
        "sentiment": {
            "prompt_positive": s_shares[0],
            "prompt_negative": s_shares[1],
            "actadd_positive": s_shares[2],
            "actadd_negative": s_shares[3],
            "layer": s_layer,
            "coeff": s_c,
        },
    }
    return ExperimentReport(
        "prompting",
        "ActAdd versus prompting",
        markdown,
        summary,
        ["prompting.csv", "prompting.png", "prompting_bars.png"],
    )


# ---- front vs all-positions injection --------------------------------------------------------------------
def run_injection(ctx: Context) -> ExperimentReport:
    layer, working = ctx.topic_setting()
    vector = ctx.vector(TOPIC_PAIR, layer)
    coeffs = list(ctx.settings.injection_coeffs)
    results = {}
    for mode in ("front", "all"):
        spec = SweepSpec(
            vector=vector,
            coeffs=coeffs,
            prompts=ctx.prompts,
            targets=ctx.lexicon.topic_words,
            samples_per_prompt=ctx.settings.samples,
            sampling=ctx.settings.sampling(),
            mode=mode,
            effect=False,
        )
        results[mode] = run_sweep(ctx.loaded, spec)
    ratios = {
        mode: _ppl_ratios(ctx, [[Steer(vector, c, mode=mode)] for c in coeffs])["unrelated"]
        for mode in results
    }
    table_rows, csv_rows = [], []
    for mode, result in results.items():
        cells = _cells(result, layer)
        for j, c in enumerate(coeffs):
            cell = cells[c]
            csv_rows.append(
                [
                    mode,
                    c,
                    f"{cell.value:.4f}",
                    f"{cell.repetition:.4f}",
                    f"{cell.degenerate_share:.4f}",
                    f"{cell.fluency:.4g}",
                    f"{ratios[mode][j]:.4f}",
                    cell.samples[0],
                ]
            )
            table_rows.append([mode, f"{c:g}", _fmt(cell.value), _fmt(cell.degenerate_share), _fmt(cell.fluency, 1), _fmt(ratios[mode][j], 2)])  # fmt: skip
    _write_csv(
        ctx.path("injection.csv"),
        [
            "mode",
            "coeff",
            "wedding_fraction",
            "repetition",
            "degenerate_share",
            "fluency_ppl",
            "ppl_ratio_unrelated",
            "example",
        ],
        csv_rows,
    )
    plots.plot_lines(
        ctx.path("injection.png"),
        coeffs,
        {},
        title=f"Front (ActAdd) vs all-positions injection, layer {layer}",
        ylabel="",
        panels={
            "wedding-topic fraction": {
                m: [_cells(r, layer)[c].value for c in coeffs] for m, r in results.items()
            },
            "perplexity ratio, unrelated text (log scale)": ratios,
        },
        sharey=False,
        logy_panels={"perplexity ratio, unrelated text (log scale)"},
    )
    shown = sorted({c for c in (working, max(coeffs)) if c in coeffs})
    examples = {f"{m}, c = {c:g}": _cells(r, layer)[c].samples[:2] for c in shown for m, r in results.items()}
    markdown = (
        _table(
            [
                "mode",
                "c",
                "wedding fraction",
                "degenerate share",
                "fluency ppl of samples",
                "ppl ratio (unrelated text)",
            ],
            table_rows,
        )
        + "\n\nFluency ppl: the median perplexity of the completions under the unsteered model. Examples:\n\n"
        + "\n".join(f"- {m}: `{' '.join(t.split())}`" for m, texts in examples.items() for t in texts)
        + "\n"
    )
    summary = {
        "layer": layer,
        "coeffs": coeffs,
        "fraction": {m: [_cells(r, layer)[c].value for c in coeffs] for m, r in results.items()},
        "repetition": {m: [_cells(r, layer)[c].repetition for c in coeffs] for m, r in results.items()},
        "degenerate_share": {
            m: [_cells(r, layer)[c].degenerate_share for c in coeffs] for m, r in results.items()
        },
        "fluency": {m: [_cells(r, layer)[c].fluency for c in coeffs] for m, r in results.items()},
        "ppl_ratio_unrelated": ratios,
        "examples": examples,
    }
    return ExperimentReport(
        "injection",
        "Front versus all-positions injection",
        markdown,
        summary,
        ["injection.csv", "injection.png"],
    )


# ---- 5. overhead ---------------------------------------------------------------------------------------
def run_overhead(ctx: Context) -> ExperimentReport:
    layer, coeff = ctx.topic_setting()
    vector = ctx.vector(TOPIC_PAIR, layer)
    prompts = [p for p in ctx.prompts for _ in range(4)]  # a realistic batch: 4 rows per prompt
    n = len(prompts)
    sampling = ctx.settings.sampling(max_new_tokens=max(32, ctx.settings.max_new_tokens))
    settings: dict[str, list[list[Steer]]] = {
        "unsteered": [[] for _ in prompts],
        "ActAdd front, one c": [[Steer(vector, coeff)] for _ in prompts],
        "ActAdd front, a c per row": [[Steer(vector, coeff * (k + 1) / n)] for k in range(n)],
        "all positions": [[Steer(vector, coeff, mode="all")] for _ in prompts],
    }
    # EOS can end a batch early, and steering changes when: compare the process's CPU time per decoding
    # step (the batch runs until its longest row ends; CPU time is less disturbed by other processes than
    # wall time on a shared machine), and report wall time too.
    per_step: dict[str, list[float]] = {k: [] for k in settings}
    wall: dict[str, list[float]] = {k: [] for k in settings}
    generate(ctx.loaded, prompts, settings["unsteered"], sampling)  # warm-up
    for _ in range(ctx.settings.timing_repeats):
        for name, row_steers in settings.items():  # interleaved, so load from other processes hits all alike
            cpu_started = time.process_time()
            result = generate(ctx.loaded, prompts, row_steers, sampling)
            cpu = time.process_time() - cpu_started
            steps = max(1, max(len(r.token_ids) for r in result.rows))
            per_step[name].append(cpu / steps)
            wall[name].append(result.seconds)
    capture_times: dict[str, list[float]] = {f"layer {layer}": [], f"layer {len(ctx.loaded.blocks) - 1}": []}
    for _ in range(ctx.settings.timing_repeats):
        for label in capture_times:
            started = time.perf_counter()
            capture_actadd(ctx.loaded, *TOPIC_PAIR, int(label.split()[1]))
            capture_times[label].append(time.perf_counter() - started)
    texts = _text_sets(ctx)["unrelated"]  # scoring: one forward pass over each text, steered or not
    score_times: dict[str, list[float]] = {"unsteered": [], "ActAdd front, one c": []}
    for _ in range(ctx.settings.timing_repeats):
        for name, steer in (("unsteered", []), ("ActAdd front, one c", [Steer(vector, coeff)])):
            started = time.perf_counter()
            metrics.corpus_perplexities(ctx.loaded, texts, [steer])
            score_times[name].append(time.perf_counter() - started)

    med = {k: statistics.median(v) for k, v in per_step.items()}
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    base = med["unsteered"]
    rows: list[list[str]] = []
    csv_rows: list[list[str | float]] = []
    for name in settings:
        rows.append([name, f"{med[name] * 1000:.2f}", f"{med[name] / base:.3f}", f"{med_wall[name]:.3f}"])
        csv_rows.append(
            ["generate", name, f"{med[name]:.6f}", f"{med[name] / base:.4f}", f"{med_wall[name]:.5f}"]
        )
    score_base = statistics.median(score_times["unsteered"])
    score_ratio = statistics.median(score_times["ActAdd front, one c"]) / score_base
    for name, values in score_times.items():
        csv_rows.append(["score", name, f"{statistics.median(values):.6f}", f"{statistics.median(values) / score_base:.4f}", ""])  # fmt: skip
    capture = {k: statistics.median(v) for k, v in capture_times.items()}
    for label, seconds in capture.items():
        csv_rows.append(["capture", f"capture_actadd at {label}", f"{seconds:.6f}", "", ""])
    _write_csv(
        ctx.path("overhead.csv"),
        ["what", "setting", "median_seconds_per_step_or_call", "ratio_to_unsteered", "median_wall_seconds"],
        csv_rows,
    )
    plots.plot_bars(
        ctx.path("overhead.png"),
        list(settings),
        {"CPU time per decoding step / unsteered": [med[k] / base for k in settings]},
        title=f"Generation cost relative to unsteered ({n} rows, up to {sampling.max_new_tokens} tokens, "
        f"median of {ctx.settings.timing_repeats})",
        fmt="{:.3f}",
    )
    capture_text = ", ".join(f"{seconds * 1000:.1f} ms at {label}" for label, seconds in capture.items())
    markdown = (
        _table(["setting", "CPU ms per decoding step", "ratio to unsteered", "median wall s"], rows)
        + f"\n\nOne batch of {n} rows ({len(ctx.prompts)} prompts × 4) and up to {sampling.max_new_tokens} new "
        f"tokens, median of {ctx.settings.timing_repeats} interleaved runs, {torch.get_num_threads()} CPU "
        f"thread(s). Capturing the vector (one forward pass over the two-row pair, stopped after the layer): "
        f"{capture_text}; unsteered generation of the batch takes {med_wall['unsteered'] * 1000:.0f} ms. "
        f"Scoring {len(texts)} texts, steered / unsteered time: {score_ratio:.3f}.\n"
    )
    summary = {
        "step_ratio": {k: med[k] / base for k in settings},
        "seconds_per_step": med,
        "wall_seconds": med_wall,
        "capture_seconds": capture,
        "score_ratio": score_ratio,
        "threads": torch.get_num_threads(),
        "rows": n,
    }
    return ExperimentReport("overhead", "Overhead", markdown, summary, ["overhead.csv", "overhead.png"])


# ---- 6. quantization -----------------------------------------------------------------------------------
def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(torch.dot(a, b) / (a.norm() * b.norm())) if a.norm() > 0 and b.norm() > 0 else math.nan


def run_quantization(ctx: Context) -> ExperimentReport:
    # bitsandbytes logs "MatMul8bitLt: inputs will be cast ..." on every 8-bit matmul of a float32 input.
    bnb_logger = logging.getLogger("bitsandbytes.autograd._functions")
    level = bnb_logger.level
    bnb_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return _quantization(ctx)
    finally:
        bnb_logger.setLevel(level)


def _quantization(ctx: Context) -> ExperimentReport:
    from engine.models import load_model, unload

    loads = {"float32": ctx.loaded}
    notes = []
    for q in ("8bit", "4bit"):
        try:
            # Same compute dtype as the reference load, so the drift measured is the quantization's alone.
            loads[q] = load_model(
                ctx.loaded.info.path,
                quantize=q,
                device=ctx.loaded.info.device.split(":")[0],
                dtype=ctx.loaded.info.dtype,
            )
        except Exception as exc:  # bitsandbytes missing or no backend for this device: report, go on
            notes.append(f"{q} load failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    layers = ctx.layers
    pairs = {"topic": TOPIC_PAIR, "sentiment": SENTIMENT_PAIR}
    vectors = {
        (q, name): capture_actadd(model, *pair, layers)
        for q, model in loads.items()
        for name, pair in pairs.items()
    }
    cos_rows, csv_rows, series = [], [], {}
    for q in loads:
        if q == "float32":
            continue
        for name in pairs:
            ref, other = vectors[("float32", name)], vectors[(q, name)]
            values = [_cosine(ref.layers[l][1:], other.layers[l][1:]) for l in layers]
            norms = [float(other.layers[l].norm() / ref.layers[l].norm()) for l in layers]
            series[f"{name}, {q} vs float32"] = values
            cos_rows.append([f"{name}, {q}"] + [f"{v:.4f}" for v in values])
            csv_rows += [["cosine", name, q, l, f"{v:.6f}", f"{r:.4f}"] for l, v, r in zip(layers, values, norms, strict=True)]  # fmt: skip
    if series:
        plots.plot_lines(
            ctx.path("quantization_cosine.png"),
            layers,
            series,
            title="Cosine similarity to the float32 vector, per layer (positions ≥ 1)",
            xlabel="layer",
            ylabel="cosine similarity",
        )
    # Cross-steering: each load's topic vector on each load of the model, at the working setting.
    layer, coeff = ctx.topic_setting()
    grid = {}
    for model_q, model in loads.items():
        # the captured vectors hold every layer: steer with the working layer only
        settings: list[list[Steer]] = [[]] + [
            [
                Steer(
                    vectors[(vq, "topic")].replace(layers={layer: vectors[(vq, "topic")].layers[layer]}),
                    coeff,
                )
            ]
            for vq in loads
        ]
        sub = Context(model, ctx.out_dir, ctx.settings, ctx.lexicon, ctx.log)
        texts = _generate_rows(sub, ctx.prompts, settings, ctx.settings.sampling())
        fractions = [metrics.topic_fraction(t, ctx.lexicon.topic_words) for t in texts]
        grid[model_q] = {
            "unsteered": fractions[0],
            **{vq: f for vq, f in zip(loads, fractions[1:], strict=True)},
        }
        csv_rows += [
            ["steer", f"vector {vq}", f"model {model_q}", layer, f"{f:.4f}", ""]
            for vq, f in grid[model_q].items()
        ]
    _write_csv(
        ctx.path("quantization.csv"), ["what", "vector", "load", "layer", "value", "norm_ratio"], csv_rows
    )
    columns = ["unsteered", *loads]
    plots.plot_heatmap(
        ctx.path("quantization_steer.png"),
        [f"model {q}" for q in loads],
        [c if c == "unsteered" else f"vector {c}" for c in columns],
        [[grid[m][c] for c in columns] for m in loads],
        title=f"Wedding fraction with vectors from each load (layer {layer}, c = {coeff:g})",
        colorbar="wedding-topic fraction",
        vmin=0.0,
        vmax=1.0,
    )
    markdown = (
        "Cosine similarity with the float32 capture, per layer:\n\n"
        + _table(["vector, load", *[f"layer {l}" for l in layers]], cos_rows)
        + f"\n\nWedding-topic fraction when a vector captured on one load steers another (layer {layer}, "
        f"c = {coeff:g}):\n\n"
        + _table(
            ["model \\ vector", *columns],
            [[f"model {m}"] + [_fmt(grid[m][c]) for c in columns] for m in loads],
        )
        + "\n"
    )
    if notes:
        markdown += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    summary = {
        "cosine": series,
        "steer": grid,
        "layer": layer,
        "coeff": coeff,
        "notes": notes,
    }
    files = ["quantization.csv", "quantization_steer.png"] + (["quantization_cosine.png"] if series else [])
    for q, model in loads.items():
        if q != "float32":
            unload(model)
    return ExperimentReport("quantization", "Quantization drift", markdown, summary, files)


def _weights_digest(loaded: LoadedModel, limit: int = 200 * 2**20) -> str:
    """sha256 (first 16 hex) of the weight files, to tell which model a report came from; '' if large."""
    from engine.models import weight_files

    files = weight_files(Path(loaded.info.path))
    if not files or sum(f.stat().st_size for f in files) > limit:
        return ""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


# ---- the runner ------------------------------------------------------------------------------------------
RUNNERS: dict[str, Callable[[Context], ExperimentReport]] = {
    "topic": run_topic,
    "sentiment": run_sentiment,
    "perplexity": run_perplexity,
    "prompting": run_prompting,
    "injection": run_injection,
    "overhead": run_overhead,
    "quantization": run_quantization,
}


def run_experiments(
    loaded: LoadedModel,
    names: Sequence[str],
    out_dir: str | Path,
    *,
    settings: Settings | None = None,
    lexicon: Lexicon | None = None,
    log: Log | None = None,
) -> dict[str, ExperimentReport]:
    """Run the named experiments ("all" for every one) and write their files and `summary.json`."""
    wanted = list(EXPERIMENTS) if "all" in names else list(dict.fromkeys(names))
    if bad := [n for n in wanted if n not in RUNNERS]:
        raise InvalidInputError(f"unknown experiment {bad[0]!r}; choose from {', '.join(EXPERIMENTS)} or all")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        loaded, out, settings or Settings(), lexicon or load_lexicon(loaded), log or (lambda _: None)
    )
    reports = {}
    for name in wanted:
        ctx.log(f"{name}: running")
        started = time.perf_counter()
        report = RUNNERS[name](ctx)
        report.seconds = time.perf_counter() - started
        (out / f"{name}.md").write_text(f"## {report.title}\n\n{report.markdown}", encoding="utf-8")
        report.files.append(f"{name}.md")
        reports[name] = report
        ctx.log(f"{name}: done in {report.seconds:.1f} s")
    summary_path = out / "summary.json"
    summary = {}
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {}
    summary["_model"] = {
        "source": loaded.info.source,
        "lexicon": ctx.lexicon.source,
        "weights_sha256": _weights_digest(loaded),
        "settings": dataclasses.asdict(ctx.settings),
    }
    for name, report in reports.items():
        summary[name] = {**report.summary, "seconds": round(report.seconds, 2), "files": report.files}
    summary_path.write_text(json.dumps(summary, indent=1, default=float), encoding="utf-8")
    return reports
