"""`library rename|tag|notes|duplicate|rm|trash|restore|combine|to-direction`: edits to the library."""

from __future__ import annotations

import argparse
import math

from engine.cli import emit
from engine.cli.library_commands import Leaf, open_library, warn
from engine.errors import InvalidInputError


def add_commands(leaf: Leaf) -> None:
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


def run_rename(args: argparse.Namespace) -> int:
    library = open_library(args)
    path = library.rename(args.key, args.new_name, overwrite=args.force)
    key = library.key_of(path)
    emit(args, {"old": args.key, "key": key, "path": str(path)}, f"renamed {args.key} to {key}")
    return 0


def run_tag(args: argparse.Namespace) -> int:
    library = open_library(args)
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
    library = open_library(args)
    if args.text is not None:
        library.set_notes(args.key, args.text)
    notes = library.entry(args.key).notes
    emit(args, {"key": args.key, "notes": notes}, notes or "(no notes)")
    return 0


def run_duplicate(args: argparse.Namespace) -> int:
    library = open_library(args)
    path = library.duplicate(args.key, args.new_name)
    emit(args, {"key": args.key, "path": str(path)}, f"copied {args.key} to {path}")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    library = open_library(args)
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
    library = open_library(args)
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
    library = open_library(args)
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
    library = open_library(args)
    terms = [parse_term(t) for t in args.terms]
    warnings = []
    if args.allow_other_model:
        fps = [library.load(k).fingerprint for _, k in terms]
        ids = {fp.id for fp in fps if fp is not None}
        if len(ids) > 1:
            warnings.append("combining vectors captured on different models; the result may not steer well")
    path = library.combine(terms, args.name, allow_other_model=args.allow_other_model)
    warn(warnings)
    recipe = " + ".join(f"{c:g}·{k}" for c, k in terms)
    emit(
        args,
        {"path": str(path), "terms": [{"coeff": c, "key": k} for c, k in terms], "warnings": warnings},
        f"saved {recipe} to {path}",
    )
    return 0


def run_to_direction(args: argparse.Namespace) -> int:
    library = open_library(args)
    path = library.to_direction(args.key, args.new_name, position=args.position)
    how = "mean over positions" if args.position is None else f"position {args.position}"
    emit(args, {"key": args.key, "path": str(path), "how": how}, f"saved the {how} of {args.key} to {path}")
    return 0
