"""`library ...`: the vector library from the command line (no model is loaded, but for --relative-to).

    library list [--tag T] [--method M] [--search TEXT] [--collection C] [--model TEXT] [--like KEY]
                 [--relative-to MODEL]
    library show KEY [--like KEY] [--relative-to MODEL]
    library rename KEY NEW [--force]
    library tag KEY [TAG ...] [--add T] [--remove T]
    library notes KEY [TEXT]
    library duplicate KEY NEW
    library rm KEY [KEY ...]
    library trash [--empty]
    library restore TRASH_ID [--name NEW]
    library combine KEY[:COEFF] ... --name NEW [--allow-other-model]
    library to-direction KEY NEW [--position N]
    library export [KEY ...] OUT [--collection C | --all] [--direction mean|N] [--skip-invalid-layers] [--force]
    library import FILE [--format F] [--name N] [--collection C] [--like KEY] [--force]

Each takes `--library DIR` and `--json`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from engine.cli import _Parser, add_json_option, add_library_option
from engine.errors import InvalidInputError

# leaf(name, help, handler) -> the parser of `library NAME`, with --library and --json already added.
Leaf = Callable[[str, str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]


def open_library(args: argparse.Namespace):
    from engine.library import Library

    return Library(args.library)


def warn(warnings: list[str]) -> None:
    """Warnings on stderr, one line each (the JSON output carries them too)."""
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def vector_like(library, key: str | None):
    """The model fingerprint recorded by another library vector (for `--like KEY`)."""
    if key is None:
        return None
    vector = library.load(key)
    if vector.fingerprint is None:
        raise InvalidInputError(f"{key!r} records no model; --like needs a vector captured on a model")
    return vector.fingerprint


def register(sub) -> None:
    library = sub.add_parser("library", help="list, inspect, edit, import and export library vectors")
    commands = library.add_subparsers(
        dest="library_command", required=True, parser_class=_Parser, metavar="COMMAND"
    )

    def leaf(
        name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text)
        add_library_option(parser)
        add_json_option(parser)
        parser.set_defaults(handler=handler)
        return parser

    # Each module defines its subcommands' flags next to their handlers; imported here, not at the top,
    # because they import the helpers above.
    from engine.cli import library_edit_commands, library_interop_commands, library_view_commands

    for module in (library_view_commands, library_edit_commands, library_interop_commands):
        module.add_commands(leaf)
