"""Issue 14 target: peak memory while opening a .gguf, ours vs transformers' own GGUF load.

    python -m bench.bench_gguf_open                 # a synthetic TinyLlama-1.1B-shaped GGUF
    python -m bench.bench_gguf_open --shape half    # a smaller llama shape, when the machine is busy
    python -m bench.bench_gguf_open --tiny          # the code path only (a toy shape, Q8_0 only)

A llama-shaped GGUF is written with the `gguf` package in Q8_0 and in Q4_K, its blocks filled with random
bytes of the right layout (the values need not mean anything to measure memory). Each variant then opens
it in float32 in a fresh subprocess, which reports its peak resident memory (`ru_maxrss`, the whole
process: interpreter, torch, transformers and all):
- `ours, first open`:  engine.load_model(FILE.gguf): the one-time streaming conversion, then the folder load
- `ours, cached`:      the same call again, reusing the converted folder
- `transformers`:      AutoModelForCausalLM/AutoTokenizer.from_pretrained(folder, gguf_file=NAME)
Target (issue 14): peak RSS <= 1.25 x the model's final in-memory weights + 500 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

# name -> gguf_files.Shape fields (llama): TinyLlama-1.1B, a ~0.4B cut of it, and a toy
SHAPES = {
    "1b": {
        "vocab": 32000,
        "hidden": 2048,
        "layers": 22,
        "heads": 32,
        "kv_heads": 4,
        "ffn": 5632,
        "context": 2048,
    },
    "half": {
        "vocab": 32000,
        "hidden": 1536,
        "layers": 12,
        "heads": 24,
        "kv_heads": 4,
        "ffn": 4096,
        "context": 2048,
    },
    "tiny": {"vocab": 512, "hidden": 256, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 512, "context": 256},
}
QTYPES = ("Q8_0", "Q4_K")
LABELS = {"1b": "1.1B llama", "half": "0.39B llama", "tiny": "toy llama"}
VARIANTS = ("ours, first open", "ours, cached", "transformers")


def child(variant: str, gguf_path: str, cache: str) -> dict:
    """Runs in the subprocess: open the file once, print one JSON line."""
    import os
    import resource
    import time

    os.environ["ACTADD_CACHE"] = cache
    import psutil
    import torch
    import transformers  # noqa: F401  (imported before the baseline, as both paths need it)

    from engine import load_model

    baseline = psutil.Process().memory_info().rss
    started = time.perf_counter()
    path = Path(gguf_path)
    if variant == "transformers":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    else:
        model = load_model(path, device="cpu", dtype="float32").model
    seconds = time.perf_counter() - started
    with torch.inference_mode():  # touches every weight, as the first generation would
        model(input_ids=torch.tensor([[1, 2, 3, 4]]))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "variant": variant,
        "seconds": seconds,
        "baseline_rss_mb": baseline / 2**20,
        "final_rss_mb": psutil.Process().memory_info().rss / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "weights_mb": weights / 2**20,
    }


def measure(variant: str, gguf_path: Path, cache: Path) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from bench.bench_gguf_open import child; "
        "print('RESULT ' + json.dumps(child(*sys.argv[2:])))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(common.ROOT), variant, str(gguf_path), str(cache)],
        capture_output=True,
        text=True,
        timeout=3600,
        cwd=common.ROOT,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"variant": variant, "error": " | ".join(tail)[:500]}


def write_file(folder: Path, shape: str, qtype: str) -> Path:
    sys.path.insert(0, str(common.ROOT / "tests"))
    from gguf import GGMLQuantizationType
    from gguf_models import Shape, write_gguf

    path = folder / f"synthetic-{shape}-{qtype}.gguf"
    if not path.exists():
        partial = folder / f".{path.name}.partial"
        write_gguf(partial, "llama", Shape(**SHAPES[shape]), GGMLQuantizationType[qtype], random_bytes=True)
        partial.rename(path)
    return path


def run(args: argparse.Namespace) -> dict:
    if args.tiny:
        args.shape = "tiny"
    result = common.Result("gguf_open", params=vars(args).copy())
    result.details["shape"] = {"name": args.shape, **SHAPES[args.shape]}
    work = Path(args.work or tempfile.mkdtemp(prefix="actadd-bench-gguf-"))
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict] = {}
    try:
        for qtype in QTYPES[:1] if args.tiny else QTYPES:
            path = write_file(work, args.shape, qtype)
            cache = work / f"cache-{qtype}"
            shutil.rmtree(cache, ignore_errors=True)  # "first open" must convert
            runs[qtype] = {"file_mb": path.stat().st_size / 2**20}
            for variant in VARIANTS:
                runs[qtype][variant] = measure(variant, path, cache)
            ours = runs[qtype]["ours, first open"]
            if "error" not in ours:
                allowed = 1.25 * ours["weights_mb"] + 500
                result.target(
                    "14",
                    f"GGUF {qtype} first open ({LABELS[args.shape]}, float32): peak RSS / (1.25 x weights + 500 MB)",
                    ours["peak_rss_mb"] / allowed,
                    "<=",
                    1.0,
                )
                naive = runs[qtype]["transformers"]
                if "error" not in naive:
                    result.details[f"{qtype} peak RSS ours / transformers"] = (
                        ours["peak_rss_mb"] / naive["peak_rss_mb"]
                    )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result.details["runs"] = runs
    return result.write(args.out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    p.add_argument("--tiny", action="store_true", help="a toy shape in Q8_0 only: checks the code path")
    p.add_argument("--work", help="folder for the synthetic files and caches (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument(
        "--out", type=Path, default=None, help="result file (default bench/results/gguf_open.json)"
    )
    return p


def main(argv: list[str] | None = None) -> dict:
    data = run(parser().parse_args(argv))
    print(
        f"gguf_open ({data['details']['shape']['name']}): load average {data['load_average_start']} -> {data['load_average_end']}"
    )
    for qtype, runs in data["details"]["runs"].items():
        for variant in VARIANTS:
            r = runs.get(variant, {})
            if "error" in r:
                print(f"  {qtype} {variant:>16}: ERROR {r['error']}")
            elif r:
                print(
                    f"  {qtype} {variant:>16}: peak {r['peak_rss_mb']:7.0f} MB, weights {r['weights_mb']:7.0f} MB, "
                    f"{r['seconds']:6.1f} s"
                )
    common.print_targets(data)
    return data


if __name__ == "__main__":
    main()
