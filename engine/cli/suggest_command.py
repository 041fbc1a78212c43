"""`sweep --suggest`: find a working (layer, coefficient) for a vector and print it as one setting.

    python main.py sweep --suggest --model PATH --positive " weddings" --negative " " --json

The JSON object has at least layer, coeff, mode, metric, score, coherent and forward_passes, plus
"vector" (a .safetensors file holding the vector as steered at that layer) and "steer", the
`generate --steer` argument that reproduces the setting: `generate --steer "$steer" --mode $mode`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from engine.cli import emit, load_model_from_args
from engine.errors import InvalidInputError


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "vector"


def run_suggest(args: argparse.Namespace) -> int:
    from engine.capture import capture_actadd
    from engine.cli.sweep_commands import _numbers, measure_from_args
    from engine.experiments.suggest import SuggestSpec, suggest
    from engine.generation import SamplingConfig
    from engine.library import Library
    from engine.vector import save_vector

    if not args.vector and (args.positive is None or args.negative is None):
        raise InvalidInputError("give --vector NAME_OR_FILE, or --positive and --negative")
    if args.vector and (args.positive is not None or args.negative is not None):
        raise InvalidInputError("give either --vector or --positive/--negative, not both")
    if args.metric in ("target-prob", "perplexity"):
        raise InvalidInputError("--suggest measures sampled text: use --metric target-words or sentiment")
    if args.mode == "ablate":
        raise InvalidInputError("--suggest searches coefficients; mode ablate has none")
    layers = _numbers(args.layers, int, "layers") if args.layers else None
    loaded = load_model_from_args(args)
    if args.vector:
        vector = Library(args.library).load(args.vector)
        name = Path(args.vector).stem
    else:
        vector = capture_actadd(loaded, args.positive, args.negative, 0)
        name = f"{_slug(args.positive)}-minus-{_slug(args.negative)}"
    metric, targets, sign = measure_from_args(args, vector)
    sampling = SamplingConfig.paper(
        seed=args.seed,
        max_new_tokens=args.max_new_tokens or 24,
        temperature=args.temperature,
        top_p=args.top_p,
        frequency_penalty=args.frequency_penalty,
    )
    spec = SuggestSpec(
        vector=vector,
        metric=metric,
        targets=targets,
        sentiment_sign=sign,
        mode=args.mode,
        samples_per_prompt=args.samples,
        sampling=sampling,
        layers=layers,
    )
    if args.prompt:
        spec.prompts = list(args.prompt)

    def log(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr, flush=True)

    found = suggest(loaded, spec, log=log)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"suggested-{name}-layer{found.layer}.safetensors"
    save_vector(
        found.vector.replace(default_coeff=found.coeff, default_mode=found.mode), path, overwrite=True
    )
    steer = f"{path}:{found.coeff:g}@{found.layer}"
    payload = {**found.to_dict(), "targets": targets, "vector": str(path), "steer": steer}
    verdict = "coherent" if found.coherent else "NOT coherent (no setting tried stayed in bounds)"
    if not payload["clear_effect"]:
        verdict += "; the effect is within sampling noise of the unsteered text (no clear effect found)"
    human = (
        f"suggested: layer {found.layer}, c = {found.coeff:g}, mode {found.mode}: {metric} "
        f"{found.score:.2f} (95% CI {found.ci_low:.2f}-{found.ci_high:.2f}; unsteered {found.baseline:.2f}), "
        f"{verdict}\ncost: {found.forward_passes} forward passes ({len(found.tried)} settings; the full grid "
        f"would take {found.grid_forward_passes})\nuse: python main.py generate --model {args.model} "
        f'--steer "{steer}" --mode {found.mode} --prompt ...'
    )
    emit(args, payload, human)
    return 0
