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
import math
import sys

from engine.cli import _Parser, add_json_option, add_library_option, emit
from engine.errors import ActAddError, InvalidInputError, LibraryError


def _library(args: argparse.Namespace):
    from engine.library import Library

    return Library(args.library)


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _like(library, key: str | None):
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

    def leaf(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text)
        add_library_option(parser)
        add_json_option(parser)
        parser.set_defaults(handler=handler)
        return parser

    p = leaf("list", "list the vectors in the library (headers only)", run_list)
    p.add_argument("--tag", help="only vectors with this tag")
    p.add_argument("--method", choices=("actadd", "mean-diff", "pca", "combined", "imported"))
    p.add_argument("--search", "--text", dest="text", help="case-insensitive text search")
    p.add_argument("--collection", help="only this collection ('' for the top level)")
    p.add_argument("--model", help="only vectors captured on a model whose name or fingerprint id matches")
    p.add_argument("--like", metavar="KEY", help="only vectors usable on the model that KEY was captured on")
    _add_relative_option(p)

    p = leaf("show", "metadata, prompts, provenance, norms per layer and compatible models", run_show)
    p.add_argument("key")
    p.add_argument("--like", metavar="KEY", help="also say whether it fits the model KEY was captured on")
    _add_relative_option(p)

    p = leaf("rename", "rename a vector (NEW may be COLLECTION/NAME, or /NAME for the top level)", run_rename)
    p.add_argument("key")
    p.add_argument("new_name")
    p.add_argument("--force", action="store_true", help="overwrite a vector of the new name")

    p = leaf("tag", "set, add or remove tags (no change: print the tags)", run_tag)
    p.add_argument("key")
    p.add_argument("tags", nargs="*", help="the new tags (replace the old ones)")
    p.add_argument("--add", action="append", default=[], metavar="TAG")
    p.add_argument("--remove", action="append", default=[], metavar="TAG")

    p = leaf("notes", "set the notes (no text: print them)", run_notes)
    p.add_argument("key")
    p.add_argument("text", nargs="?")

    p = leaf("duplicate", "copy a vector under a new name", run_duplicate)
    p.add_argument("key")
    p.add_argument("new_name")

    p = leaf("rm", "move vectors into the library's trash", run_rm)
    p.add_argument("keys", nargs="+", metavar="KEY")

    p = leaf("trash", "list the trash (with --empty: delete it for good)", run_trash)
    p.add_argument("--empty", action="store_true", help="permanently delete everything in the trash")

    p = leaf("restore", "restore a vector from the trash", run_restore)
    p.add_argument("trash_id")
    p.add_argument("--name", help="restore under this name (if the old one is taken)")

    p = leaf("combine", "save a·v1 + b·v2 + ... as a new vector", run_combine)
    p.add_argument("terms", nargs="+", metavar="KEY[:COEFF]", help="a vector and its coefficient (default 1)")
    p.add_argument("--name", required=True, help="name of the new vector")
    p.add_argument(
        "--allow-other-model", action="store_true", help="combine vectors captured on different models"
    )

    p = leaf("to-direction", "turn a position-wise ActAdd vector into a [hidden] direction", run_to_direction)
    p.add_argument("key")
    p.add_argument("new_name")
    p.add_argument("--position", type=int, help="take this position instead of the mean over positions")

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


def _add_relative_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--relative-to",
        metavar="MODEL",
        help="load MODEL (folder, cached hub id or 'demo') and show each vector's norm relative to its "
        "typical residual norm at the vector's layer(s); measured once per model, then cached",
    )


def _relative_to(args: argparse.Namespace):
    """(per-layer typical norms, hidden size, model name) of --relative-to MODEL, or None."""
    if not args.relative_to:
        return None
    from engine.models import load_model
    from engine.residual_norms import residual_norm_profile

    loaded = load_model(args.relative_to)
    return residual_norm_profile(loaded), loaded.info.hidden_size, loaded.fingerprint.model_hint


def _relative_report(vector, relative) -> dict[str, float] | str:
    from engine.strength import relative_norm_report

    norms, hidden, _ = relative
    if vector.hidden_size != hidden:
        return f"hidden size {vector.hidden_size}, the model has {hidden}"
    return relative_norm_report(vector, norms)


def _relative_text(report: dict[str, float] | str) -> str:
    if isinstance(report, str):
        return f"- ({report})"
    return ", ".join(f"{layer}: {ratio:.3g}" for layer, ratio in report.items())


# ---- handlers ---------------------------------------------------------------------------------------------
def _entry_line(entry) -> str:
    layers = ",".join(str(l) for l in entry.layers)
    tags = f"  [{', '.join(entry.tags)}]" if entry.tags else ""
    model = f"  {entry.model_hint}" if entry.model_hint else ""
    return f"{entry.key}  {entry.method}  layers {layers}  shape {entry.shape}{model}{tags}"


def run_list(args: argparse.Namespace) -> int:
    library = _library(args)
    listing = library.list(
        model=_like(library, args.like),
        tag=args.tag,
        method=args.method,
        text=args.text,
        collection=args.collection,
    )
    entries = listing.entries
    if args.model:
        needle = args.model.casefold()
        entries = [
            e
            for e in entries
            if e.fingerprint
            and (e.fingerprint.id == args.model or needle in e.fingerprint.model_hint.casefold())
        ]
    for bad in listing.bad_files:
        print(f"warning: skipped {bad.path}: {bad.reason}", file=sys.stderr)
    vectors = [e.to_dict() for e in entries]
    lines = [_entry_line(e) for e in entries]
    relative = _relative_to(args)
    if relative is not None:
        for record, entry, index in zip(vectors, entries, range(len(lines)), strict=True):
            try:
                report = _relative_report(library.load(entry.key), relative)
            except ActAddError as exc:  # removed or broken since the listing: say so, list the rest
                report = str(exc)
            record["relative_norms"] = report
            lines[index] += f"  relative norm {_relative_text(report)}"
    payload = {
        "library": str(library.root),
        "count": len(entries),
        "vectors": vectors,
        "bad_files": [b.to_dict() for b in listing.bad_files],
    }
    if relative is not None:
        payload["relative_to"] = relative[2]
    human = "\n".join(lines) or f"no vectors in {library.root}"
    emit(args, payload, human)
    return 0


def run_show(args: argparse.Namespace) -> int:
    library = _library(args)
    info = library.show(args.key, model=_like(library, args.like))
    relative = _relative_to(args)
    vector = library.load(args.key)
    if relative is None and vector.fingerprint is not None:
        from engine.residual_norms import cached_norms

        if (norms := cached_norms(vector.fingerprint)) is not None:  # measured before: no model to load
            relative = (norms, vector.fingerprint.hidden_size, vector.fingerprint.model_hint)
    if relative is not None:
        info["relative_norms"] = _relative_report(vector, relative)
        info["relative_to"] = relative[2]
    lines = [
        f"{info['key']}  ({info['path']})",
        f"  method      {info['method']}",
        f"  layers      {info['layers']}  shape {info['shape']}  hidden {info['hidden_size']}",
        "  norms       " + ", ".join(f"{l}: {n:.4g}" for l, n in info["norms"].items()),
        *(
            [
                f"  relative    {_relative_text(info['relative_norms'])}  (x typical residual norm on {info['relative_to']})"
            ]
            if "relative_norms" in info
            else []
        ),
        f"  default     c = {info['default_coeff']:g}, mode {info['default_mode']}",
        f"  model       {info['model'] or '(none recorded)'}"
        + (f"  [{info['fingerprint']['id']}]" if info["fingerprint"] else ""),
        f"  prompts     {info['prompts']}",
        f"  tags        {', '.join(info['tags']) or '-'}",
        f"  notes       {info['notes'] or '-'}",
        f"  created     {info['created'] or '-'}",
        f"  provenance  {info['provenance']}",
        f"  fits        {info['compatible_models']['other_models']}",
    ]
    if "compatibility" in info:
        c = info["compatibility"]
        lines.append(f"  on {c['model'] or 'that model'}: {c['status']} ({c['reason']})")
    emit(args, info, "\n".join(lines))
    return 0


def run_rename(args: argparse.Namespace) -> int:
    library = _library(args)
    path = library.rename(args.key, args.new_name, overwrite=args.force)
    key = library.key_of(path)
    emit(args, {"old": args.key, "key": key, "path": str(path)}, f"renamed {args.key} to {key}")
    return 0


def run_tag(args: argparse.Namespace) -> int:
    library = _library(args)
    current = list(library.entry(args.key).tags)
    changed = bool(args.tags or args.add or args.remove)
    tags = list(args.tags) if args.tags else current
    tags += [t for t in args.add if t not in tags]
    tags = [t for t in tags if t not in args.remove]
    if changed:
        library.set_tags(args.key, tags)
        tags = list(library.entry(args.key).tags)
    emit(args, {"key": args.key, "tags": tags}, f"{args.key}: {', '.join(tags) or '(no tags)'}")
    return 0


def run_notes(args: argparse.Namespace) -> int:
    library = _library(args)
    if args.text is not None:
        library.set_notes(args.key, args.text)
    notes = library.entry(args.key).notes
    emit(args, {"key": args.key, "notes": notes}, notes or "(no notes)")
    return 0


def run_duplicate(args: argparse.Namespace) -> int:
    library = _library(args)
    path = library.duplicate(args.key, args.new_name)
    emit(args, {"key": args.key, "path": str(path)}, f"copied {args.key} to {path}")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    library = _library(args)
    for key in args.keys:  # resolve all first: a typo deletes nothing
        library.resolve(key)
    removed = {key: library.delete(key) for key in args.keys}
    emit(
        args,
        {"trashed": [{"key": k, "trash_id": t} for k, t in removed.items()]},
        "\n".join(f"moved {k} to the trash (restore with: library restore {t})" for k, t in removed.items()),
    )
    return 0


def run_trash(args: argparse.Namespace) -> int:
    library = _library(args)
    if args.empty:
        count = library.empty_trash()
        emit(args, {"emptied": count}, f"permanently deleted {count} vector(s)")
        return 0
    items = library.trash()
    payload = {"trash": [e.to_dict() for e in items]}
    human = "\n".join(
        f"{e.trash_id}  {make_key_of(e)}  deleted {e.deleted or '?'}  {e.method} layers {e.layers}"
        for e in items
    )
    emit(args, payload, human or "the trash is empty")
    return 0


def make_key_of(entry) -> str:
    from engine.library import make_key

    return make_key(entry.collection, entry.name)


def run_restore(args: argparse.Namespace) -> int:
    library = _library(args)
    path = library.restore(args.trash_id, new_name=args.name)
    key = library.key_of(path)
    emit(args, {"trash_id": args.trash_id, "key": key, "path": str(path)}, f"restored {key}")
    return 0


def parse_term(term: str) -> tuple[float, str]:
    """`KEY`, `KEY:COEFF` or `COEFF*KEY` -> (coeff, key). Names can contain neither ':' nor '*'."""
    if "*" in term:
        coeff_text, _, key = term.partition("*")
    elif ":" in term:
        key, _, coeff_text = term.rpartition(":")
    else:
        coeff_text, key = "1", term
    try:
        coeff = float(coeff_text)
    except ValueError as exc:
        raise InvalidInputError(f"cannot read the coefficient in {term!r}; expected KEY:COEFF") from exc
    if not math.isfinite(coeff) or not key:
        raise InvalidInputError(f"bad term {term!r}; expected KEY:COEFF with a finite COEFF")
    return coeff, key


def run_combine(args: argparse.Namespace) -> int:
    library = _library(args)
    terms = [parse_term(t) for t in args.terms]
    warnings = []
    if args.allow_other_model:
        fps = [library.load(k).fingerprint for _, k in terms]
        ids = {fp.id for fp in fps if fp is not None}
        if len(ids) > 1:
            warnings.append("combining vectors captured on different models; the result may not steer well")
    path = library.combine(terms, args.name, allow_other_model=args.allow_other_model)
    _warn(warnings)
    recipe = " + ".join(f"{c:g}·{k}" for c, k in terms)
    emit(
        args,
        {"path": str(path), "terms": [{"coeff": c, "key": k} for c, k in terms], "warnings": warnings},
        f"saved {recipe} to {path}",
    )
    return 0


def run_to_direction(args: argparse.Namespace) -> int:
    library = _library(args)
    path = library.to_direction(args.key, args.new_name, position=args.position)
    how = "mean over positions" if args.position is None else f"position {args.position}"
    emit(args, {"key": args.key, "path": str(path), "how": how}, f"saved the {how} of {args.key} to {path}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from engine.interop import export

    library = _library(args)
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
    _warn(result.warnings)
    emit(
        args,
        {"path": str(result.path), "keys": result.keys, "warnings": result.warnings},
        f"exported {len(result.keys)} vector(s) to {result.path}",
    )
    return 0


def run_import(args: argparse.Namespace) -> int:
    from engine.interop import import_file

    library = _library(args)
    result = import_file(
        library,
        args.file,
        fmt=args.format,
        name=args.name,
        collection=args.collection,
        overwrite=args.force,
        model=_like(library, args.like),
    )
    _warn(result.warnings)
    emit(
        args,
        {
            "imported": [{"key": k, "path": str(p)} for k, p in result.saved],
            "warnings": result.warnings,
        },
        "\n".join(f"imported {k} ({p})" for k, p in result.saved),
    )
    return 0
