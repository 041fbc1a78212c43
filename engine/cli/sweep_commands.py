"""`sweep`: coefficient × layer sweeps of one vector, and the ActAdd paper's replication experiments.

    python main.py sweep --positive " weddings" --negative " " --coeffs -4,0,4,8 --layers 0,1,2,3 \\
        --targets wedding,bride,groom --prompt "Here is what I think about it:" --samples 4 --out sweeps
    python main.py sweep --vector love-hate --coeffs -8,-4,0,4,8 --metric target-prob --targets love
    python main.py sweep --experiment all --model demo --out docs/replication
    python main.py sweep --suggest --model PATH --positive Love --negative Hate --json
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

from engine.cli import (
    add_json_option,
    add_library_option,
    add_model_options,
    emit,
    load_model_from_args,
    stderr_log,
)
from engine.cli.number_args import coefficient_list, number_list
from engine.cli.sampling_args import sampling_from_args
from engine.errors import InvalidInputError
from engine.modes import MODES

EXPERIMENT_CHOICES = (
    "topic",
    "sentiment",
    "perplexity",
    "prompting",
    "injection",
    "methods",
    "overhead",
    "quantization",
    "all",
)


# Default coefficient ranges, as normalised strengths so that one range suits every model and layer. Front
# injection replaces a position's residual and needs several residual norms to matter; a direction added
# at every position breaks text at about one norm (docs/replication.md, "Suggest settings").
DEFAULT_STRENGTH_TEXT = {
    "front": ["-16n", "-4n", "0", "4n", "16n"],
    "direction": ["-1n", "-0.25n", "0", "0.25n", "1n"],
}


def register(sub) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="sweep a vector over coefficients and layers, or rerun the paper's experiments",
        description="Batched, seeded coefficient × layer sweeps (CSV + PNG), and the ActAdd replication.",
    )
    # Let "--coeffs -8,-4,0" through: argparse only treats plain negative numbers as values.
    sweep._negative_number_matcher = re.compile(r"^-[\d.][^\s]*$")
    add_model_options(sweep)
    what = sweep.add_argument_group("vector")
    what.add_argument("--vector", metavar="NAME_OR_FILE", help="a library vector or .safetensors file")
    what.add_argument("--positive", help="p+ of an ActAdd pair captured on the spot, e.g. ' weddings'")
    what.add_argument("--negative", help="p- of the pair, e.g. ' '")
    grid = sweep.add_argument_group("grid")
    grid.add_argument(
        "--coeffs",
        help="comma-separated coefficients: raw c (-8,-4,0,4,8) or normalised strengths with an n suffix "
        "(0,2n,8n: n = the typical residual norm at each layer; the same units as generate --steer V:0.5n). "
        f"Default: {','.join(DEFAULT_STRENGTH_TEXT['front'])} for front vectors, "
        f"{','.join(DEFAULT_STRENGTH_TEXT['direction'])} for directions",
    )
    grid.add_argument(
        "--layers",
        help="comma-separated layers; the pair is re-captured at each (default: every layer for "
        "--positive/--negative, the vector's own layers for --vector)",
    )
    grid.add_argument("--mode", choices=MODES, help="injection mode")
    measure = sweep.add_argument_group("measurement")
    measure.add_argument(
        "--metric",
        choices=("target-words", "sentiment", "target-prob", "perplexity"),
        help="default: follows the pair: sentiment (VADER) when p+ and p- differ in polarity, else "
        "target-words on the words of p+",
    )
    measure.add_argument(
        "--targets", help="comma-separated target words (default: the words of p+ and their inflections)"
    )
    measure.add_argument(
        "--prompt", action="append", default=[], metavar="TEXT", help="a prompt (repeat for several)"
    )
    measure.add_argument("--reference-text", default="", help="text whose perplexity is measured")
    measure.add_argument("--reference-file", metavar="FILE", help="read the reference text from a file")
    measure.add_argument(
        "--samples",
        type=int,
        help="samples per prompt and cell (default 4; with --experiment, overrides the size's own)",
    )
    measure.add_argument("--max-new-tokens", type=int, help="default 32 (24 with --suggest)")
    measure.add_argument("--seed", type=int, default=0)
    measure.add_argument("--temperature", type=float, default=1.0)
    measure.add_argument("--top-p", type=float, default=0.3, help="default 0.3, the paper's")
    measure.add_argument("--frequency-penalty", type=float, default=1.0, help="default 1.0, the paper's")
    measure.add_argument(
        "--allow-other-model", action="store_true", help="use a vector captured on another model"
    )
    measure.add_argument(
        "--no-effect",
        action="store_true",
        help="skip each cell's per-token effect (KL); its shadow rows double a sampled sweep's rows",
    )
    sweep.add_argument(
        "--experiment",
        action="append",
        choices=EXPERIMENT_CHOICES,
        help="run a replication experiment instead of a sweep (repeatable; 'all' for every one)",
    )
    sweep.add_argument("--quick", action="store_true", help="small-sample experiments (seconds, noisier)")
    sweep.add_argument(
        "--suggest",
        action="store_true",
        help="find a working (layer, coefficient): coarse layer sweep, then refinement; prints the setting "
        "for generate --steer V:COEFF@LAYER --mode MODE",
    )
    sweep.add_argument("--out", default="sweeps", metavar="DIR", help="output folder (default %(default)s)")
    sweep.add_argument("--name", default="sweep", help="file stem of the sweep's CSV and PNG")
    add_library_option(sweep)
    add_json_option(sweep)
    sweep.set_defaults(handler=run_sweep_command)


def _progress_bar(args, desc: str):
    from tqdm import tqdm

    return tqdm(total=1, desc=desc, file=sys.stderr, disable=args.json, leave=False)


def run_sweep_command(args: argparse.Namespace) -> int:
    if args.experiment:
        if args.suggest:
            raise InvalidInputError("give either --experiment or --suggest")
        return _run_experiments(args)
    if args.suggest:
        from engine.cli.suggest_command import run_suggest

        return run_suggest(args)
    return _run_single_sweep(args)


def check_vector_source(args: argparse.Namespace) -> None:
    """The vector comes from --vector, or from a --positive/--negative pair captured on the spot: one of them."""
    if not args.vector and (args.positive is None or args.negative is None):
        raise InvalidInputError("give --vector NAME_OR_FILE, or --positive and --negative")
    if args.vector and (args.positive is not None or args.negative is not None):
        raise InvalidInputError("give either --vector or --positive/--negative, not both")


def measure_from_args(args: argparse.Namespace, vector):
    """(metric, targets, sentiment sign) from --metric/--targets, else following the vector's pair."""
    from engine.experiments import defaults

    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else []
    default = defaults.measure_for_vector(vector)
    metric = args.metric or (default.metric if default else "target-words")
    sign = default.sign if default and default.metric == "sentiment" else 1
    if metric in ("target-words", "target-prob") and not targets:
        if default is not None and default.targets:
            targets = default.targets
        else:
            positive = (vector.prompts or {}).get("positive", "")
            targets = defaults.word_family(positive) if isinstance(positive, str) else []
        if not targets:
            raise InvalidInputError(
                f"cannot derive target words from p+ {positive!r}; --metric {metric} needs --targets w1,w2"
                if isinstance(positive, str) and positive
                else f"--metric {metric} needs --targets w1,w2"
            )
    return metric, targets, sign


def vector_from_args(args: argparse.Namespace, loaded, layer: int):
    """The --vector (a library key or file), or the --positive/--negative pair captured at `layer`."""
    from engine.capture import capture_actadd
    from engine.library import Library

    if args.vector:
        return Library(args.library).load(args.vector)
    return capture_actadd(loaded, args.positive, args.negative, layer)


def measurement_from_args(args: argparse.Namespace, vector, *, max_new_tokens: int) -> dict[str, Any]:
    """The fields of a SweepSpec or SuggestSpec that say what is measured and how it is sampled, from
    --metric/--targets, --mode, --samples, --prompt and the sampling flags (else the paper's sampling)."""
    from engine.generation import SamplingConfig

    metric, targets, sign = measure_from_args(args, vector)
    fields: dict[str, Any] = {
        "vector": vector,
        "metric": metric,
        "targets": targets,
        "sentiment_sign": sign,
        "mode": args.mode,
        "samples_per_prompt": args.samples if args.samples is not None else 4,
        "sampling": sampling_from_args(args, SamplingConfig.paper(max_new_tokens=max_new_tokens)),
    }
    if args.prompt:
        fields["prompts"] = list(args.prompt)
    return fields


def _spec_from_args(args: argparse.Namespace, loaded):
    from engine.capture import check_layers
    from engine.experiments.sweep import SweepSpec

    layers = number_list(args.layers, int, "layers") if args.layers else None
    if layers:
        check_layers(loaded, layers)  # before a capture at layers[0]
    vector = vector_from_args(args, loaded, layers[0] if layers else 0)
    if not args.vector and layers is None:
        layers = list(range(len(loaded.blocks)))
    mode = args.mode or vector.default_mode
    coeff_text = args.coeffs or ",".join(DEFAULT_STRENGTH_TEXT["front" if mode == "front" else "direction"])
    if args.coeffs is None and mode == "ablate":
        coeff_text = "0,0.5,1"  # ablate's coefficient is already a fraction of the direction
    coeffs, strengths = coefficient_list(coeff_text)
    reference = args.reference_text
    if args.reference_file:
        try:
            reference = Path(args.reference_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read {args.reference_file}: {exc}") from exc
    return SweepSpec(
        coeffs=coeffs,
        layers=layers,
        reference_text=reference,
        allow_other_model=args.allow_other_model,
        strengths=strengths,
        effect=not args.no_effect,
        **measurement_from_args(args, vector, max_new_tokens=32),
    )


def _run_single_sweep(args: argparse.Namespace) -> int:
    from engine.experiments import plot_sweep, run_sweep

    check_vector_source(args)
    # Check the cheap arguments before loading the model.
    if args.coeffs is not None:
        coefficient_list(args.coeffs)
    if args.layers:
        number_list(args.layers, int, "layers")
    if args.metric == "perplexity" and not (args.reference_text.strip() or args.reference_file):
        raise InvalidInputError("--metric perplexity needs --reference-text or --reference-file")
    loaded = load_model_from_args(args)
    spec = _spec_from_args(args, loaded)
    spec.validate()
    from engine.tokens import legacy_bos_warning

    if spec.vector is not None and (warning := legacy_bos_warning(spec.vector, loaded.tokenizer)):
        print(f"warning: {warning}", file=sys.stderr)
    with _progress_bar(args, "sweeping") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        result = run_sweep(loaded, spec, progress=progress)
    out = Path(args.out)
    csv_path, png_path = out / f"{args.name}.csv", out / f"{args.name}.png"
    result.to_csv(csv_path)
    plot_sweep(result, png_path)
    layers, coeffs, values = result.grid()
    best = result.best()
    payload = {
        "metric": spec.metric,
        "layers": layers,
        "coeffs": coeffs,
        "strengths": spec.strengths,  # coeffs (and each cell's coeff) are normalised strengths; steer_coeff is c
        "values": values,
        "cells": [
            {
                "layer": c.layer,
                "coeff": c.coeff,
                "steer_coeff": c.steer_coeff,
                "value": c.value,
                "ci": [c.ci_low, c.ci_high],
                "repetition": c.repetition,
                "degenerate": c.degenerate,
                "effect": None if math.isnan(c.effect) else c.effect,
                "example": c.samples[0] if c.samples else "",
            }
            for c in result.cells
        ],
        "best": None
        if best is None
        else {
            "layer": best.layer,
            "coeff": best.coeff,
            "steer_coeff": best.steer_coeff,
            "value": best.value,
            "ci": [best.ci_low, best.ci_high],
        },
        "seconds": round(result.seconds, 2),
        "csv": str(csv_path),
        "png": str(png_path),
    }
    width = max(8, *(len(spec.coeff_text(c)) + 2 for c in coeffs))
    lines = [f"{spec.metric} ({len(result.cells)} cells, {result.seconds:.1f} s)"]
    lines.append("layer".ljust(8) + "".join(spec.coeff_text(c).rjust(width) for c in coeffs))
    for layer, row in zip(layers, values, strict=True):
        label = "own" if layer < 0 else str(layer)
        lines.append(label.ljust(8) + "".join(f"{v:.3f}".rjust(width) for v in row))
    effects = result.grid("effect")[2]
    if any(math.isfinite(v) for row in effects for v in row):
        lines.append("effect: mean KL per token from the unsteered model on the same text (nats)")
        for layer, row in zip(layers, effects, strict=True):
            label = "own" if layer < 0 else str(layer)
            lines.append(label.ljust(8) + "".join(f"{v:.3f}".rjust(width) for v in row))
    if best is not None:
        lines.append(f"best: layer {best.layer}, {spec.setting_text(best)}: {best.value:.3f}")
    lines.append(f"wrote {csv_path} and {png_path}")
    emit(args, payload, "\n".join(lines))
    return 0


def _run_experiments(args: argparse.Namespace) -> int:
    from engine.capture import check_layers
    from engine.experiments.replication import Settings, run_experiments

    if args.vector or args.positive is not None or args.negative is not None:
        raise InvalidInputError("--experiment uses its own vectors; drop --vector/--positive/--negative")
    settings = Settings.quick() if args.quick else Settings()
    settings.seed = args.seed
    if args.layers:
        settings.layers = number_list(args.layers, int, "layers")
    # --samples and --max-new-tokens resize the experiments (e.g. --quick with 5 samples per prompt)
    if args.samples is not None:
        if not 1 <= args.samples <= 1000:
            raise InvalidInputError("--samples must be between 1 and 1000")
        settings.samples = args.samples
    if args.max_new_tokens is not None:
        if not 1 <= args.max_new_tokens <= 4096:
            raise InvalidInputError("--max-new-tokens must be between 1 and 4096")
        settings.max_new_tokens = args.max_new_tokens
    loaded = load_model_from_args(args)
    if settings.layers:
        check_layers(loaded, settings.layers)
    reports = run_experiments(loaded, args.experiment, args.out, settings=settings, log=stderr_log(args))
    payload = {
        "out": str(Path(args.out)),
        "experiments": {
            name: {"seconds": round(r.seconds, 2), "files": r.files, "summary": r.summary}
            for name, r in reports.items()
        },
    }
    human = "\n\n".join(f"## {r.title}\n\n{r.markdown}" for r in reports.values())
    human += f"\nwrote {', '.join(f for r in reports.values() for f in r.files)} to {args.out}"
    emit(args, payload, human)
    return 0
