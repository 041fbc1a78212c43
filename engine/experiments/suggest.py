"""Suggest settings: find a (layer, coefficient) that steers a real model, in a fraction of a full grid.

1. **Scale.** A raw coefficient means nothing across models (a one-token ActAdd vector has norm ~200 at
   layer 6 of SmolLM2 and ~2 on the demo model), so the search runs over normalised strengths
   (`engine.strength`): ratio r adds r typical residual norms at the layer, c = r·|resid_l| / |v_l|.
2. **Coarse layer sweep.** A few layers spread over the depth, each at a few ratios, plus one unsteered
   cell; every cell is a row group of the same batched `generate` calls.
3. **Refinement.** At the best `top_layers` layers, the ratios between and beyond the coarse ones
   (geometric bisection), in rounds, while the best cell still improves.
4. **Choice.** The coherent cell (`coherence`) with the best lower confidence bound (`stats`); stop early
   once the answer is clear (`is_clear`): its lower bound reaches `clear_score`, or every sample of it hit
   (no cell can score higher) with its interval above the unsteered one's.

Cost is counted in forward passes of one sequence: a decoding step of one row, the prompt pass of one
row, the scoring pass of one completion, one prompt of a capture.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.errors import InvalidInputError
from engine.experiments import coherence
from engine.experiments.sweep import (
    DEFAULT_PROMPTS,
    SAMPLED_METRICS,
    ProgressCallback,
    SweepCell,
    SweepSpec,
    generation_cells,
    vector_for_layer,
)
from engine.generation import SamplingConfig
from engine.models import LoadedModel
from engine.residual_norms import residual_norm_profile
from engine.steering import Steer
from engine.strength import coefficients_for_strength
from engine.vector import MODES, SteeringVector

# Coarse layers as fractions of depth (the paper's GPT-2-XL settings are layers 6-20 of 48: 0.12-0.42).
COARSE_FRACTIONS = (0.1, 0.25, 0.4, 0.55, 0.7)
# Coarse ratios (normalised strengths, c·|v|/|resid|). Front injection replaces one position's
# residual: it needs r of several to matter. All-position directions act on every token: r ~ 1
# already breaks text.
COARSE_RATIOS = {"front": (2.0, 8.0, 32.0), "direction": (0.25, 1.0, 4.0)}
MAX_RATIO_STEPS = 2  # refinement reaches at most this many factors of 2 beyond the coarse range

Log = Callable[[str], None]


def _round(value: float) -> float:
    """Two significant figures: a coefficient a user can type."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.2g}")


@dataclass
class SuggestSpec:
    vector: SteeringVector
    metric: str = "target-words"  # a sampled metric: target-words or sentiment
    targets: list[str] = field(default_factory=list)
    sentiment_sign: int = 1
    mode: str | None = None  # None: the vector's default mode
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    samples_per_prompt: int = 4
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig.paper(max_new_tokens=24))
    layers: list[int] | None = None  # coarse layers; None: COARSE_FRACTIONS of the depth
    ratios: tuple[float, ...] | None = None  # coarse ratios; None: COARSE_RATIOS for the mode
    top_layers: int = 2  # layers refined after the coarse sweep
    clear_score: float = 0.8  # stop once a coherent cell's lower confidence bound reaches this
    max_rounds: int = 2  # refinement rounds
    guard: coherence.CoherenceGuard = field(default_factory=lambda: coherence.DEFAULT_GUARD)

    def validate(self, n_layers: int) -> None:
        if self.metric not in SAMPLED_METRICS:
            raise InvalidInputError(
                f"suggest measures sampled text: choose --metric {' or '.join(SAMPLED_METRICS)}"
            )
        if self.mode is not None and self.mode not in MODES:
            raise InvalidInputError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.mode == "ablate":
            raise InvalidInputError("suggest searches coefficients; mode ablate has none to search")
        if self.layers is not None and (bad := [l for l in self.layers if not 0 <= l < n_layers]):
            raise InvalidInputError(f"layer {bad[0]} is out of range: the model has {n_layers} layers")
        if self.top_layers < 1 or self.max_rounds < 0:
            raise InvalidInputError("top_layers must be >= 1 and max_rounds >= 0")
        self.sweep_spec().validate()

    def sweep_spec(self) -> SweepSpec:
        return SweepSpec(
            effect=False,  # suggest ranks by the metric; the effect's shadow rows would double its cost
            vector=self.vector,
            coeffs=[1.0],
            prompts=self.prompts,
            metric=self.metric,
            targets=self.targets,
            samples_per_prompt=self.samples_per_prompt,
            sampling=self.sampling,
            mode=self.mode,
            sentiment_sign=self.sentiment_sign,
            guard=self.guard,
        )


@dataclass
class Tried:
    cell: SweepCell
    ratio: float
    stage: str  # "coarse" or "refine N"


@dataclass
class Suggestion:
    layer: int
    coeff: float
    strength: float  # the same setting as a normalised strength (`engine.strength`): `--steer V:<s>n@L`
    mode: str
    metric: str
    score: float
    ci_low: float
    ci_high: float
    coherent: bool
    forward_passes: int
    baseline: float  # the unsteered cell's score
    baseline_ci: tuple[float, float]  # its 95% interval
    vector: SteeringVector  # the vector at `layer`, as steered (re-captured there when it has prompts)
    tried: list[Tried]
    grid_forward_passes: int  # the cost of the full grid: every layer × the coarse and refined ratios
    stopped_early: bool

    @property
    def clear_effect(self) -> bool:
        """The chosen cell's interval lies above the unsteered one's: an effect, not sampling noise."""
        return bool(self.ci_low > self.baseline_ci[1])

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "coeff": self.coeff,
            "strength": self.strength,
            "mode": self.mode,
            "metric": self.metric,
            "score": self.score,
            "ci": [self.ci_low, self.ci_high],
            "coherent": self.coherent,
            "forward_passes": self.forward_passes,
            "grid_forward_passes": self.grid_forward_passes,
            "baseline": self.baseline,
            "baseline_ci": list(self.baseline_ci),
            "clear_effect": self.clear_effect,
            "stopped_early": self.stopped_early,
            "tried": [
                {
                    "layer": t.cell.layer,
                    "coeff": t.cell.coeff,
                    "ratio": t.ratio,
                    "stage": t.stage,
                    "score": t.cell.value,
                    "ci": [t.cell.ci_low, t.cell.ci_high],
                    "coherent": not t.cell.degenerate,
                    "incoherent_share": t.cell.degenerate_share,
                    "ppl_ratio": t.cell.ppl_ratio,
                    "example": t.cell.samples[0] if t.cell.samples else "",
                }
                for t in self.tried
            ],
        }


def _rank(cell: SweepCell) -> tuple[float, float, float]:
    return (cell.bound(True), cell.value, -abs(cell.coeff))


def suggest(
    loaded: LoadedModel,
    spec: SuggestSpec,
    *,
    log: Log | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Suggestion:
    """Find the strongest coherent steering setting of `spec.vector` (see the module docstring).

    `progress(done, total)` counts generated tokens of all rows against the most the search can take (the
    coarse cells and every refinement round); a search that stops early jumps to `total` at its end.
    """
    n_layers = len(loaded.blocks)
    spec.validate(n_layers)
    log = log or (lambda _: None)
    cancel = cancel or threading.Event()
    mode = spec.mode or spec.vector.default_mode
    sweep = spec.sweep_spec()
    rows_per_cell = len([p for p in spec.prompts if p.strip()]) * spec.samples_per_prompt
    per_cell_passes = rows_per_cell * (spec.sampling.max_new_tokens + 1)  # decoding + scoring passes
    layers = spec.layers or sorted({min(n_layers - 1, round(f * n_layers)) for f in COARSE_FRACTIONS})
    ratios = spec.ratios or COARSE_RATIOS["front" if mode == "front" else "direction"]
    cell_steps = rows_per_cell * spec.sampling.max_new_tokens  # one cell's share of `progress`
    most_cells = len(layers) * len(ratios) + 1 + min(spec.top_layers, len(layers)) * 2 * spec.max_rounds
    steps_done = 0
    passes = 1  # the typical-norm pass (measured once per model, then cached)
    typical = residual_norm_profile(loaded)
    vectors: dict[int, SteeringVector] = {}
    at_layers: dict[int, int | None] = {}
    units: dict[int, float] = {}

    def prepare(layer: int) -> None:
        nonlocal passes
        if layer in vectors:
            return
        vector, at_layer = vector_for_layer(loaded, spec.vector, layer)
        passes += 2 if vector is not spec.vector else 0  # a re-capture reads both prompts once
        vectors[layer], at_layers[layer] = vector, at_layer
        # c for strength 1 at this layer; the one rule for a vector's size (raises when it is zero)
        units[layer] = coefficients_for_strength(Steer(vector, mode=mode, at_layer=at_layer), 1.0, typical)[
            layer
        ]

    tried: list[Tried] = []
    baseline_fluency: list[float] | None = None
    baseline_score = math.nan
    baseline_ci = (math.nan, math.nan)

    def run(cells: list[tuple[int, float]], stage: str) -> None:
        nonlocal passes, baseline_fluency, baseline_score, baseline_ci, steps_done
        keys = [(layer, _round(units[layer] * ratio)) for layer, ratio in cells]
        steers = {
            key: [Steer(vectors[key[0]], key[1], mode=mode, at_layer=at_layers[key[0]])] for key in keys
        }
        first = baseline_fluency is None
        if first:  # the unsteered cell: the baseline score and the coherence guard's scale
            zero = (cells[0][0], 0.0)
            keys, steers = [zero, *keys], {zero: [], **steers}
        before = steps_done

        def stage_progress(done: int, _total: int) -> None:
            if progress is not None:
                progress(before + done, most_cells * cell_steps)

        done, baseline = generation_cells(
            loaded,
            sweep,
            keys,
            steers,
            baseline_fluency=baseline_fluency,
            progress=stage_progress,
            cancel=cancel,
        )
        passes += per_cell_passes * len(done)
        steps_done += cell_steps * len(keys)
        if first and done:
            baseline_fluency, baseline_score = baseline, done[0].value
            baseline_ci = (done[0].ci_low, done[0].ci_high)
            log(f"unsteered: {done[0].value:.2f}")
            done = done[1:]
        for (layer, ratio), cell in zip(cells, done, strict=False):
            tried.append(Tried(cell, ratio, stage))
            flag = "" if not cell.degenerate else " (incoherent)"
            log(f"{stage}: layer {layer}, c = {cell.coeff:g} (r = {ratio:g}): {cell.value:.2f}{flag}")

    for layer in layers:
        prepare(layer)
    run([(layer, r) for layer in layers for r in ratios], "coarse")
    stopped_early = is_clear(_best(tried), baseline_ci[1], spec.clear_score)
    if not stopped_early and not cancel.is_set():
        by_layer = sorted(
            layers,
            key=lambda l: max((_rank(t.cell) for t in tried if t.cell.layer == l and not t.cell.degenerate),
                              default=(-math.inf, -math.inf, 0.0)),
            reverse=True,
        )  # fmt: skip
        focus = by_layer[: spec.top_layers]
        for round_ in range(1, spec.max_rounds + 1):
            todo = _next_ratios(tried, focus, ratios)
            if not todo or cancel.is_set():
                break
            before = _best(tried)
            run(todo, f"refine {round_}")
            after = _best(tried)
            if is_clear(after, baseline_ci[1], spec.clear_score):
                stopped_early = True
                break
            if before is not None and after is before:
                break  # the round found nothing better: the answer is clear
    chosen = _best(tried)
    coherent = chosen is not None
    if chosen is None:  # nothing coherent: report the mildest setting tried, flagged
        if not tried:
            raise InvalidInputError("the search was cancelled before any setting was measured")
        chosen = min(tried, key=lambda t: (t.ratio, -t.cell.value))
    if progress is not None and not cancel.is_set():
        progress(most_cells * cell_steps, most_cells * cell_steps)
    grid_ratios = {t.ratio for t in tried}
    grid_passes = n_layers * (2 + len(grid_ratios) * per_cell_passes) + per_cell_passes + 1
    cell = chosen.cell
    return Suggestion(
        layer=cell.layer,
        coeff=cell.coeff,
        strength=chosen.ratio,
        mode=mode,
        metric=spec.metric,
        score=cell.value,
        ci_low=cell.ci_low,
        ci_high=cell.ci_high,
        coherent=coherent,
        forward_passes=passes,
        baseline=baseline_score,
        baseline_ci=baseline_ci,
        vector=vectors[cell.layer],
        tried=tried,
        grid_forward_passes=grid_passes,
        stopped_early=stopped_early,
    )


def is_clear(best: Tried | None, baseline_high: float, clear_score: float) -> bool:
    """Whether the search can stop: the best coherent cell is clearly strong.

    Either its lower confidence bound reaches `clear_score`, or every one of its samples hit (a share of
    1, which no other cell can beat, only tie) and its interval lies above the unsteered cell's. The
    second rule is what lets small runs stop: with 8 samples a share's Wilson lower bound is at most 0.68,
    below any useful `clear_score`.
    """
    if best is None:
        return False
    cell = best.cell
    if cell.bound(True) >= clear_score:
        return True
    return cell.value >= 1.0 and cell.ci_low > baseline_high


def _best(tried: list[Tried]) -> Tried | None:
    coherent = [t for t in tried if not t.cell.degenerate and math.isfinite(t.cell.value)]
    return max(coherent, key=lambda t: _rank(t.cell)) if coherent else None


def _next_ratios(tried: list[Tried], focus: list[int], coarse: tuple[float, ...]) -> list[tuple[int, float]]:
    """Ratios to try next at each focus layer: halfway (geometrically) around its best coherent ratio,
    and one step beyond it when it sits at the edge of what was tried; never past an incoherent ratio."""
    low, high = min(coarse) / 2**MAX_RATIO_STEPS, max(coarse) * 2**MAX_RATIO_STEPS
    out = []
    for layer in focus:
        here = [t for t in tried if t.cell.layer == layer]
        done = {t.ratio for t in here}
        broken = min((t.ratio for t in here if t.cell.degenerate), default=math.inf)
        good = [t for t in here if not t.cell.degenerate]
        if good:
            centre = max(good, key=lambda t: _rank(t.cell)).ratio
            candidates = [centre / 2, centre * 2]
        else:  # everything broke: go weaker
            candidates = [min(done) / 4, min(done) / 2]
        for ratio in candidates:
            if low <= ratio <= high and ratio < broken and ratio not in done:
                out.append((layer, ratio))
    return out
