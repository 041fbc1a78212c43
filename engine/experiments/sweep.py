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
from dataclasses import dataclass, field
from pathlib import Path

from engine.capture import capture_actadd, capture_from_pairs, check_layers
from engine.errors import InvalidInputError
from engine.experiments import coherence
from engine.experiments.sweep_cells import ProgressCallback, SweepCell, forward_cells, generation_cells
from engine.generation import SamplingConfig
from engine.models import LoadedModel
from engine.modes import MODES, PAIR_METHODS
from engine.pairs import PromptPair
from engine.residual_norms import residual_norm_profile
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


def layer_label(layer: int) -> str:
    """How a cell's layer reads in plots and summaries ("layer 3", or "own layers" for OWN_LAYERS)."""
    return "own layers" if layer == OWN_LAYERS else f"layer {layer}"


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

    def setting_text(self, cell: SweepCell) -> str:
        """How a cell's setting reads: "c = 4", or "4n (c = 12.3)" for a normalised strength."""
        if not self.strengths:
            return f"c = {cell.coeff:g}"
        return f"{self.coeff_text(cell.coeff)} (c = {cell.applied_coeff:.3g})"

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
    if vector.method in PAIR_METHODS and isinstance(pairs, list) and pairs:
        parsed = [PromptPair(str(p["positive"]), str(p["negative"])) for p in pairs]
        return capture_from_pairs(vector.method, loaded, parsed, layer, **extra), None
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
    layers = [int(l) for l in spec.layers]
    check_layers(loaded, layers)
    out = []
    for layer in dict.fromkeys(layers):  # in the order given
        vector, at_layer = vector_for_layer(loaded, spec.vector, layer)
        check_fits(vector, loaded.fingerprint, allow_other_model=spec.allow_other_model)
        out.append((layer, vector, at_layer))
    return out


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
        cells = forward_cells(loaded, spec, keys, steers, progress, cancel)
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
