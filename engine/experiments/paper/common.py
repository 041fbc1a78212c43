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
from engine.experiments import metrics
from engine.experiments.sweep import SweepCell, SweepResult, SweepSpec, run_sweep
from engine.generation import SamplingConfig, generate
from engine.models import LoadedModel
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
def fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def pm(share: float, n: int) -> str:
    """A share with its binomial standard error, e.g. '0.80 ± 0.06'."""
    if not n or not math.isfinite(share):
        return fmt(share)
    return f"{share:.2f} ± {math.sqrt(share * (1 - share) / n):.2f}"


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
    ctx: Context, prompts: Sequence[str], steers: Sequence[Sequence[Steer]], sampling: SamplingConfig
) -> list[list[str]]:
    """For each setting (a steer list, or a prompt list of the same length as `steers`), its completions:
    prompts × samples rows per setting, all settings in as few generate calls as fit in a batch."""
    per_setting = prompts if prompts and isinstance(prompts[0], list) else [prompts] * len(steers)
    if len(per_setting) != len(steers):
        raise InvalidInputError(f"{len(per_setting)} prompt lists for {len(steers)} settings")
    rows_prompts, rows_steers, bounds = [], [], [0]
    for steer, setting_prompts in zip(steers, per_setting, strict=True):
        for p in setting_prompts:
            for _ in range(ctx.settings.samples):
                rows_prompts.append(p)
                rows_steers.append(list(steer))
        bounds.append(len(rows_prompts))
    texts: list[str] = []
    batch = 96
    for begin in range(0, len(rows_prompts), batch):
        result = generate(
            ctx.loaded, rows_prompts[begin : begin + batch], rows_steers[begin : begin + batch], sampling
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
    out = {}
    for name, texts in text_sets(ctx).items():
        base = metrics.corpus_perplexities(ctx.loaded, texts, [[]])[0]
        values = metrics.corpus_perplexities(ctx.loaded, texts, settings, prefixes=prefixes)
        out[name] = [v / base for v in values]
        out[f"{name}_base"] = base
    return out
