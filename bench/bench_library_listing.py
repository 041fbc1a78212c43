"""Benchmark: listing a library of 5,000 vectors (issue 4: "well under a second").

    python bench/bench_library_listing.py [--vectors 5000] [--reps 5] [--out bench/results/library_listing.json]

Builds a temporary library of small vectors (a mix of position-wise ActAdd vectors and directions, in 10
collections plus the top level, with tags, notes, prompts and a model fingerprint, as real captures have)
and times `Library.list()`:

- cold:       no index (`.index.json` deleted): every header is read and parsed, and the index is written;
- warm:       a new `Library` object (as in a new process) with a current index: one `stat` per file and
              one read of the index, no vector file is opened;
- same object: the same `Library` again: one `stat` per file, answered from its memory of the last listing;
- touched 10: 10 vectors were rewritten since the last listing (new inode, mtime): a new `Library` object
              re-reads their headers, takes the rest from the index, and rewrites the index.
Plus two filtered warm listings (text search, and "usable on this model").

The files are written with plain writes for a fast setup (the benchmark measures listing, not saving);
"cold" means cold for the library (no index), not for the OS page cache, which is not dropped.
Writes JSON with the versions, the CPU model and every timing, and prints a Markdown table row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import engine

    found = {"python": platform.python_version(), "actadd-studio": engine.__version__}
    for package in ("torch", "safetensors", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def build_library(root: Path, n: int, seed: int = 0) -> None:
    import torch

    from engine.fingerprint import ModelFingerprint
    from engine.library import SUFFIX
    from engine.vector import SteeringVector, vector_to_bytes

    rng = random.Random(seed)
    fingerprints = [
        ModelFingerprint("llama", 64, 8, "0123456789abcdef", "Llama-3-8B-4bit"),
        ModelFingerprint("gpt2", 64, 12, "fedcba9876543210", "gpt2-xl"),
    ]
    words = ["love", "hate", "wedding", "formal", "calm", "anger", "praise", "hurt", "travel", "food"]
    gen = torch.Generator().manual_seed(seed)
    collections = [""] + [f"collection-{i}" for i in range(10)]
    for i in range(n):
        positive, negative = rng.sample(words, 2)
        positional = i % 3 != 0
        layers = sorted(rng.sample(range(1, 8), rng.choice([1, 1, 2, 3])))
        shape = (rng.randint(2, 6), 64) if positional else (64,)
        vector = SteeringVector(
            layers={l: torch.randn(shape, generator=gen) for l in layers},
            method="actadd" if positional else rng.choice(["mean-diff", "pca"]),
            default_coeff=float(rng.choice([1, 4, 5, 10])),
            default_mode="front" if positional else "all",
            fingerprint=rng.choice(fingerprints),
            prompts={"positive": positive.title(), "negative": negative.title()},
            provenance={"pad_token": "Ġ", "dtype": "float32", "quantize": "4bit", "library_version": "0.1.0"},
            tags=tuple(rng.sample(words, 2)),
            notes=f"{positive} minus {negative}, c={rng.choice([1, 4, 5, 10])} works",
        )
        name = f"{positive}-{negative}-{i:05d}"
        folder = root / collections[i % len(collections)] if collections[i % len(collections)] else root
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}{SUFFIX}").write_bytes(vector_to_bytes(vector.replace(name=name)))


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def stats(times: list[float]) -> dict:
    return {
        "median_s": round(median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "reps": len(times),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "library_listing.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary library")
    args = parser.parse_args(argv)

    from engine.fingerprint import ModelFingerprint
    from engine.library import INDEX_NAME, SUFFIX, Library

    workdir = Path(tempfile.mkdtemp(prefix="actadd-bench-library-"))
    root = workdir / "library"
    try:
        t_build, _ = timed(lambda: build_library(root, args.vectors))
        print(f"built {args.vectors} vectors in {t_build:.1f}s under {root}", file=sys.stderr)
        files = sorted(root.rglob(f"*{SUFFIX}"))
        total_bytes = sum(p.stat().st_size for p in files)
        rng = random.Random(1)

        cold, warm, memory, touched, search, usable = [], [], [], [], [], []
        counts = set()
        model = ModelFingerprint("llama", 64, 8, "0123456789abcdef", "Llama-3-8B-4bit")
        for rep in range(args.reps):
            (root / INDEX_NAME).unlink(missing_ok=True)
            t, listing = timed(Library(root).list)  # a new object and no index: every header is read
            cold.append(t)
            counts.add(len(listing.entries))
            assert not listing.bad_files, listing.bad_files[:3]

            t, listing = timed(Library(root).list)  # a new object, as in a new process: reads the index
            warm.append(t)
            counts.add(len(listing.entries))

            same = Library(root)
            same.list()
            t, listing = timed(same.list)  # the same object again (the app): its memory of the last listing
            memory.append(t)
            counts.add(len(listing.entries))

            # rewrite 10 vectors the way the library does (new inode via temp file + rename)
            for path in rng.sample(files, 10):
                data = path.read_bytes()
                tmp = path.with_name(f".tmp-bench-{path.name}")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            t, listing = timed(Library(root).list)
            touched.append(t)
            counts.add(len(listing.entries))

            t, _ = timed(lambda s=same: s.list(text="wedding"))
            search.append(t)
            t, _ = timed(lambda s=same: s.list(model=model))
            usable.append(t)
            print(
                f"  rep {rep + 1}/{args.reps}: cold {cold[-1]:.3f}s, warm {warm[-1]:.3f}s, "
                f"same object {memory[-1]:.3f}s, touched {touched[-1]:.3f}s",
                file=sys.stderr,
            )
        assert counts == {args.vectors}, counts
        index_bytes = (root / INDEX_NAME).stat().st_size

        result = {
            "benchmark": "library_listing",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "environment": {
                "cpu": cpu_model(),
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
                "versions": versions(),
            },
            "params": {
                "vectors": args.vectors,
                "collections": 10,
                "reps": args.reps,
                "library_bytes": total_bytes,
                "index_bytes": index_bytes,
                "build_s": round(t_build, 2),
            },
            "timings": {
                "cold_no_index": stats(cold),
                "warm_index": stats(warm),
                "warm_same_object": stats(memory),
                "after_touching_10": stats(touched),
                "warm_text_search": stats(search),
                "warm_usable_on_model": stats(usable),
            },
            "target": {
                "name": "warm listing of 5,000 vectors well under a second",
                "threshold_s": 0.5,
                "passed": median(warm) < 0.5 and median(touched) < 0.5,
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        t = result["timings"]
        ms = {k: f"{v['median_s'] * 1000:.0f} ms" for k, v in t.items()}
        print("| vectors | cold (no index) | warm (index) | warm (same object) | after touching 10 | CPU |")
        print("|---|---|---|---|---|---|")
        print(
            f"| {args.vectors:,} | {ms['cold_no_index']} | {ms['warm_index']} | {ms['warm_same_object']} "
            f"| {ms['after_touching_10']} | {cpu_model()} |"
        )
        print(f"wrote {args.out}", file=sys.stderr)
        return 0 if result["target"]["passed"] else 1
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
