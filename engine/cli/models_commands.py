"""`models`: list the models already on this machine (engine/model_store.py)."""

from __future__ import annotations

import argparse

from engine.cli import add_json_option, emit

# Modules that add subcommands under `models` (e.g. `models fetch`), each with `register(models_sub)`;
# a module not written yet is skipped.
EXTENSIONS = ("models_fetch_commands",)


def _add_list_options(parser: argparse.ArgumentParser) -> None:
    from engine.model_store import SOURCES

    parser.add_argument(
        "--source", action="append", choices=SOURCES, help="only this source (repeatable; default: all)"
    )
    parser.add_argument("--openable", action="store_true", help="only the models the app can open")
    add_json_option(parser)
    parser.set_defaults(handler=run_models)


def register(sub) -> None:
    models = sub.add_parser(
        "models",
        help="list the models already on this machine",
        description="List models in the Hugging Face cache, LM Studio, Ollama, GPT4All, Python packages "
        "and the recently opened ones, reading their headers only. `models` alone is `models list`.",
    )
    _add_list_options(models)
    models_sub = models.add_subparsers(dest="models_command", required=False, parser_class=type(models))
    _add_list_options(models_sub.add_parser("list", help="list the models (the default)"))
    for module_name in EXTENSIONS:
        try:
            module = __import__(f"engine.cli.{module_name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"engine.cli.{module_name}":
                raise
            continue
        module.register(models_sub)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return ""


def _params(n: int | None) -> str:
    if not n:
        return "?"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def run_models(args: argparse.Namespace) -> int:
    from engine.model_store import SOURCES, list_models

    rows = list_models(args.source or SOURCES)
    if args.openable:
        rows = [r for r in rows if r.openable]
    lines = [
        f"{r.name}  [{r.source}]  {r.architecture or '?'}  {_params(r.n_params)}  {r.quantization or '?'}  "
        f"{_size(r.size_bytes)}  " + ("ok" if r.openable else f"can't open: {r.reason}") + f"\n    {r.path}"
        for r in rows
    ]
    human = "\n".join(lines) if lines else "no models found"
    emit(args, {"models": [r.to_json() for r in rows], "count": len(rows)}, human)
    return 0
