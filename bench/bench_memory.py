"""Target 8: memory of one model loaded at none / 8bit / 4bit, each load in a fresh process, on CPU.

    python -m bench.bench_memory            # a random model of SmolLM2-360M's shape
    python -m bench.bench_memory --tiny     # the code path only

Each configuration runs `engine.load_model(folder, quantize=..., dtype=..., device="cpu")` in its own
subprocess, which reports its resident memory (RSS) before and after the load, and the weights' size as
`engine.memory_report` gives it (`get_memory_footprint`: parameters and buffers). A short forward pass
checks that the loaded model runs; RSS is read after it, since safetensors weights may be mapped lazily.
As a diagnostic only, after that measurement, `malloc_trim(0)` shows how much of the RSS is freed heap
that glibc kept from the load. The target compares 4-bit weights with float16 weights.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

# (label, quantize, dtype): "auto" is the app's default, float32 on CPU
CONFIGS = [
    ("none float32", "none", "auto"),
    ("none float16", "none", "float16"),
    ("8bit", "8bit", "auto"),
    ("4bit", "4bit", "auto"),
    ("4bit float16", "4bit", "float16"),
    ("4bit bfloat16", "4bit", "bfloat16"),
]


def child(folder: str, quantize: str, dtype: str, warm_folder: str) -> dict:
    """Runs in the subprocess: load once, measure, print one JSON line.

    A tiny model of the same architecture is loaded (and dropped) first with the same settings, so the
    imports and one-off allocations of that code path are in the baseline, not in the model's share.
    """
    import gc
    import os
    import time

    import psutil
    import torch

    from engine import load_model, memory_report

    torch.set_num_threads(1)
    process = psutil.Process(os.getpid())
    warm = load_model(warm_folder, quantize=quantize, dtype=dtype, device="cpu")
    with torch.inference_mode():
        warm.model(input_ids=torch.tensor([[1, 2, 3, 4]]))
    del warm
    gc.collect()
    before = process.memory_info().rss
    started = time.perf_counter()
    loaded = load_model(folder, quantize=quantize, dtype=dtype, device="cpu")
    seconds = time.perf_counter() - started
    gc.collect()
    after_load = process.memory_info().rss  # safetensors may still be mapped lazily here
    report = memory_report(loaded)
    linear = [m for m in loaded.model.modules() if "Linear" in type(m).__name__]
    with torch.inference_mode():  # touches every weight, as the first generation would
        logits = loaded.model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    gc.collect()
    after = process.memory_info().rss
    trimmed = None
    try:  # diagnostic only, after the measurement: how much of RSS is freed heap glibc has kept
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        trimmed = process.memory_info().rss
    except OSError:
        pass
    return {
        "quantize": quantize,
        "dtype": dtype,
        "load_seconds": seconds,
        "rss_before_mb": before / 2**20,
        "rss_after_load_mb": after_load / 2**20,
        "rss_after_mb": after / 2**20,
        "rss_delta_mb": (after - before) / 2**20,
        "rss_delta_after_malloc_trim_mb": None if trimmed is None else (trimmed - before) / 2**20,
        "weights_mb": report["weights_mb"],
        "n_params": loaded.info.n_params,
        "linear_types": sorted({type(m).__name__ for m in linear}),
        "forward_ok": bool(torch.isfinite(logits.float()).all()),
    }


def measure(folder: Path, quantize: str, dtype: str, warm_folder: Path) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from bench.bench_memory import child; "
        "print('RESULT ' + json.dumps(child(*sys.argv[2:])))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(common.ROOT), str(folder), quantize, dtype, str(warm_folder)],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=common.ROOT,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"quantize": quantize, "dtype": dtype, "error": " | ".join(tail)[:500]}


def run(args: argparse.Namespace) -> dict:
    result = common.Result("memory", params=vars(args).copy())
    shape = "tiny-llama" if args.tiny else "smollm-360m"
    folder = common.model_dir(shape)
    warm_folder = common.model_dir("tiny-llama")
    result.details["shape"] = {"name": shape, **common.SHAPES[shape][1]}
    runs = {label: measure(folder, quantize, dtype, warm_folder) for label, quantize, dtype in CONFIGS}
    result.details["loads"] = runs
    fp16 = runs["none float16"]
    for label in ("4bit", "4bit float16", "4bit bfloat16"):
        if "error" in runs[label] or "error" in fp16:
            continue
        result.target(
            "8",
            f"{label} / float16 weight memory",
            runs[label]["weights_mb"] / fp16["weights_mb"],
            "<=",
            0.35,
        )
        result.details[f"{label} / float16 RSS growth"] = runs[label]["rss_delta_mb"] / fp16["rss_delta_mb"]
    if "error" not in runs["8bit"] and "error" not in fp16:
        result.details["8bit / float16 weight memory"] = runs["8bit"]["weights_mb"] / fp16["weights_mb"]
    if errors := {label: r["error"] for label, r in runs.items() if "error" in r}:
        result.details["errors"] = errors
    return result.write(args.out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a tiny model: checks the code path only")
    p.add_argument("--out", type=Path, default=None, help="result file (default bench/results/memory.json)")
    return p


def main(argv: list[str] | None = None) -> dict:
    data = run(parser().parse_args(argv))
    print(f"memory: load average {data['load_average_start']} -> {data['load_average_end']}")
    for label, r in data["details"]["loads"].items():
        if "error" in r:
            print(f"  {label:>13}: ERROR {r['error']}")
        else:
            print(f"  {label:>13}: weights {r['weights_mb']:8.1f} MB, RSS +{r['rss_delta_mb']:8.1f} MB")
    common.print_targets(data)
    return data


if __name__ == "__main__":
    main()
