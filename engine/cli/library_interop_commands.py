"""`library export` and `library import`: bundles, llama.cpp control vectors, repeng and steering-vectors
files, through engine.interop."""

from __future__ import annotations

import argparse

from engine.cli import emit
from engine.cli.library_commands import Leaf, open_library, vector_like, warn
from engine.errors import InvalidInputError, LibraryError


def add_commands(leaf: Leaf) -> None:
    p = leaf("export", "export to a .zip bundle, a llama.cpp .gguf or a .safetensors file", run_export)
    p.add_argument(
        "items", nargs="+", metavar="[KEY ...] OUT", help="vectors to export, then the output file"
    )
    p.add_argument("--collection", action="append", default=[], help="export a whole collection (bundle)")
    p.add_argument("--all", action="store_true", help="export the whole library (bundle)")
    p.add_argument("--format", choices=("auto", "bundle", "gguf", "vector"), default="auto")
    p.add_argument(
        "--direction",
        metavar="mean|POSITION",
        help="GGUF: convert a position-wise vector (mean over positions, or one position)",
    )
    p.add_argument(
        "--skip-invalid-layers",
        action="store_true",
        help="GGUF: drop layers 0 and 1, which llama.cpp can't express, instead of refusing",
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT")

    p = leaf(
        "import",
        "import a bundle, GGUF control vector, repeng .npy/.npz or steering-vectors file",
        run_import,
    )
    p.add_argument("file")
    p.add_argument(
        "--format", choices=("auto", "bundle", "gguf", "repeng", "steering-vectors", "vector"), default="auto"
    )
    p.add_argument("--name", help="name in the library (default: the file name)")
    p.add_argument("--collection", help="collection to import into")
    p.add_argument(
        "--like",
        metavar="KEY",
        help="the vectors are for the model KEY was captured on: check them against it and record it",
    )
    p.add_argument("--force", action="store_true", help="overwrite vectors of the same names")


def run_export(args: argparse.Namespace) -> int:
    from engine.interop import export

    library = open_library(args)
    *keys, out = args.items
    for collection in args.collection:
        listed = library.list(collection=collection).entries
        if not listed:
            raise LibraryError(f"collection {collection!r} is empty or does not exist")
        keys += [e.key for e in listed]
    if args.all:
        keys += [e.key for e in library.list().entries]
    if not keys:
        raise InvalidInputError(
            "nothing to export: name vectors, --collection or --all, then the output file"
        )
    keys = list(dict.fromkeys(keys))
    direction = args.direction
    if direction is not None and direction != "mean":
        try:
            direction = int(direction)
        except ValueError as exc:
            raise InvalidInputError("--direction is 'mean' or a position number") from exc
    fmt = args.format
    if fmt == "auto" and len(keys) > 1 and not out.lower().endswith(".zip"):
        raise InvalidInputError("several vectors go into a .zip bundle; name the output *.zip")
    result = export(
        library,
        keys,
        out,
        fmt=fmt,
        overwrite=args.force,
        direction=direction,
        skip_invalid_layers=args.skip_invalid_layers,
    )
    warn(result.warnings)
    emit(
        args,
        {"path": str(result.path), "keys": result.keys, "warnings": result.warnings},
        f"exported {len(result.keys)} vector(s) to {result.path}",
    )
    return 0


def run_import(args: argparse.Namespace) -> int:
    from engine.interop import import_file

    library = open_library(args)
    result = import_file(
        library,
        args.file,
        fmt=args.format,
        name=args.name,
        collection=args.collection,
        overwrite=args.force,
        model=vector_like(library, args.like),
    )
    warn(result.warnings)
    emit(
        args,
        {
            "imported": [{"key": k, "path": str(p)} for k, p in result.saved],
            "warnings": result.warnings,
        },
        "\n".join(f"imported {k} ({p})" for k, p in result.saved),
    )
    return 0
