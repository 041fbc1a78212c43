"""Benchmark: listing 200 models found on the machine (issue 14: "under 2 s").

    python -m bench.bench_model_listing [--models 200] [--vocab 32000] [--reps 3] [--tiny] [--out FILE]

Builds fake stores in a temporary folder, in the layouts the real ones use: LM Studio
(publisher/repo/file.gguf), Ollama (manifests -> sha256 blobs), GPT4All (flat), the Hugging Face hub cache
(models--org--name with snapshots pointing at blobs; a config.json and a safetensors file each), and the
recent list. The GGUFs carry a `--vocab`-entry token list and merges, as real headers do (the header walk
is dominated by them), and tiny tensors (the listing never reads tensor data). Times `list_models`:

- cold: no header cache, every GGUF header is walked;
- warm: a header cache from an earlier listing (a new process would load the same file): one `stat` per
  file, no header read.
- cold, plain walk: the same, with the vocabulary arrays stepped string by string in Python (how the
  header reader skipped them before `engine.gguf_header.skip_short_strings`), as the reference.
Both cold and warm listings have a target (2 s); the cold/plain ratio is in the details. Wall-clock and
process CPU time (listing is I/O and Python, single-threaded); the load average is in the result.

Then what a user runs: `python main.py models --json` in a fresh process, every source (the stores above
through the environment variables the app reads, and the installed Python packages), timed from start to
exit, imports included:

- cli cold: an empty app cache: no header verdicts, and transformers' tables
  (engine/transformers_tables.py) not yet kept, so transformers is imported once to read them;
- cli tables kept: the tables' copy is there, the header verdicts are not (every header walked, no
  transformers or torch imported);
- cli warm: both kept (what every later `models` costs).
The warm CLI listing has a target (2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Result, print_targets  # noqa: E402

MODEL_LAYER = "application/vnd.ollama.image.model"


def template_gguf(path: Path, vocab: int) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("Bench")
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q8_0))
    writer.add_tokenizer_model("gpt2")
    tokens = [f"tok{i}" for i in range(vocab)]
    writer.add_token_list(tokens)
    writer.add_token_types([1] * vocab)
    writer.add_token_merges([f"t o{i}" for i in range(vocab)])
    for i in range(4):
        writer.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@contextmanager
def plain_walk() -> Iterator[None]:
    """Vocabulary arrays stepped one string at a time, as before the fast skip (the reference)."""
    from engine import gguf_header

    saved = gguf_header._FAST_SKIP_MIN
    gguf_header._FAST_SKIP_MIN = sys.maxsize
    try:
        yield
    finally:
        gguf_header._FAST_SKIP_MIN = saved


def build_stores(root: Path, n: int, vocab: int) -> dict:
    """n models spread over the sources; returns the list_models keyword arguments that find them."""
    from engine.model_store import MAX_RECENT, remember_recent

    template = template_gguf(root / "template.gguf", vocab).read_bytes()
    config = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "dtype": "bfloat16"})
    safetensors = (8).to_bytes(8, "little") + b"{}      "
    share = {"lmstudio": 0.3, "ollama": 0.3, "gpt4all": 0.15, "hf": 0.15}
    counts = {k: int(n * v) for k, v in share.items()}
    counts["recent"] = min(MAX_RECENT, n - sum(counts.values()))
    counts["lmstudio"] += n - sum(counts.values())  # the recent list keeps MAX_RECENT at most
    for i in range(counts["lmstudio"]):
        file = root / "lms" / f"pub{i % 7}" / f"Model-{i}-GGUF" / f"model-{i}.Q8_0.gguf"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(template)
    ollama = root / "ollama"
    (ollama / "blobs").mkdir(parents=True)
    for i in range(counts["ollama"]):
        digest = f"{i:064x}"
        (ollama / "blobs" / f"sha256-{digest}").write_bytes(template)
        manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / f"model{i}" / "latest"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(
            json.dumps({"layers": [{"mediaType": MODEL_LAYER, "digest": f"sha256:{digest}"}]})
        )
    for i in range(counts["gpt4all"]):
        (root / "gpt4all").mkdir(exist_ok=True)
        (root / "gpt4all" / f"model-{i}.Q4_0.gguf").write_bytes(template)
    for i in range(counts["hf"]):
        repo = root / "hub" / f"models--org--model-{i}"
        snapshot = repo / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        (repo / "blobs").mkdir()
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0" * 40)
        for name, data in (("config.json", config.encode()), ("model.safetensors", safetensors)):
            (repo / "blobs" / name).write_bytes(data)
            (snapshot / name).symlink_to(repo / "blobs" / name)
    recent = root / "recent.json"
    for i in range(counts["recent"]):
        file = root / "recent" / f"opened-{i}.gguf"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(template)
        remember_recent(file, file=recent)
    return {
        "sources": ["hf-cache", "lmstudio", "ollama", "gpt4all", "recent"],
        "hf_cache": root / "hub",
        "lmstudio_roots": [root / "lms"],
        "ollama_root": ollama,
        "gpt4all_roots": [root / "gpt4all"],
        "recent_file": recent,
    }


def cli_env(root: Path, kwargs: dict, cache: Path) -> dict[str, str]:
    """The environment under which `main.py models` finds exactly the stores `build_stores` made."""
    config = root / "config"
    config.mkdir(exist_ok=True)
    shutil.copyfile(kwargs["recent_file"], config / "recent-models.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_", "ACTADD_", "OLLAMA_"))}
    return env | {
        "HOME": str(root / "home"),
        "HF_HUB_CACHE": str(kwargs["hf_cache"]),
        "ACTADD_LMSTUDIO_MODELS": os.pathsep.join(map(str, kwargs["lmstudio_roots"])),
        "OLLAMA_MODELS": str(kwargs["ollama_root"]),
        "ACTADD_GPT4ALL_MODELS": os.pathsep.join(map(str, kwargs["gpt4all_roots"])),
        "ACTADD_CONFIG_DIR": str(config),
        "ACTADD_CACHE": str(cache),
    }


def time_cli(env: dict[str, str]) -> tuple[float, list[dict]]:
    """Seconds for a fresh `python main.py models --json`, and the rows it printed."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "main.py", "models", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - start, json.loads(done.stdout)["models"]


def summary(digits: int, **series: list[float]) -> dict:
    """Each series' times and their median, rounded: NAME_s=[...], NAME_median_s=..."""
    out: dict = {}
    for name, times in series.items():
        out[f"{name}_s"] = [round(t, digits) for t in times]
        out[f"{name}_median_s"] = round(median(times), digits)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--vocab", type=int, default=32000, help="tokens (and merges) in each GGUF header")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="20 models, 500 tokens, 1 rep (smoke test)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.tiny:
        args.models, args.vocab, args.reps = 20, 500, 1
    from engine.model_store import list_models

    result = Result("model_listing", params={"models": args.models, "vocab": args.vocab, "reps": args.reps})
    root = Path(tempfile.mkdtemp(prefix="bench-models-"))
    try:
        kwargs = build_stores(root, args.models, args.vocab)
        list_models(**kwargs, header_cache=False)  # imports (transformers' tables) out of the timings
        cold, cold_cpu, plain, plain_cpu, warm = [], [], [], [], []
        for rep in range(args.reps):
            cache = root / f"headers-{rep}.json"
            start, cpu = time.perf_counter(), time.process_time()
            rows = list_models(**kwargs, header_cache=cache)
            cold.append(time.perf_counter() - start)
            cold_cpu.append(time.process_time() - cpu)
            start = time.perf_counter()
            again = list_models(**kwargs, header_cache=cache)
            warm.append(time.perf_counter() - start)
            with plain_walk():
                start, cpu = time.perf_counter(), time.process_time()
                reference = list_models(**kwargs, header_cache=False)
                plain.append(time.perf_counter() - start)
                plain_cpu.append(time.process_time() - cpu)
            assert again == rows == reference and len(rows) == args.models, (len(rows), args.models)
            assert all(r.openable for r in rows), [r.reason for r in rows if not r.openable][:3]
        result.details.update(
            **summary(4, cold=cold, warm=warm, cold_plain_walk=plain),
            cold_cpu_median_s=round(median(cold_cpu), 4),
            cold_plain_walk_cpu_median_s=round(median(plain_cpu), 4),
            plain_walk_over_cold_cpu=round(median(plain_cpu) / median(cold_cpu), 2),
            per_model_cold_ms=round(1000 * median(cold) / args.models, 3),
            header_bytes=(root / "template.gguf").stat().st_size,
        )
        cli_cold, cli_tables, cli_warm = [], [], []
        for rep in range(args.reps):
            cache = root / f"cli-cache-{rep}"
            env = cli_env(root, kwargs, cache)
            seconds, cli_rows = time_cli(env)
            cli_cold.append(seconds)
            (cache / "gguf-headers.json").unlink()
            seconds, tables_rows = time_cli(env)
            cli_tables.append(seconds)
            seconds, warm_rows = time_cli(env)
            cli_warm.append(seconds)
            assert cli_rows == tables_rows == warm_rows
            listed = [r for r in cli_rows if r["source"] != "python-package"]
            assert listed == [r.to_json() for r in rows], (len(listed), len(rows))
        result.details.update(summary(3, cli_cold=cli_cold, cli_tables_kept=cli_tables, cli_warm=cli_warm))
        result.target("14a", f"list {args.models} models, no header cache", median(cold), "<=", 2.0, "s")
        result.target("14a", f"list {args.models} models, header cache warm", median(warm), "<=", 2.0, "s")
        result.target(
            "14a",
            f"`python main.py models --json`, {args.models} models, caches warm",
            median(cli_warm),
            "<=",
            2.0,
            "s",
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    data = result.write(args.out)
    print(
        f"cold {median(cold):.3f} s (plain walk {median(plain):.3f} s), warm {median(warm):.3f} s "
        f"for {args.models} models"
    )
    print(
        f"python main.py models --json: cold {median(cli_cold):.2f} s, transformers tables kept "
        f"{median(cli_tables):.2f} s, warm {median(cli_warm):.2f} s"
    )
    print_targets(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
