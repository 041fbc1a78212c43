"""Shared inputs, settings and helpers of the paper's experiments (`engine.experiments.replication`)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.capture import capture_actadd
from engine.errors import InvalidInputError
from engine.experiments import defaults, metrics, stats
from engine.experiments.sweep import SweepCell, SweepResult, SweepSpec, run_sweep
from engine.generation import SamplingConfig, generate
from engine.models import LoadedModel
from engine.sampling import resolve_row_seeds
from engine.steering import Steer
from engine.vector import SteeringVector

EXPERIMENTS = (
    "topic", "sentiment", "perplexity", "prompting", "injection", "methods", "overhead", "quantization",
)  # fmt: skip
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
    # prompts that already lean one way, for sentiment steering against the grain
    positive_prompts: list[str] = field(default_factory=lambda: list(POSITIVE_PROMPTS))
    negative_prompts: list[str] = field(default_factory=lambda: list(NEGATIVE_PROMPTS))


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

POSITIVE_PROMPTS: tuple[str, ...] = (
    "I had the best day at the park with my friends, and",
    "The concert last night was wonderful, and",
    "My grandmother's cooking always makes me happy because",
    "We finally won the championship, so",
    "The new puppy is so sweet that",
    "Thanks to my kind neighbors, the move was easy and",
)
NEGATIVE_PROMPTS: tuple[str, ...] = (
    "The traffic this morning was awful, and",
    "I lost my wallet and my phone died, so",
    "The food at that restaurant was disgusting, and",
    "My boss yelled at me again today, and",
    "The rain ruined our trip, and",
    "I failed the exam after weeks of study, so",
)

# Off-target text, written for this project (not model output): plain English on the wedding topic, and
# on everyday topics without a wedding word, two sentences each.
WEDDING_TEXT = (
    "The bride walked slowly down the aisle while the groom waited at the altar. Her father held her arm "
    "and smiled at the guests.",
    "After the ceremony the newlyweds greeted their friends at the reception. The band played until "
    "midnight and nobody wanted to leave.",
    "She tried on three wedding dresses before she found the right one. Her sister cried when she saw it.",
    "The couple wrote their own vows and read them in a small stone chapel by the sea.",
    "My cousin asked me to be his best man, so I spent the week writing a short speech about him.",
    "The wedding cake had four layers and was covered in white roses made of sugar.",
    "They sent the invitations in March and booked a hall for a hundred and twenty guests.",
    "The flower girl threw petals on the floor, and the ring bearer dropped the rings twice.",
    "After the honeymoon in Italy, they moved into a small flat near the river.",
    "Planning a wedding takes months: the venue, the music, the photographer and the seating plan.",
    "The bridesmaids wore pale blue dresses and carried bouquets of daisies.",
    "At the end of the night the bride and groom cut the cake and danced their first dance.",
)
UNRELATED_TEXT = (
    "The train left the station at noon and reached the coast by evening. We bought fish and chips and "
    "walked along the harbour.",
    "The team trained at the stadium all week, and the coach planned every detail of the next match.",
    "My uncle made a pot of vegetable soup and baked fresh bread for dinner on Sunday.",
    "The rain fell all afternoon, and the wind blew leaves through the empty streets of the town.",
    "To repair the bicycle, first remove the wheel, then find the hole in the tube and patch it.",
    "The museum opened a new room about ancient Egypt, with tools, jewellery and painted boxes.",
    "Our garden has tomatoes, beans and a row of sunflowers that grow taller than the fence.",
    "The library closes at six on weekdays, but students can study in the reading room until nine.",
    "A cold front will move across the region tonight, bringing frost to the higher valleys.",
    "He spent the morning fixing a leak under the kitchen sink and the afternoon painting the door.",
    "The new software update makes the laptop start faster and fixes a problem with the keyboard.",
    "Every summer the village holds a market where farmers sell cheese, honey and apples.",
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
    offtarget_topic=list(WEDDING_TEXT),
    offtarget_unrelated=list(UNRELATED_TEXT),
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
    max_layers: int | None = None  # sweep at most this many layers, spread over the depth (None: every)
    samples: int = 5  # samples per prompt and setting
    max_new_tokens: int = 32
    topic_coeffs: list[float] = field(default_factory=lambda: [-4, -1, 0, 1, 2, 4, 8, 16])
    sentiment_coeffs: list[float] = field(default_factory=lambda: [-16, -8, -4, -2, 0, 2, 4, 8, 16])
    ppl_coeffs: list[float] = field(default_factory=lambda: [-4, -1, 0, 0.5, 1, 2, 4, 8, 16])
    injection_coeffs: list[float] = field(default_factory=lambda: [0, 1, 2, 4, 8, 16])
    method_coeffs: list[float] = field(
        default_factory=lambda: [0.5, 1, 2, 4]
    )  # mean-diff / PCA, all positions
    n_pairs: int = 32  # prompt pairs for mean-diff / PCA
    n_texts: int = 24  # off-target texts per set
    timing_repeats: int = 9
    overhead_rows_per_prompt: int = 4
    overhead_tokens: int = 32
    quantization_steer: bool = True  # also steer each load with each load's vector (slow on real models)
    layers: list[int] | None = None  # None: every layer

    @classmethod
    def quick(cls) -> Settings:
        # Sized for a 135M-parameter model on 2 CPU cores in under 10 minutes: 4 layers, 8 samples of 16
        # tokens per cell, every cell of an experiment a row of the same batch. Shares of 8 samples carry
        # Wilson intervals ~0.5 wide: a smoke test of the whole pipeline, not a measurement.
        return cls(
            n_prompts=4,
            samples=2,
            max_new_tokens=16,
            max_layers=4,
            topic_coeffs=[0, 4, 16],
            sentiment_coeffs=[-8, 0, 8],
            ppl_coeffs=[0, 4],
            injection_coeffs=[0, 4],
            method_coeffs=[1, 4],
            n_pairs=8,
            n_texts=6,
            timing_repeats=1,
            overhead_rows_per_prompt=1,
            overhead_tokens=16,
            quantization_steer=False,
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
        if self.settings.layers:
            return list(self.settings.layers)
        return spread_layers(len(self.loaded.blocks), self.settings.max_layers)

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
                effect=False,  # the paper's measures only: the effect's shadow rows double the rows
                vector=self.vector(TOPIC_PAIR, self.layers[0]),
                coeffs=list(self.settings.topic_coeffs),
                layers=self.layers,
                prompts=self.prompts,
                metric="target-words",
                targets=self.lexicon.topic_words,
                samples_per_prompt=self.settings.samples,
                sampling=self.settings.sampling(),
            )
            self._topic = run_sweep(self.loaded, spec)
        return self._topic

    def topic_setting(self) -> tuple[int, float]:
        """(layer, c): the 'working' setting: the smallest c > 0 of a coherent cell whose value is inside
        the confidence interval of the best cell (ranked by lower bound, `SweepResult.best`)."""
        result = self.topic_sweep()
        positive = [c for c in result.cells if c.coeff > 0 and not c.degenerate]
        best = result.best()
        if not positive or best is None or best.coeff <= 0:
            return self.layers[0], max(self.settings.topic_coeffs)
        good = [c for c in positive if c.value >= best.bound(True) and c.value > 0] or [best]
        chosen = min(good, key=lambda c: (c.coeff, -c.value))
        return chosen.layer, chosen.coeff

    def sentiment_sweep(self) -> SweepResult:
        if self._sentiment is None:
            self.log("sentiment: sweeping layers × coefficients")
            spec = SweepSpec(
                effect=False,  # the paper's measures only: the effect's shadow rows double the rows
                vector=self.vector(SENTIMENT_PAIR, self.layers[0]),
                coeffs=list(self.settings.sentiment_coeffs),
                layers=self.layers,
                prompts=self.prompts,
                metric="sentiment",
                sentiment_sign=1,
                samples_per_prompt=self.settings.samples,
                sampling=self.settings.sampling(),
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
        """(positive, negative) share of `texts` by VADER."""
        return defaults.vader_shares(texts)

    def polarity(self, texts: Sequence[str]) -> float:
        pos, neg = self.shares(texts)
        return pos - neg


# ---- helpers -------------------------------------------------------------------------------------------
def spread_layers(n_layers: int, k: int | None) -> list[int]:
    """`k` layers spread over the first 80% of the depth (every layer when k is None or >= n_layers).

    The centres of k equal bins of [0, 0.8 n): 30 layers, k = 4 -> 3, 9, 15, 21. The last fifth is left
    out: the paper's working layers are 6-20 of 48 (0.12-0.42), and late layers barely steer.
    """
    if k is None or k >= n_layers:
        return list(range(n_layers))
    return sorted({min(n_layers - 1, int((i + 0.5) / k * 0.8 * n_layers)) for i in range(k)})


def ci_text(share: float, n: int) -> str:
    """A share with its 95% Wilson interval, e.g. '0.80 [0.49, 0.94]'."""
    if not n or not math.isfinite(share):
        return fmt(share)
    low, high = stats.wilson(round(share * n), n)
    return f"{share:.2f} [{low:.2f}, {high:.2f}]"


def fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def pm(share: float, n: int) -> str:
    """A share of n samples with its 95% Wilson interval (see `ci_text`)."""
    return ci_text(share, n)


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def cells_at(result: SweepResult, layer: int) -> dict[float, SweepCell]:
    return {c.coeff: c for c in result.cells if c.layer == layer}


def generate_rows(
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
                rows_prompts.append(str(p))
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


# ---- 3. off-target perplexity ----------------------------------------------------------------------------
def text_sets(ctx: Context) -> dict[str, list[str]]:
    n = ctx.settings.n_texts
    return {"wedding": ctx.lexicon.offtarget_topic[:n], "unrelated": ctx.lexicon.offtarget_unrelated[:n]}


def ppl_ratios(
    ctx: Context, settings: Sequence[Sequence[Steer]], prefixes: Sequence[str] | None = None
) -> dict:
    """{text set: [perplexity ratio per setting]} against the plain unsteered model."""
    out: dict = {}
    for name, texts in text_sets(ctx).items():
        base = metrics.corpus_perplexities(ctx.loaded, texts, [[]])[0]
        values = metrics.corpus_perplexities(ctx.loaded, texts, settings, prefixes=prefixes)
        out[name] = [v / base for v in values]
        out[f"{name}_base"] = base
    return out
