"""The headless command line: `python main.py capture|generate|library|sweep ...`.

Contract: every subcommand has `--help` and `--json` (one JSON object on stdout); bad input prints one
line on stderr and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from engine.devices import KNOWN_DEVICES
from engine.errors import ActAddError, AlreadyExistsError, InvalidInputError
from engine.log_filters import install_log_filters

EXIT_BAD_INPUT = 2
# The subcommands, in the order `--help` lists them; `main.py` sends these to the CLI and the rest to the GUI.
COMMANDS = ("capture", "generate", "library", "models", "norms", "serve", "sweep")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 2) instead of usage plus message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InvalidInputError(f"{self.prog}: {message}")


class _DeviceChoice(argparse.Action):
    """`--device`, checked against the devices torch reports only when given: building the parser (and
    `--help`, `models`) must not import torch. The error is argparse's own "invalid choice" line."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from engine.devices import available_devices

        choices = available_devices()
        if values not in choices:
            raise argparse.ArgumentError(
                self, f"invalid choice: {values!r} (choose from {', '.join(map(repr, choices))})"
            )
        setattr(namespace, self.dest, values)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", default="demo", help="model folder, .gguf file, cached hub id, or 'demo' (default)"
    )
    group.add_argument(
        "--quantize", choices=("none", "8bit", "4bit"), default="none", help="bitsandbytes quantization"
    )
    group.add_argument(
        "--device",
        action=_DeviceChoice,
        default="auto",
        metavar="{" + ",".join(KNOWN_DEVICES) + "}",
        help="mps/xpu where torch has them",
    )
    group.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto")
    group.add_argument(
        "--trust-remote-code", action="store_true", help="run Python code shipped with the model (unsafe)"
    )


def add_library_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--library", metavar="DIR", help="library folder (default: $ACTADD_LIBRARY or the app data folder)"
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def stderr_log(args: argparse.Namespace) -> Callable[[str], None]:
    """A progress log for long runs: lines on stderr, silent with --json."""

    def log(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr, flush=True)

    return log


def load_model_from_args(args: argparse.Namespace):
    from tqdm import tqdm

    from engine.models import load_model

    with tqdm(
        total=100,
        desc="loading model",
        file=sys.stderr,
        disable=args.json or not sys.stderr.isatty(),
        leave=False,
    ) as bar:
        converting: list[tqdm] = []  # a .gguf's one-time conversion gets a bar of its own

        def progress(stage: str, fraction: float) -> None:
            if stage == "converting":
                if not converting:
                    converting.append(
                        tqdm(
                            total=100,
                            desc="converting GGUF (once)",
                            file=sys.stderr,
                            disable=bar.disable,
                            leave=False,
                        )
                    )
                converting[0].update(round(fraction * 100) - converting[0].n)
                return
            bar.set_postfix_str(stage)
            bar.update(round(fraction * 100) - bar.n)

        try:
            loaded = load_model(
                args.model,
                quantize=args.quantize,
                device=args.device,
                dtype=args.dtype,
                trust_remote_code=args.trust_remote_code,
                progress=progress,
            )
        finally:
            for extra_bar in converting:
                extra_bar.close()
    from engine.model_store import remember_recent

    remember_recent(args.model)  # listed by `models` as a recent model
    return loaded


def emit(args: argparse.Namespace, payload: dict, human: str) -> None:
    text = json.dumps(payload, ensure_ascii=False) if args.json else human
    # A file name that isn't UTF-8 holds lone surrogates, which a UTF-8 stdout refuses: print them as
    # \udcXX escapes (in JSON, the same escape of the same string).
    print(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def _register_all(sub) -> None:
    from engine.cli import model_commands

    model_commands.register(sub)
    for module_name in (
        "library_commands",
        "sweep_commands",
        "models_commands",
        "norms_commands",
        "serve_commands",
    ):
        try:
            module = __import__(f"engine.cli.{module_name}", fromlist=["register"])
        except ModuleNotFoundError as exc:  # a subcommand module not written yet
            if exc.name != f"engine.cli.{module_name}":
                raise
            continue
        module.register(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="actadd", description="Steer local language models with activation addition (ActAdd)."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _register_all(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # No download or loading bars from transformers/huggingface_hub: they read this when first imported,
    # which `models` and `--help` never do (importing transformers here would cost them seconds).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        if "transformers" in sys.modules:  # already imported (an in-process caller): tell it directly
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        elif "huggingface_hub" in sys.modules:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        install_log_filters()
        argv = list(sys.argv[1:] if argv is None else argv)
        for arg in argv:  # bytes that aren't UTF-8 arrive as lone surrogates, which nothing can write out
            if not arg.isascii() and any("\ud800" <= c <= "\udfff" for c in arg):
                raise InvalidInputError(f"argument {arg!r} is not valid UTF-8 text")
        args = build_parser().parse_args(argv)
        handler: Callable[[argparse.Namespace], int | None] = args.handler
        return handler(args) or 0
    except AlreadyExistsError as exc:
        print(f"error: {exc} (--force)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ActAddError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
