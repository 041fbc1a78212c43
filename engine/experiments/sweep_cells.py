"""The cells of a sweep and how they are measured: sampled (batched `generate` calls, common random
numbers, the coherence guard against the unsteered samples) or by forward passes (target-prob, perplexity).

`engine.experiments.sweep.run_sweep` decides which cells there are; this module fills them in.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.experiments import coherence, defaults, metrics, stats
from engine.generation import generate
from engine.models import LoadedModel
from engine.sampling import resolve_row_seeds
from engine.steering import Steer

if TYPE_CHECKING:  # sweep imports this module at run time
    from engine.experiments.sweep import SweepSpec

MAX_ROWS_PER_BATCH = 96  # rows of one generate call (sampled metrics)
MAX_ROWS_PER_FORWARD = 32  # rows of one forward pass (target-prob, perplexity)

ProgressCallback = Callable[[int, int], None]


@dataclass
class SweepCell:
    layer: int
    coeff: float
    value: float
    repetition: float  # mean repetition rate of the samples (0 for metrics without samples)
    degenerate: bool  # most samples are loops or word salad
    samples: list[str]  # prompt + completion, for target-words; a short description otherwise
    completions: list[str] = field(default_factory=list)  # the generated text alone (target-words)
    fluency: float = math.nan  # median perplexity of the completions under the unsteered model
    degenerate_share: float = 0.0  # share of samples that are loops, salad, empty or implausible
    ci_low: float = math.nan  # 95% confidence interval of `value` (Wilson for shares, t for means)
    ci_high: float = math.nan
    ppl_ratio: float = math.nan  # `fluency` / the unsteered samples' median fluency
    effect: float = math.nan  # mean per-token KL(steered || unsteered) on the same context, in nats
    steer_coeff: float = math.nan  # the raw c applied at this cell's layer (= coeff unless strengths)

    @property
    def applied_coeff(self) -> float:
        """The raw c this cell applied at its layer (its grid coordinate is a strength in a strength sweep)."""
        return float(self.steer_coeff) if math.isfinite(self.steer_coeff) else float(self.coeff)

    def bound(self, higher_is_better: bool = True) -> float:
        """The pessimistic end of the interval (lower bound, or upper for lower-is-better), else value."""
        edge = self.ci_low if higher_is_better else self.ci_high
        return edge if math.isfinite(edge) else self.value


class ProgressTracker:
    """Reports `progress(done, total)` only forward, and 0 once at the start."""

    def __init__(self, callback: ProgressCallback | None, total: int):
        self.callback = callback
        self.total = max(1, total)
        self.done = 0
        self.report(0)

    def report(self, done: int) -> None:
        done = min(max(done, self.done), self.total)
        if self.callback is not None and (done > self.done or done == 0):
            self.callback(done, self.total)
        self.done = done


_BASELINE = (None, 0.0)  # an unsteered pseudo-cell, run first when no coefficient is 0


def score_completions(spec: SweepSpec, completions: list[str]) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) of one cell's completions under a sampled metric (a share, Wilson CI)."""
    if spec.metric == "sentiment":
        hits = sum(defaults.vader_label(t) == spec.sentiment_sign for t in completions)
    else:
        hits = sum(metrics.count_hits(t, spec.targets) > 0 for t in completions)
    n = len(completions)
    low, high = stats.wilson(hits, n)
    return (hits / n if n else math.nan), low, high


def generation_cells(
    loaded: LoadedModel,
    spec: SweepSpec,
    keys: list[tuple[int, float]],
    steers: dict[tuple[int, float], list[Steer]],
    *,
    baseline_fluency: list[float] | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> tuple[list[SweepCell], list[float]]:
    """Sample every (layer, coeff) cell of `keys` and score it: (cells, the unsteered samples' fluency).

    The unsteered samples set the scale of the coherence guard. They come from a c = 0 cell among `keys`,
    else from `baseline_fluency` (an earlier call's), else from an extra unsteered pseudo-cell run first.
    """
    cancel = cancel or threading.Event()
    prompts = [p for p in spec.prompts if p.strip()]
    per_cell = len(prompts) * spec.samples_per_prompt
    has_zero = any(c == 0 for _, c in keys)
    # c = 0 is unsteered at every layer (except for ablation, which ignores c): sample it once.
    ablating = (spec.mode or spec.vector.default_mode) == "ablate"
    zeros = [k for k in keys if k[1] == 0] if not ablating else []
    distinct = [k for k in keys if k not in zeros[1:]]
    run_keys = distinct if has_zero or baseline_fluency is not None else [_BASELINE, *distinct]
    row_steers_of: dict[tuple, list[Steer]] = {**steers, _BASELINE: []}
    # Flat rows: every cell's prompts × samples, cut into batches of up to MAX_ROWS_PER_BATCH rows (a
    # batch may hold parts of two cells; a cancelled sweep keeps only the cells it finished).
    row_prompts = [p for _ in run_keys for p in prompts for _ in range(spec.samples_per_prompt)]
    row_steers = [row_steers_of[k] for k in run_keys for _ in range(per_cell)]
    # Common random numbers: sample k of every cell uses seed + k, whichever batch it lands in.
    base_seed = resolve_row_seeds(spec.sampling.seed, None, 1)[0]
    row_seeds = [base_seed + k for _ in run_keys for _ in prompts for k in range(spec.samples_per_prompt)]
    steps = spec.sampling.max_new_tokens
    tracker = ProgressTracker(progress, len(row_prompts) * steps)
    completions: list[str] = []
    fluency: list[float] = []
    effects: list[list[float]] = []  # per row: KL of each generated token
    # A measured row brings its shadow row into the batch, so batches hold half as many rows.
    per_batch = MAX_ROWS_PER_BATCH // 2 if spec.effect else MAX_ROWS_PER_BATCH
    for sub in range(0, len(row_prompts), per_batch):
        if cancel.is_set():
            break
        end = min(len(row_prompts), sub + per_batch)
        base, width = sub * steps, end - sub

        def on_token(event, base=base, width=width) -> None:
            tracker.report(base + width * (event.step + 1))

        result = generate(
            loaded,
            row_prompts[sub:end],
            row_steers[sub:end],
            spec.sampling,
            cancel=cancel,
            on_token=on_token,
            row_seeds=row_seeds[sub:end],
            effect_rows=range(width) if spec.effect else (),
        )
        if result.cancelled:
            break
        texts = [r.text for r in result.rows]
        completions.extend(texts)
        effects.extend(r.effect or [] for r in result.rows)
        fluency.extend(
            metrics.fluency_perplexities(loaded, row_prompts[sub:end], texts, batch_size=MAX_ROWS_PER_FORWARD)
        )
        tracker.report(end * steps)
    done = {k: completions[i * per_cell : (i + 1) * per_cell] for i, k in enumerate(run_keys)}
    done = {k: v for k, v in done.items() if len(v) == per_cell}
    flu = {k: fluency[i * per_cell : (i + 1) * per_cell] for i, k in enumerate(run_keys) if k in done}
    kls = {
        k: [kl for row in effects[i * per_cell : (i + 1) * per_cell] for kl in row]
        for i, k in enumerate(run_keys)
        if k in done
    }
    baseline = [f for k in done if k[1] == 0 for f in flu[k]] if has_zero or baseline_fluency is None else []
    baseline = baseline or list(baseline_fluency or [])
    scale = coherence.median(baseline)
    for k in zeros[1:]:
        if zeros[0] in done:
            done[k], flu[k], kls[k] = done[zeros[0]], flu[zeros[0]], kls[zeros[0]]
    cells = []
    for k in keys:
        if k not in done:
            break
        layer, coeff = k
        part, part_fluency = done[k], flu[k]
        share = spec.guard.bad_share(part, part_fluency, scale)
        value, low, high = score_completions(spec, part)
        median = coherence.median(part_fluency)
        cells.append(
            SweepCell(
                layer=layer,
                coeff=coeff,
                value=value,
                repetition=sum(map(metrics.repetition_rate, part)) / len(part),
                degenerate=not spec.guard.cell_ok(share),
                samples=[
                    p + t for p, t in zip(prompts_of(prompts, spec.samples_per_prompt), part, strict=True)
                ],
                completions=list(part),
                fluency=median,
                degenerate_share=share,
                ci_low=low,
                ci_high=high,
                ppl_ratio=median / scale if scale > 0 else math.nan,
                effect=sum(kls[k]) / len(kls[k]) if kls[k] else math.nan,
            )
        )
    return cells, baseline


def prompts_of(prompts: list[str], samples: int) -> list[str]:
    """The prompt of each row of one cell: prompts × samples, in row order."""
    return [p for p in prompts for _ in range(samples)]


def forward_cells(
    loaded: LoadedModel,
    spec: SweepSpec,
    keys: list[tuple[int, float]],
    steers: dict[tuple[int, float], list[Steer]],
    progress: ProgressCallback | None,
    cancel: threading.Event,
) -> list[SweepCell]:
    """Score every (layer, coeff) cell of `keys` by forward passes alone: "target-prob" on the prompts, or
    "perplexity" of the reference text; up to MAX_ROWS_PER_FORWARD rows a pass."""
    if spec.metric == "target-prob":
        prompts = [p for p in spec.prompts if p.strip()]
    else:
        prompts = [spec.reference_text]
    per_cell = len(prompts)
    cells_per_batch = max(1, MAX_ROWS_PER_FORWARD // per_cell)
    tracker = ProgressTracker(progress, len(keys) * per_cell)
    cells = []
    for begin in range(0, len(keys), cells_per_batch):
        if cancel.is_set():
            break
        batch_keys = keys[begin : begin + cells_per_batch]
        rows = [steers[k] for k in batch_keys for _ in prompts]
        texts = [p for _ in batch_keys for p in prompts]
        if spec.metric == "target-prob":
            values = metrics.target_prob(loaded, texts, rows, spec.targets, batch_size=MAX_ROWS_PER_FORWARD)
        else:
            values = metrics.perplexities(loaded, texts, rows, batch_size=MAX_ROWS_PER_FORWARD)
        for j, (layer, coeff) in enumerate(batch_keys):
            part = values[j * per_cell : (j + 1) * per_cell]
            value = sum(part) / len(part)
            low, high = stats.mean_ci(part) if len(part) > 1 else (math.nan, math.nan)
            label = "p(targets)" if spec.metric == "target-prob" else "perplexity"
            cells.append(
                SweepCell(
                    layer=layer,
                    coeff=coeff,
                    value=value,
                    repetition=0.0,
                    degenerate=not math.isfinite(value),
                    ci_low=low,
                    ci_high=high,
                    samples=[f"{label} {v:.4g}: {p[:60]}" for v, p in zip(part, prompts, strict=True)],
                )
            )
        tracker.report((begin + len(batch_keys)) * per_cell)
    return cells
