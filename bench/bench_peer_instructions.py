"""Target 15c, counted: instructions per steered generation, ours against repeng and steering-vectors.

    bash bench/setup_peers.sh                                   # once: the peer libraries
    python -m bench.bench_peer_instructions       # SmolLM2; needs valgrind, gcc and valgrind's headers

Timed on this shared 2-core machine, one generation's time spreads by ±15% from run to run, while the
three differ by well under 1% (the same `model.generate`, one addition each): a "≥ 1.0×" target on
their timed ratio (bench_peers) passes or fails by the draw. Instructions executed are deterministic to
a few in 10^5, so this counts them instead, the way rustc-perf tracks a compiler's speed: each variant of
`bench_peers.peer_variants` (the same model, prompt, tokens and checks) runs once, warmed, between two
client requests (bench/callgrind_marks.c) that zero callgrind's counters, count, and dump them with the
variant's name. Everything else (imports, loading, warm-up) runs uninstrumented. The ratio
"peer / ours" is the work per generation of the peer over ours: ≥ 1.0 means ours executes no more.
Under valgrind the math libraries take their AVX2 paths (valgrind has no AVX-512), alike for every
variant. One run of SmolLM2 takes ~30 minutes of one core.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.bench_peers import VENV_PYTHON, load_peer_model, peer_variants, peers_available
from bench.bench_real_models import model_source

MARKS_SOURCE = common.ROOT / "bench" / "callgrind_marks.c"
MARKS_LIBRARY = common.ROOT / "bench" / ".build" / "libcallgrind_marks.so"
CALLGRIND_HEADER = Path("/usr/include/valgrind/callgrind.h")


def missing_tools() -> str | None:
    """None when valgrind, gcc and callgrind.h are all here, else what is missing."""
    missing = [tool for tool in ("valgrind", "gcc") if shutil.which(tool) is None]
    if not CALLGRIND_HEADER.exists():
        missing.append(f"{CALLGRIND_HEADER} (Debian: valgrind's package has it)")
    return f"missing {', '.join(missing)}" if missing else None


def build_marks() -> Path:
    """bench/.build/libcallgrind_marks.so, built again when the source is newer."""
    if not MARKS_LIBRARY.exists() or MARKS_LIBRARY.stat().st_mtime < MARKS_SOURCE.stat().st_mtime:
        MARKS_LIBRARY.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["gcc", "-O2", "-shared", "-fPIC", "-o", str(MARKS_LIBRARY), str(MARKS_SOURCE)], check=True
        )
    return MARKS_LIBRARY


def read_counts(folder: Path) -> dict[str, int]:
    """{label: instructions} from the callgrind files dumped in `folder` (one per marks_stop)."""
    counts: dict[str, int] = {}
    for path in sorted(folder.glob("callgrind.out*")):
        text = path.read_text(encoding="utf-8", errors="replace")
        label = re.search(r"^desc: Trigger: Client Request: (.+)$", text, re.MULTILINE)
        total = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
        if label and total:
            counts[label.group(1).strip()] = int(total.group(1))
    return counts


def child(args: argparse.Namespace) -> None:
    """Inside valgrind: warm every variant (peer_variants runs each once), then count each once."""
    import torch

    from engine import cancellation

    marks = ctypes.CDLL(str(MARKS_LIBRARY))
    marks.marks_stop.argtypes = [ctypes.c_char_p]
    if not marks.marks_running():
        raise SystemExit("the child counts nothing outside valgrind")
    torch.set_num_threads(1)
    # Natively a token of these models takes well under SLOW_TOKEN_SECONDS (SmolLM2: ~75 ms on one thread),
    # so the per-block Stop check is dropped after the prompt pass; under valgrind every token takes
    # seconds and would keep it. The child applies the native decision (--slow-tokens: the slow path).
    cancellation.SLOW_TOKEN_SECONDS = 0.0 if args.slow_tokens else math.inf
    peers = peer_variants(
        load_peer_model(args), args.new_tokens, n_pairs=2
    )  # the pairs only pick a direction
    if not peers.same:
        raise SystemExit("the steered tokens differ between ours and a peer")
    for rep in range(args.reps):
        for name, call in peers.calls.items():
            marks.marks_start()
            call()
            marks.marks_stop(f"{name}|{rep}".encode())


def run(args: argparse.Namespace) -> dict:
    result = common.Result("peer_instructions", params=vars(args).copy())
    peers_here = (why := peers_available()) is None
    if not peers_here and not VENV_PYTHON.exists():
        result.details["error"] = f"peer libraries not importable ({why}); run bench/setup_peers.sh"
        return result.write(args.out)
    if (why := missing_tools()) is not None:
        result.details["error"] = why
        return result.write(args.out)
    build_marks()
    python = sys.executable if peers_here else str(VENV_PYTHON)
    model = str(model_source(args))  # the real SmolLM2 (fetched if need be), --model, or a tiny Llama
    with tempfile.TemporaryDirectory(prefix="callgrind-") as folder:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--collect-atstart=no",
            f"--callgrind-out-file={folder}/callgrind.out",
            python,
            "-m",
            "bench.bench_peer_instructions",
            "--child",
            "--new-tokens",
            str(args.new_tokens),
            "--reps",
            str(args.reps),
            "--model",
            model,
            *(["--slow-tokens"] if args.slow_tokens else []),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0", "ACTADD_BENCH_NO_REEXEC": "1"}
        done = subprocess.run(command, cwd=common.ROOT, env=env, capture_output=True, text=True)
        counts = read_counts(Path(folder))
    if done.returncode != 0 or not counts:
        result.details["error"] = f"valgrind run failed ({done.returncode}): {done.stderr[-1500:]}"
        return result.write(args.out)
    names = sorted({label.split("|")[0] for label in counts})
    per_name = {name: [n for label, n in counts.items() if label.split("|")[0] == name] for name in names}
    result.details.update(
        model=model,
        slow_tokens=args.slow_tokens,
        new_tokens=args.new_tokens,
        instructions=per_name,
        spread={name: (max(v) - min(v)) / min(v) for name, v in per_name.items()},
    )
    ours = min(per_name["ours"])
    for peer in ("repeng", "steering-vectors"):
        ratio = min(per_name[peer]) / ours
        result.details[f"{peer}_over_ours"] = ratio
        result.target("15c", f"instructions per steered generation, {peer} / ours", ratio, ">=", 1.0)
    result.details["ours_unsteered_over_hf_unsteered"] = min(per_name["ours unsteered"]) / min(
        per_name["hf unsteered"]
    )
    return result.write(args.out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="a model file or folder (default: SmolLM2-135M-Instruct)")
    p.add_argument("--tiny", action="store_true", help="a tiny random Llama: checks the code path only")
    p.add_argument("--new-tokens", type=int, default=8, help="tokens per generation (default 8)")
    p.add_argument("--reps", type=int, default=1, help="counted runs of each variant (default 1)")
    p.add_argument("--out", type=Path, default=None, help="result file (default bench/results/...)")
    p.add_argument(
        "--slow-tokens",
        action="store_true",
        help="count ours as on a model whose tokens take >= 0.2 s (the Stop check on every block, every pass)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict | None:
    args = parser().parse_args(argv)
    if args.child:
        child(args)
        return None
    data = run(args)
    if "error" in data["details"]:
        print(f"peer_instructions: {data['details']['error']}")
    common.print_targets(data)
    return data


if __name__ == "__main__":
    main()
