"""`capture` and `generate`: the subcommands that load a model."""

from __future__ import annotations

import argparse
import re
import sys

from engine.cli import (
    add_json_option,
    add_library_option,
    add_model_options,
    emit,
    load_model_from_args,
    number_args,
)
from engine.cli.number_args import finite_float
from engine.cli.sampling_args import sampling_from_args
from engine.errors import InvalidInputError
from engine.modes import MODES, PAIR_METHODS

_STEER_SPEC = re.compile(r"^(?P<name>.+?)(?::(?P<coeff>[^:@]+))?(?:@(?P<layer>-?\d+))?$")


def register(sub) -> None:
    capture = sub.add_parser("capture", help="capture a steering vector into the library")
    add_model_options(capture)
    capture.add_argument("--positive", help="p+, e.g. 'Love'")
    capture.add_argument("--negative", help="p-, e.g. 'Hate'")
    capture.add_argument("--pairs", metavar="FILE", help="JSONL or CSV of {positive, negative} pairs")
    capture.add_argument(
        "--layer", type=int, action="append", required=True, help="layer l (repeat for several)"
    )
    capture.add_argument("--method", choices=("actadd", *PAIR_METHODS), default="actadd")
    capture.add_argument("--name", required=True, help="name in the library")
    capture.add_argument(
        "--coeff", type=finite_float, default=None, help="default coefficient stored with the vector"
    )
    capture.add_argument("--tag", action="append", default=[], help="tag (repeatable)")
    capture.add_argument("--notes", default="")
    capture.add_argument("--force", action="store_true", help="overwrite a vector of the same name")
    add_library_option(capture)
    add_json_option(capture)
    capture.set_defaults(handler=run_capture)

    gen = sub.add_parser("generate", help="generate text, optionally steered")
    add_model_options(gen)
    gen.add_argument("--prompt", required=True)
    gen.add_argument(
        "--steer",
        action="append",
        default=[],
        metavar="NAME_OR_FILE[:COEFF[@LAYER]]",
        help="a library vector or .safetensors file, its coefficient (or a normalised strength such as "
        "0.5n: half the typical residual norm at the layer) and optionally another layer",
    )
    gen.add_argument("--mode", choices=MODES, help="injection mode for every --steer")
    gen.add_argument("--max-new-tokens", type=int, default=48)
    gen.add_argument("--temperature", type=finite_float, default=1.0, help="0 means greedy")
    gen.add_argument("--top-p", type=finite_float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--repetition-penalty", type=finite_float, default=1.0)
    gen.add_argument("--frequency-penalty", type=finite_float, default=0.0)
    gen.add_argument("--presence-penalty", type=finite_float, default=0.0)
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument(
        "--chat",
        action="store_true",
        help="wrap the prompt as a user turn in the model's chat template (front vectors start at it)",
    )
    gen.add_argument("--system", metavar="TEXT", help="with --chat: the system prompt")
    gen.add_argument(
        "--compare",
        action="store_true",
        help="also generate unsteered, in the same batch and with the same random numbers",
    )
    gen.add_argument(
        "--effect",
        action="store_true",
        help="with --json: add the KL (nats) of each steered token from the unsteered model on the same context",
    )
    gen.add_argument(
        "--allow-other-model",
        action="store_true",
        help="use vectors captured on another model of the same width",
    )
    add_library_option(gen)
    add_json_option(gen)
    gen.set_defaults(handler=run_generate)


def run_capture(args: argparse.Namespace) -> int:
    from engine.capture import capture_actadd, capture_from_pairs
    from engine.library import Library, check_name
    from engine.pairs import PromptPair, read_pairs

    check_name(args.name)
    library = Library(args.library)
    path = library.path_of(args.name)
    if path.exists() and not args.force:
        raise InvalidInputError(
            f"a vector named {args.name!r} already exists in {library.root}; use --force to overwrite"
        )
    if args.method == "actadd":
        if args.positive is None or args.negative is None:
            raise InvalidInputError("actadd needs --positive and --negative")
        pairs = None
    else:
        pairs = read_pairs(args.pairs) if args.pairs else []
        if args.positive is not None and args.negative is not None:
            pairs.append(PromptPair(args.positive, args.negative))
        if not pairs:
            raise InvalidInputError(f"{args.method} needs --pairs FILE or --positive/--negative")
    loaded = load_model_from_args(args)
    extra = {"name": args.name, "tags": args.tag, "notes": args.notes}
    if args.coeff is not None:
        extra["default_coeff"] = args.coeff
    if pairs is None:
        vector = capture_actadd(loaded, args.positive, args.negative, args.layer, **extra)
    else:
        from tqdm import tqdm

        with tqdm(
            total=2 * len(pairs),
            desc="capturing",
            unit="prompt",
            file=sys.stderr,
            disable=args.json or not sys.stderr.isatty(),
            leave=False,
        ) as bar:
            vector = capture_from_pairs(
                args.method,
                loaded,
                pairs,
                args.layer,
                progress=lambda done, total: bar.update(done - bar.n),
                **extra,
            )
    saved = library.save(vector, args.name, overwrite=args.force)
    layers = vector.layer_ids
    payload = {
        "name": args.name,
        "path": str(saved),
        "layer": layers[0] if len(layers) == 1 else layers,
        "layers": layers,
        "method": vector.method,
        "shape": vector.shape,
        "norms": vector.norms(),
        "model": loaded.fingerprint.model_hint,
    }
    emit(
        args,
        payload,
        f"saved {args.name} ({vector.method}, layers {layers}, shape {vector.shape}) to {saved}",
    )
    return 0


def parse_amount(text: str, spec: str) -> tuple[float | None, float | None]:
    """The COEFF part of --steer: "2.5" -> (2.5, None), a coefficient; "0.5n" -> (None, 0.5), a
    normalised strength (a fraction of the typical residual norm at the vector's layer)."""
    try:
        value, is_strength = number_args.parse_amount(text)
    except InvalidInputError as exc:
        raise InvalidInputError(f"--steer {spec!r}: {exc}") from exc
    return (None, value) if is_strength else (value, None)


def parse_steer(spec: str, library, mode: str | None):
    """NAME_OR_FILE[:COEFF[@LAYER]] -> Steer (the coefficient defaults to the vector's own).

    COEFF may be a normalised strength such as `0.5n`; its Steer then has `strength` set and a
    placeholder coeff until `resolve_steers` measures the loaded model.
    """
    from engine.steering import Steer

    match = _STEER_SPEC.match(spec)
    if not match:
        raise InvalidInputError(f"cannot read --steer {spec!r}; expected NAME_OR_FILE[:COEFF[@LAYER]]")
    coeff, strength = parse_amount(match["coeff"], spec) if match["coeff"] else (None, None)
    vector = library.load(match["name"])
    layer = int(match["layer"]) if match["layer"] else None
    if strength is not None and (mode or vector.default_mode) == "ablate":
        raise InvalidInputError(
            f"--steer {spec!r}: mode ablate takes a raw coefficient (1 = full ablation), not a strength"
        )
    coeff = vector.default_coeff if coeff is None and strength is None else coeff
    return Steer(vector=vector, coeff=coeff or 0.0, mode=mode, at_layer=layer, strength=strength)


def resolve_steers(steers: list, loaded) -> list:
    """Turn every Steer parsed with a normalised strength into one with the coefficients it means."""
    from engine.steering import Steer

    if all(s.strength is None for s in steers):
        return steers
    from engine.residual_norms import residual_norm_profile

    norms = residual_norm_profile(loaded)
    return [
        s
        if s.strength is None
        else Steer.from_strength(s.vector, s.strength, norms, mode=s.mode, at_layer=s.at_layer)
        for s in steers
    ]


def chat_prompt(loaded, prompt: str, system: str):
    """`generate --chat`: the prompt as one user turn after `system`, rendered as the GUI's Chat tab does."""
    from engine.chat import ChatTurn, render_chat

    if not loaded.info.has_chat_template:
        raise InvalidInputError("this model's tokenizer has no chat template; drop --chat")
    return render_chat(loaded.tokenizer, system, [ChatTurn("user", prompt)])


def run_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.generation import SamplingConfig, generate
    from engine.library import Library
    from engine.tokens import legacy_bos_warning
    from engine.vector import check_fits

    if not args.prompt.strip():
        raise InvalidInputError("the prompt is empty")
    if args.effect and not args.json:
        raise InvalidInputError("--effect adds a field to the JSON output; use it with --json")
    if args.system is not None and not args.chat:
        raise InvalidInputError("--system needs --chat")
    sampling = sampling_from_args(args, SamplingConfig())
    sampling.validate()
    library = Library(args.library)
    steers = [parse_steer(spec, library, args.mode) for spec in args.steer]
    loaded = load_model_from_args(args)
    warnings = [
        w
        for s in steers
        for w in check_fits(s.vector, loaded.fingerprint, allow_other_model=args.allow_other_model)
    ]
    warnings += [w for s in steers if (w := legacy_bos_warning(s.vector, loaded.tokenizer))]
    steers = resolve_steers(steers, loaded)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    rows = [[], steers] if args.compare else [steers]
    steered_row = len(rows) - 1
    live = not args.json and sys.stdout.isatty()
    with tqdm(
        total=sampling.max_new_tokens * len(rows),
        desc="generating",
        file=sys.stderr,
        disable=args.json or live or not sys.stderr.isatty(),
        leave=False,
    ) as bar:

        def on_token(event) -> None:
            bar.update(1)
            if live and event.row == steered_row:
                print(event.text, end="", flush=True)

        prompt = chat_prompt(loaded, args.prompt, args.system or "") if args.chat else args.prompt
        result = generate(
            loaded,
            prompt,
            rows,
            sampling,
            on_token=on_token,
            effect_rows=[steered_row] if args.effect else (),
        )
    steered = result.rows[steered_row]
    payload = {
        "text": steered.text,
        "token_ids": steered.token_ids,
        "prompt_token_ids": steered.prompt_token_ids,
        "finish_reason": steered.finish_reason,
        "tokens_per_second": round(result.tokens_per_second, 2),
        "steering": [
            {
                "vector": s.vector.name,
                "coeff": s.coeff,
                "strength": s.strength,
                "profile": s.profile,
                "mode": s.resolved_mode,
                "layers": sorted(s.layer_tensors()),
            }
            for s in steers
        ],
        "warnings": warnings,
    }
    if args.effect:
        payload["effect"] = steered.effect
    if args.compare:
        payload["unsteered"] = {"text": result.rows[0].text, "token_ids": result.rows[0].token_ids}
    if not isinstance(prompt, str):
        payload["chat_front_offset"] = prompt.front_offset  # where front vectors start (the user's message)
    if args.json:
        emit(args, payload, "")
    elif live:
        print()
    else:
        # A chat answer is the assistant's own turn: never glue it to the user's words ("saidOh no…").
        shown = "" if args.chat else args.prompt
        human = shown + steered.text
        if args.compare:
            human = f"--- steered ---\n{human}\n--- unsteered ---\n{shown + result.rows[0].text}"
        print(human)
    return 0
