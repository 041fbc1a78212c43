"""Long fuzzing of every parser of untrusted input, for occasional use (issue 6).

The normal suite (tests/test_fuzz_parsers.py) runs each target with a fixed seed for seconds. This script
runs the same targets and strategies much longer, with random seeds, and, where atheris is installed,
coverage-guided on the raw bytes as well:

    python scripts/fuzz_long.py                          # every target, 5,000 hypothesis examples each
    python scripts/fuzz_long.py --examples 50000 --targets gguf-mutated,bundle-structured
    python scripts/fuzz_long.py --seed 1234              # reproduce a run
    python scripts/fuzz_long.py --atheris --max-seconds 600   # coverage-guided, 10 minutes per target
    python scripts/fuzz_long.py --list

Targets (the `TARGETS` registry of tests/test_fuzz_parsers.py): the vector `.safetensors` reader (mutated
and structured), steering-vectors and repeng imports, GGUF control vectors (mutated and structured), zip
bundles (mutated and structured), JSONL/CSV pair parsers (text and files) and the CLI argument parsing.

A failure is a crash, an exception other than the project's `ActAddError`, a hang, or a violated
invariant; hypothesis prints the smallest input, atheris writes it to `crash-*` in --artifacts. Exit code 1
if any target failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def fuzz_module():
    import test_fuzz_parsers

    return test_fuzz_parsers


# ---- hypothesis -----------------------------------------------------------------------------------------------
def make_target(check):
    def target(value):
        check(value)

    return target


def run_hypothesis(names: list[str], examples: int, seed: int | None) -> list[str]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as fix_seed

    module = fuzz_module()
    failed = []
    for name in names:
        strategy, check, _ = module.TARGETS[name]

        options = settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )

        target = options(given(strategy())(make_target(check)))

        if seed is not None:
            target = fix_seed(seed)(target)
        started = time.monotonic()
        print(f"[hypothesis] {name}: {examples} examples ...", flush=True)
        try:
            target()
        except Exception:
            failed.append(name)
            traceback.print_exc()
            print(f"[hypothesis] {name}: FAILED", flush=True)
        else:
            print(f"[hypothesis] {name}: ok ({time.monotonic() - started:.0f} s)", flush=True)
    return failed


# ---- atheris (coverage-guided, on raw bytes) -----------------------------------------------------------------
def atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def seed_corpus(name: str, folder: Path) -> None:
    """Valid files to start mutating from."""
    module = fuzz_module()
    seeds = {
        "vector-mutated": module.vector_seeds,
        "steering-vectors": module.steering_vectors_seeds,
        "repeng": module.numpy_seeds,
        "gguf-mutated": module.gguf_seeds,
        "bundle-mutated": module.bundle_seeds,
    }.get(name)
    folder.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seeds() if seeds else [b'{"positive": "a", "negative": "b"}\n', b"a,b\n"]):
        (folder / f"seed-{i}").write_bytes(data)


def run_atheris_one(name: str, corpus: Path, artifacts: Path, max_seconds: int, runs: int) -> None:
    """In this process: instrument the engine, then let libFuzzer drive the byte-level target."""
    import atheris

    with atheris.instrument_imports(include=["engine"]):
        import engine.interop.bundle
        import engine.interop.gguf
        import engine.interop.repeng
        import engine.library
        import engine.pairs
        import engine.vector  # noqa: F401
    module = fuzz_module()
    _, _, check = module.TARGETS[name]

    def one_input(data: bytes) -> None:
        check(data)

    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        f"-max_total_time={max_seconds}",
        f"-artifact_prefix={artifacts}/{name}-",
        "-timeout=20",
    ]
    if runs:
        argv.append(f"-runs={runs}")
    atheris.Setup([*argv, str(corpus)], one_input)
    atheris.Fuzz()


def run_atheris(names: list[str], max_seconds: int, runs: int, artifacts: Path) -> list[str]:
    module = fuzz_module()
    failed = []
    with tempfile.TemporaryDirectory(prefix="actadd-atheris-") as tmp:
        for name in names:
            if module.TARGETS[name][2] is None:
                continue  # structured targets have no byte-level form
            corpus = Path(tmp) / name
            seed_corpus(name, corpus)
            print(f"[atheris] {name}: up to {max_seconds} s ...", flush=True)
            command = [sys.executable, __file__, "--atheris-one", name, "--corpus", str(corpus)]
            command += ["--max-seconds", str(max_seconds), "--runs", str(runs), "--artifacts", str(artifacts)]
            code = subprocess.call(command, cwd=ROOT)
            print(
                f"[atheris] {name}: {'ok' if code == 0 else f'FAILED (exit {code}), see {artifacts}'}",
                flush=True,
            )
            if code != 0:
                failed.append(name)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=5000, help="hypothesis examples per target")
    parser.add_argument("--targets", default="", help="comma-separated target names (default: all)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    parser.add_argument("--atheris", action="store_true", help="coverage-guided fuzzing with atheris too")
    parser.add_argument("--only-atheris", action="store_true", help="atheris only, no hypothesis")
    parser.add_argument("--max-seconds", type=int, default=300, help="atheris time per target")
    parser.add_argument("--runs", type=int, default=0, help="atheris inputs per target (0: until time)")
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=Path(tempfile.gettempdir()) / "actadd-fuzz-artifacts",
        help="where atheris writes crashing inputs",
    )
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--atheris-one", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.atheris_one:
        run_atheris_one(args.atheris_one, args.corpus, args.artifacts, args.max_seconds, args.runs)
        return 0
    targets = fuzz_module().TARGETS
    if args.list:
        for name, (_, _, raw) in targets.items():
            print(f"{name}{'' if raw is None else '  (also atheris)'}")
        return 0
    names = [n.strip() for n in args.targets.split(",") if n.strip()] or list(targets)
    if unknown := [n for n in names if n not in targets]:
        parser.error(f"unknown targets {unknown}; see --list")
    failed = [] if args.only_atheris else run_hypothesis(names, args.examples, args.seed)
    if args.atheris or args.only_atheris:
        if atheris_available():
            failed += run_atheris(names, args.max_seconds, args.runs, args.artifacts)
        else:
            print("[atheris] not installed (pip install atheris); skipped", flush=True)
    print("FAILED: " + ", ".join(failed) if failed else "all targets passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
