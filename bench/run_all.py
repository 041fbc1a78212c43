"""Run every CPU benchmark (each in its own process), write bench/results/*.json, print the README table.

    python -m bench.run_all                 # everything (long on a busy 2-core machine)
    python -m bench.run_all --only steering,soak
    python -m bench.run_all --table         # only print the table from the results already there
    python -m bench.run_all --tiny          # every code path in a few minutes (numbers meaningless)

The GPU check is separate (bench/gpu_check.sh): it needs CUDA and prints its own JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

# name -> (module, extra arguments for a full run)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "steering": ("bench.bench_steering", []),
    "peers": ("bench.bench_peers", []),
    "gui_latency": ("bench.bench_gui_latency", []),
    "memory": ("bench.bench_memory", []),
    "gguf_open": ("bench.bench_gguf_open", []),
    "soak": ("bench.soak", []),
    "model_listing": ("bench.bench_model_listing", []),
    "serve": ("bench.bench_serve", []),
    "real_models": ("bench.bench_real_models", []),
    "peer_instructions": ("bench.bench_peer_instructions", []),  # ~30 min under valgrind
}
TINY_ARGS = {
    "soak": ["--tiny", "--n", "14", "--sample-every", "7"],
    "serve": ["--quick", "--reps", "1", "--requests", "8", "--requests-per-rep", "4"],
}


def table(results_dir: Path = common.RESULTS_DIR, names: list[str] | None = None) -> str:
    """The Markdown table of every target in the result files, with the machine and load averages."""
    rows, machines = [], {}
    for name in names or list(BENCHMARKS):
        path = results_dir / f"{name}.json"
        if not path.exists():
            rows.append(f"| {name} | — | not run | | |")
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        env = data.get("environment", {})
        machines[name] = (
            f"{env.get('cpu', '?')} ({env.get('cpu_count', '?')} cores, torch threads "
            f"{data.get('params', {}).get('threads', env.get('torch_threads', '?'))}); torch {env.get('torch')}, "
            f"transformers {env.get('transformers')}, bitsandbytes {env.get('bitsandbytes')}; "
            f"load average {data.get('load_average_start', ['?'])[0]} → {data.get('load_average_end', ['?'])[0]}; "
            f"{data.get('timestamp', '')}, commit {env.get('git_commit', '?')}"
        )
        if len(parts := data.get("parts", {})) > 1:  # parts re-run alone were merged: say when each ran
            machines[name] += "; parts: " + ", ".join(
                f"{part} {info.get('timestamp', '?')} (load {info.get('load_average_start', ['?'])[0]}, "
                f"commit {info.get('commit', '?')})"
                for part, info in parts.items()
            )
        if error := data.get("details", {}).get("error"):
            rows.append(f"| {name} | — | {error} | | ⚠️ |")
        # by target number, so that parts merged in any order (bench_steering --merge) read 1a, 1b, 2, ...
        for t in sorted(data.get("targets", []), key=lambda t: str(t["id"])):
            value = f"{t['value']:.3f}{t['unit']}" if t["unit"] != "" else f"{t['value']:.3g}"
            mark = "✅" if t["passed"] else "❌"
            rows.append(
                f"| {t['id']} | {t['name']} | {value} | {t['op']} {t['threshold']}{t['unit']} | {mark} |"
            )
    lines = ["| # | measure | value | target | |", "|---|---|---|---|---|", *rows, ""]
    lines += [f"- **{name}**: {text}" for name, text in machines.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    p.add_argument("--tiny", action="store_true", help="tiny sizes: checks every code path quickly")
    p.add_argument("--table", action="store_true", help="print the table from existing results only")
    p.add_argument("--results", type=Path, default=common.RESULTS_DIR, help="results folder")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    if unknown := set(names) - set(BENCHMARKS):
        p.error(f"unknown benchmarks {sorted(unknown)}")
    failed = []
    if not args.table:
        env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
        for name in names:
            module, extra = BENCHMARKS[name]
            extra = TINY_ARGS.get(name, ["--tiny"]) if args.tiny else extra
            out = args.results / f"{name}.json"
            started = time.perf_counter()
            print(f"== {name} (load average {common.load_average()})", flush=True)
            code = subprocess.run(
                [sys.executable, "-m", module, *extra, "--out", str(out)], cwd=common.ROOT, env=env
            ).returncode
            print(f"== {name}: exit {code} in {time.perf_counter() - started:.0f} s", flush=True)
            if code != 0:
                failed.append(name)
    print()
    print(table(args.results, names))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
