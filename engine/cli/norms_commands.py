"""`norms`: the typical residual norm at every layer of a model (what normalised strengths are relative to).

python main.py norms --model M [--refresh] [--json]
"""

from __future__ import annotations

import argparse

from engine.cli import add_json_option, add_model_options, emit, load_model_from_args


def register(sub) -> None:
    norms = sub.add_parser(
        "norms",
        help="typical residual norm per layer (measured once per model, then cached)",
        description="The median per-token norm of resid_pre at every layer on a fixed neutral text "
        "(position 0 and special tokens excluded): the scale of a normalised strength such as 0.5n.",
    )
    add_model_options(norms)
    norms.add_argument("--refresh", action="store_true", help="measure again even if cached")
    add_json_option(norms)
    norms.set_defaults(handler=run_norms)


def run_norms(args: argparse.Namespace) -> int:
    from engine.residual_norms import residual_norms

    loaded = load_model_from_args(args)
    result = residual_norms(loaded, refresh=args.refresh)
    payload = {"model": loaded.fingerprint.model_hint, **result.to_dict()}
    peak = max(result.norms)
    lines = [
        f"typical ||resid_pre|| of {result.model} (median over {result.n_tokens} tokens; "
        + ("cached" if result.cached else "measured")
        + ")"
    ]
    for layer, norm in enumerate(result.norms):
        bar = "#" * max(1, round(30 * norm / peak)) if peak > 0 else ""
        lines.append(f"  layer {layer:>3}  {norm:>10.4g}  {bar}")
    emit(args, payload, "\n".join(lines))
    return 0
