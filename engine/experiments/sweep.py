"""Coefficient × layer sweeps of one steering vector, batched through per-row steering.

One sweep is a handful of batches, not one generate call per setting: every row of a batch carries its
own coefficient (a `SteeringPlan` row), and a batch holds many coefficients × prompts × samples. A layer
sweep re-captures the vector at each layer from its stored prompts (an ActAdd pair, or the pairs of a
mean-diff/PCA direction); only vectors without stored prompts are moved across layers (`Steer.at_layer`).

Metrics:
- "target-words": the share of sampled completions containing one of `targets` (topic fraction).
- "sentiment":    the share of sampled completions on the `sentiment_sign` side by VADER (`defaults`).
- "target-prob":  the next-token probability mass of the targets' first tokens after each prompt (mean).
- "perplexity":   the perplexity of `reference_text` with the vector applied at the front of it.

Sampled cells are fair comparisons: sample k of every cell (and of the unsteered baseline) samples with
seed `sampling.seed + k` (common random numbers, engine/sampling.py), so cells differ by their
coefficients alone. Beside the metric, each sampled cell reports `effect`: the mean per-token
KL(steered || unsteered) on the same context (engine/effect.py) over all its generated tokens.

Coefficients are raw (`c`) or, with `SweepSpec.strengths`, normalised strengths (`engine.strength`):
`s` adds `s` typical residual norms at each layer, so one range suits every model and layer (a one-token
ActAdd vector has a norm of ~200 at SmolLM2's layer 6 and ~2 on the demo model). The grid keeps `s` as
its coordinate; each cell records the raw `c` it applied at its layer (`steer_coeff`).

Every cell carries a 95% confidence interval (Wilson for shares, t for means; `stats`), and `best()`
ranks by its lower bound. Sampled cells pass the coherence guard (`coherence`), measured against the
sweep's own unsteered samples.
"""

from __future__ import annotations

import csv
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.capture import capture_actadd, capture_mean_diff, capture_pca
from engine.errors import InvalidInputError
from engine.experiments import coherence, defaults, metrics, stats
from engine.generation import SamplingConfig, generate
from engine.models import LoadedModel
from engine.modes import MODES
from engine.pairs import PromptPair
from engine.residual_norms import residual_norm_profile
from engine.sampling import resolve_row_seeds
from engine.steering import Steer
from engine.strength import resolve_strength
from engine.vector import SteeringVector, check_fits

METRICS = ("target-words", "sentiment", "target-prob", "perplexity")
SAMPLED_METRICS = ("target-words", "sentiment")
# The layer of a cell when the sweep uses a multi-layer vector's own layers together.
OWN_LAYERS = -1
# Neutral openings. (Not the paper's "I went up to my friend and said": the demo model, the default model,
# continues "said" with "his vows", which would give the topic sweep a baseline far above zero.)
DEFAULT_PROMPTS = ["Yesterday we went to the market", "Here is what I think about it:", "Yesterday,"]
MAX_ROWS_PER_BATCH = 96  # rows of one generate call (sampled metrics)
MAX_ROWS_PER_FORWARD = 32  # rows of one forward pass (target-prob, perplexity)


def layer_label(layer: int) -> str:
    """How a cell's layer reads in plots and summaries ("layer 3", or "own layers" for OWN_LAYERS)."""
    return "own layers" if layer == OWN_LAYERS else f"layer {layer}"


ProgressCallback = Callable[[int, int], None]


@dataclass
class SweepSpec:
    vector: SteeringVector
    coeffs: list[float]
    layers: list[int] | None = None  # None: the vector's own layer(s); else re-capture (or move) per layer
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    metric: str = "target-words"  # one of METRICS
    targets: list[str] = field(default_factory=list)  # words for target-words / target-prob
    reference_text: str = ""  # for perplexity
    samples_per_prompt: int = 1
    sampling: SamplingConfig = field(default_factory=SamplingConfig.paper)
    mode: str | None = None  # None: the vector's default mode
    allow_other_model: bool = False  # use a vector captured on another model of the same width
    sentiment_sign: int = 1  # metric "sentiment": +1 counts positive completions (VADER), -1 negative
    guard: coherence.CoherenceGuard = field(default_factory=lambda: coherence.DEFAULT_GUARD)
    effect: bool = True  # measure the mean per-token KL of sampled cells (one shadow row per row)
    strengths: bool = False  # `coeffs` are normalised strengths (x typical residual norm), not raw c

    @property
    def axis_label(self) -> str:
        return "strength (× typical residual norm)" if self.strengths else "coefficient c"

    def coeff_text(self, value: float) -> str:
        """How a grid coefficient reads: "4n" (a normalised strength) or "4" (raw c)."""
        return f"{value:g}n" if self.strengths and value else f"{value:g}"

    def validate(self) -> None:
        if self.metric not in METRICS:
            raise InvalidInputError(f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        if not self.coeffs:
            raise InvalidInputError("give at least one coefficient")
        if bad := [c for c in self.coeffs if not math.isfinite(float(c))]:
            raise InvalidInputError(f"coefficient {bad[0]} is not a finite number")
        if self.layers is not None and not self.layers:
            raise InvalidInputError("give at least one layer, or leave layers unset")
        if self.mode is not None and self.mode not in MODES:
            raise InvalidInputError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.strengths and (self.mode or self.vector.default_mode) == "ablate":
            raise InvalidInputError(
                "mode ablate takes raw coefficients (1 = remove the direction), not strengths"
            )
        if self.metric in ("target-words", "target-prob") and not [t for t in self.targets if t.strip()]:
            raise InvalidInputError(f"metric {self.metric} needs target words")
        if self.metric != "perplexity" and not [p for p in self.prompts if p.strip()]:
            raise InvalidInputError("give at least one prompt")
        if self.sentiment_sign not in (1, -1):
            raise InvalidInputError("sentiment_sign must be +1 or -1")
        if self.metric == "perplexity" and not self.reference_text.strip():
            raise InvalidInputError("metric perplexity needs a reference text")
        if not 1 <= self.samples_per_prompt <= 1000:
            raise InvalidInputError("samples per prompt must be between 1 and 1000")
        self.sampling.validate()


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

    def bound(self, higher_is_better: bool = True) -> float:
        """The pessimistic end of the interval (lower bound, or upper for lower-is-better), else value."""
        edge = self.ci_low if higher_is_better else self.ci_high
        return edge if math.isfinite(edge) else self.value


@dataclass
class SweepResult:
    spec: SweepSpec
    cells: list[SweepCell]
    cancelled: bool = False
    seconds: float = 0.0
    model: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.spec.metric != "perplexity"

    def grid(self, attr: str = "value") -> tuple[list[int], list[float], list[list[float]]]:
        """(layers, coeffs, values[layer_i][coeff_j]) of a cell field ("value", "effect", ...); NaN where
        a cell is missing (a cancelled sweep)."""
        layers = sorted({c.layer for c in self.cells})
        coeffs = list(dict.fromkeys(float(c) for c in self.spec.coeffs))
        values = [[math.nan] * len(coeffs) for _ in layers]
        for cell in self.cells:
            values[layers.index(cell.layer)][coeffs.index(float(cell.coeff))] = getattr(cell, attr)
        return layers, coeffs, values

    def best(self) -> SweepCell | None:
        """The best coherent cell by the pessimistic end of its confidence interval (so 1 hit in 6
        samples does not win on luck), then by value; ties go to the smaller |c|."""
        candidates = [c for c in self.cells if not c.degenerate and math.isfinite(c.value)]
        if not candidates:
            return None
        sign = 1.0 if self.higher_is_better else -1.0
        up = self.higher_is_better
        return max(candidates, key=lambda c: (sign * c.bound(up), sign * c.value, -abs(c.coeff)))

    def to_csv(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "layer", "coeff", "metric", "value", "ci_low", "ci_high", "repetition", "degenerate",
                    "degenerate_share", "fluency_ppl", "ppl_ratio", "effect_kl", "n_samples", "example",
                    "steer_coeff",
                ]
            )  # fmt: skip
            for c in self.cells:
                writer.writerow(
                    [
                        c.layer,
                        c.coeff,
                        self.spec.metric,
                        f"{c.value:.6g}",
                        f"{c.ci_low:.4g}",
                        f"{c.ci_high:.4g}",
                        f"{c.repetition:.4f}",
                        int(c.degenerate),
                        f"{c.degenerate_share:.4f}",
                        f"{c.fluency:.4g}",
                        f"{c.ppl_ratio:.4g}",
                        f"{c.effect:.4g}",
                        len(c.samples),
                        c.samples[0] if c.samples else "",
                        f"{c.steer_coeff:.6g}",
                    ]
                )


# ---- vectors per layer ---------------------------------------------------------------------------------
def vector_for_layer(
    loaded: LoadedModel, vector: SteeringVector, layer: int
) -> tuple[SteeringVector, int | None]:
    """(vector, at_layer) that steers `layer`: re-captured from stored prompts when possible.

    ActAdd vectors with {"positive", "negative"} prompts and mean-diff/PCA vectors with stored pairs are
    captured again at `layer` on `loaded`; a multi-layer vector that has `layer` contributes that layer;
    a single-layer vector without prompts is moved there (`at_layer`), which the paper never does.
    """
    prompts = vector.prompts or {}
    extra: dict = {"name": vector.name, "default_coeff": vector.default_coeff}
    if (
        vector.method == "actadd"
        and isinstance(prompts.get("positive"), str)
        and isinstance(prompts.get("negative"), str)
    ):
        return capture_actadd(loaded, prompts["positive"], prompts["negative"], layer, **extra), None
    pairs = prompts.get("pairs")
    if vector.method in ("mean-diff", "pca") and isinstance(pairs, list) and pairs:
        parsed = [PromptPair(str(p["positive"]), str(p["negative"])) for p in pairs]
        capture = capture_mean_diff if vector.method == "mean-diff" else capture_pca
        return capture(loaded, parsed, layer, **extra), None
    if layer in vector.layers:
        return vector.replace(layers={layer: vector.layers[layer]}), None
    if len(vector.layers) == 1:
        return vector, layer
    raise InvalidInputError(
        f"cannot sweep layer {layer}: the vector has layers {vector.layer_ids} and no stored prompts to "
        "re-capture it from"
    )


def _layer_vectors(loaded: LoadedModel, spec: SweepSpec) -> list[tuple[int, SteeringVector, int | None]]:
    if spec.layers is None:
        check_fits(spec.vector, loaded.fingerprint, allow_other_model=spec.allow_other_model)
        ids = spec.vector.layer_ids
        return [(ids[0] if len(ids) == 1 else OWN_LAYERS, spec.vector, None)]
    n = len(loaded.blocks)
    if bad := [l for l in spec.layers if not 0 <= int(l) < n]:
        raise InvalidInputError(f"layer {bad[0]} is out of range: the model has {n} layers (0-{n - 1})")
    out = []
    for layer in dict.fromkeys(int(l) for l in spec.layers):
        vector, at_layer = vector_for_layer(loaded, spec.vector, layer)
        check_fits(vector, loaded.fingerprint, allow_other_model=spec.allow_other_model)
        out.append((layer, vector, at_layer))
    return out


# ---- the sweep -----------------------------------------------------------------------------------------
@dataclass
class _Job:
    """One cell's rows: row indices into the flat row list of its layer."""

    layer: int
    coeff: float
    rows: list[int]


class _Progress:
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


def run_sweep(
    loaded: LoadedModel,
    spec: SweepSpec,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> SweepResult:
    """Measure `spec.metric` at every (layer, coeff) cell; see the module docstring.

    `progress(done, total)` is called from this thread as work completes. Setting `cancel` stops at the
    next token or batch; the result then holds only the finished cells and has `cancelled=True`.
    """
    spec.validate()
    cancel = cancel or threading.Event()
    started = time.perf_counter()
    coeffs = list(dict.fromkeys(float(c) for c in spec.coeffs))
    layer_vectors = _layer_vectors(loaded, spec)
    norms = residual_norm_profile(loaded) if spec.strengths else None
    steers = {
        (layer, c): [_steer(vector, c, spec.mode, at_layer, norms)]
        for layer, vector, at_layer in layer_vectors
        for c in coeffs
    }
    keys = list(steers)  # (layer, coeff) in sweep order
    if spec.metric in SAMPLED_METRICS:
        cells, _ = generation_cells(loaded, spec, keys, steers, progress=progress, cancel=cancel)
    else:
        cells = _sweep_forward(loaded, spec, keys, steers, progress, cancel)
    for cell in cells:
        applied = steers.get((cell.layer, cell.coeff))
        cell.steer_coeff = applied[0].coeff if applied else cell.coeff
    return SweepResult(
        spec=spec,
        cells=cells,
        cancelled=cancel.is_set(),
        seconds=time.perf_counter() - started,
        model=loaded.info.source,
    )


def _steer(
    vector: SteeringVector, c: float, mode: str | None, at_layer: int | None, norms: list[float] | None
) -> Steer:
    """The steer of one cell: raw `c`, or the normalised strength `c` when `norms` (per layer) are given."""
    steer = Steer(vector, c, mode=mode, at_layer=at_layer)
    return resolve_strength(steer, c, norms) if norms is not None else steer


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
    tracker = _Progress(progress, len(row_prompts) * steps)
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


def _sweep_forward(loaded, spec, keys, steers, progress, cancel) -> list[SweepCell]:
    if spec.metric == "target-prob":
        prompts = [p for p in spec.prompts if p.strip()]
    else:
        prompts = [spec.reference_text]
    per_cell = len(prompts)
    cells_per_batch = max(1, MAX_ROWS_PER_FORWARD // per_cell)
    tracker = _Progress(progress, len(keys) * per_cell)
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
