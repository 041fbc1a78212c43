"""The state the paper's experiments share (`Context`: the model, the inputs, the two sweeps later
experiments reuse) and the measurements several of them make (batched completions, perplexity ratios)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from engine.capture import capture_actadd
from engine.errors import InvalidInputError
from engine.experiments import defaults, metrics
from engine.experiments.paper.lexicon import SENTIMENT_PAIR, TOPIC_PAIR, Lexicon
from engine.experiments.paper.settings import Log, Settings
from engine.experiments.sweep import SweepResult, SweepSpec, run_sweep
from engine.experiments.sweep_cells import MAX_ROWS_PER_BATCH, SweepCell
from engine.generation import SamplingConfig, generate
from engine.models import LoadedModel
from engine.sampling import resolve_row_seeds
from engine.steering import Steer
from engine.vector import SteeringVector


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

    def _sweep(self, name: str, pair: tuple[str, str], coeffs: list[float], **measure) -> SweepResult:
        """A layers × coefficients sweep of `pair`'s vector on the held-out prompts, measured by `measure`."""
        self.log(f"{name}: sweeping layers × coefficients")
        spec = SweepSpec(
            effect=False,  # the paper's measures only: the effect's shadow rows double the rows
            vector=self.vector(pair, self.layers[0]),
            coeffs=list(coeffs),
            layers=self.layers,
            prompts=self.prompts,
            samples_per_prompt=self.settings.samples,
            sampling=self.settings.sampling(),
            **measure,
        )
        return run_sweep(self.loaded, spec)

    def topic_sweep(self) -> SweepResult:
        if self._topic is None:
            self._topic = self._sweep(
                "topic",
                TOPIC_PAIR,
                self.settings.topic_coeffs,
                metric="target-words",
                targets=self.lexicon.topic_words,
            )
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
            self._sentiment = self._sweep(
                "sentiment", SENTIMENT_PAIR, self.settings.sentiment_coeffs, metric="sentiment"
            )
        return self._sentiment

    def sentiment_layer(self) -> int:
        """The layer whose positive-minus-negative share moves most between the extreme coefficients."""
        result = self.sentiment_sweep()
        lo, hi = min(self.settings.sentiment_coeffs), max(self.settings.sentiment_coeffs)

        def spread(layer: int) -> float:
            cells = cells_at(result, layer)
            return self.polarity(cells[hi].completions) - self.polarity(cells[lo].completions)

        return max(self.layers, key=spread)

    def shares(self, texts: Sequence[str]) -> tuple[float, float]:
        """(positive, negative) share of `texts` by VADER."""
        return defaults.vader_shares(texts)

    def polarity(self, texts: Sequence[str]) -> float:
        pos, neg = self.shares(texts)
        return pos - neg


def spread_layers(n_layers: int, k: int | None) -> list[int]:
    """`k` layers spread over the first 80% of the depth (every layer when k is None or >= n_layers).

    The centres of k equal bins of [0, 0.8 n): 30 layers, k = 4 -> 3, 9, 15, 21. The last fifth is left
    out: the paper's working layers are 6-20 of 48 (0.12-0.42), and late layers barely steer.
    """
    if k is None or k >= n_layers:
        return list(range(n_layers))
    return sorted({min(n_layers - 1, int((i + 0.5) / k * 0.8 * n_layers)) for i in range(k)})


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
    batch = MAX_ROWS_PER_BATCH  # the sweeps' batch size
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


# ---- off-target perplexity -----------------------------------------------------------------------------
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
