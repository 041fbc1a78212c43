"""`library list` and `library show`: the library's vectors, their headers, and with --relative-to MODEL
each vector's norm against the model's typical residual norm at its layer(s)."""

from __future__ import annotations

import argparse
import sys

from engine.cli import emit
from engine.cli.library_commands import Leaf, open_library, vector_like
from engine.errors import ActAddError
from engine.modes import METHODS


def add_commands(leaf: Leaf) -> None:
    p = leaf("list", "list the vectors in the library (headers only)", run_list)
    p.add_argument("--tag", help="only vectors with this tag")
    p.add_argument("--method", choices=METHODS)
    p.add_argument("--search", "--text", dest="text", help="case-insensitive text search")
    p.add_argument("--collection", help="only this collection ('' for the top level)")
    p.add_argument("--model", help="only vectors captured on a model whose name or fingerprint id matches")
    p.add_argument("--like", metavar="KEY", help="only vectors usable on the model that KEY was captured on")
    _add_relative_option(p)

    p = leaf("show", "metadata, prompts, provenance, norms per layer and compatible models", run_show)
    p.add_argument("key")
    p.add_argument("--like", metavar="KEY", help="also say whether it fits the model KEY was captured on")
    _add_relative_option(p)


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


def _entry_line(entry) -> str:
    layers = ",".join(str(l) for l in entry.layers)
    tags = f"  [{', '.join(entry.tags)}]" if entry.tags else ""
    model = f"  {entry.model_hint}" if entry.model_hint else ""
    return f"{entry.key}  {entry.method}  layers {layers}  shape {entry.shape}{model}{tags}"


def run_list(args: argparse.Namespace) -> int:
    library = open_library(args)
    listing = library.list(
        model=vector_like(library, args.like),
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
    library = open_library(args)
    info = library.show(args.key, model=vector_like(library, args.like))
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
