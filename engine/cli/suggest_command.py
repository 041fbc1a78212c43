"""`sweep --suggest`: find a working (layer, coefficient) for a vector and print it as one setting.

    python main.py sweep --suggest --model PATH --positive " weddings" --negative " " --json

The JSON object has at least layer, coeff, mode, metric, score, coherent and forward_passes, plus
"vector" (a .safetensors file holding the vector as steered at that layer) and "steer", the
`generate --steer` argument that reproduces the setting: `generate --steer "$steer" --mode $mode`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from engine.cli import emit, load_model_from_args, stderr_log
from engine.errors import InvalidInputError


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "vector"


def run_suggest(args: argparse.Namespace) -> int:
    from engine.cli.number_args import number_list
    from engine.cli.sweep_commands import check_vector_source, measurement_from_args, vector_from_args
    from engine.experiments.suggest import SuggestSpec, suggest
    from engine.vector import save_vector

    check_vector_source(args)
    if args.metric in ("target-prob", "perplexity"):
        raise InvalidInputError("--suggest measures sampled text: use --metric target-words or sentiment")
    if args.mode == "ablate":
        raise InvalidInputError("--suggest searches coefficients; mode ablate has none")
    layers = number_list(args.layers, int, "layers") if args.layers else None
    loaded = load_model_from_args(args)
    vector = vector_from_args(args, loaded, 0)
    name = Path(args.vector).stem if args.vector else f"{_slug(args.positive)}-minus-{_slug(args.negative)}"
    spec = SuggestSpec(layers=layers, **measurement_from_args(args, vector, max_new_tokens=24))
    metric, targets = spec.metric, spec.targets

    found = suggest(loaded, spec, log=stderr_log(args))
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
