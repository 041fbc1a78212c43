"""GPU check, for when an accelerator is lent: no download, one JSON object on stdout, < 6 minutes.

    bash bench/gpu_check.sh                 # on a CUDA machine
    python bench/gpu_check.py --dry-run     # anywhere: the same code path on CPU with tiny shapes

Two random-init models are written to a temp folder and loaded through `engine.load_model`:
- a Llama-3.2-1B-shaped model (16 layers, hidden 2048, GQA 32/8, vocab 128256) in float16;
- a Llama-3-8B-shaped model (32 layers, hidden 4096, GQA 32/8 heads, SwiGLU 14336, vocab 128256),
  initialised on the GPU in bfloat16, saved as safetensors shards, and loaded in 4-bit (nf4) on CUDA.
For each: VRAM after loading and at peak, tokens/s unsteered, steered (ActAdd front and a direction at
every position), side by side (2 rows), and the sweep ratio (8 coefficient rows / 1 row), all through
`engine.generate`. Without CUDA it prints the JSON with an "error" field and exits 0.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

LLAMA3 = {
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "bos_token_id": 0,
    "eos_token_id": 0,
}
MODELS = {
    "llama-3.2-1b-shape": {
        **LLAMA3,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "tie_word_embeddings": True,
    },
    "llama-3-8b-shape": {
        **LLAMA3,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "tie_word_embeddings": False,
    },
}
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "vocab_size": 512,
    "bos_token_id": 0,
    "eos_token_id": 0,
}
PROMPT = "I think that the weather in the city is going to be"


def build(config_overrides: dict, folder: Path, device: str, dtype) -> dict:
    """Random-init a Llama of this shape directly on `device` and save it; returns timings."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    started = time.perf_counter()
    tokenizer = common.build_tokenizer(config_overrides["vocab_size"], adds_bos=True)
    config = AutoConfig.for_model("llama", **{**config_overrides, "pad_token_id": tokenizer.pad_token_id})
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    built = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, max_shard_size="4GB")
    tokenizer.save_pretrained(folder)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"n_params": n_params, "init_s": built - started, "save_s": time.perf_counter() - built}


def measure(loaded, n_new: int, reps: int) -> dict:
    """tokens/s unsteered / steered / side by side and the sweep ratio, through engine.generate."""
    import torch

    from bench.bench_steering import make_pairs
    from engine import SamplingConfig, Steer, capture_actadd, capture_mean_diff, generate

    layer = loaded.info.n_layers // 3
    actadd = capture_actadd(loaded, "Love", "Hate", layers=layer)
    direction = capture_mean_diff(loaded, make_pairs(16), layers=layer)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=n_new)
    coeffs = [-8.0, -4.0, -2.0, -1.0, 1.0, 2.0, 4.0, 8.0]
    plans = {
        "unsteered": None,
        "steered front": [[Steer(actadd, 4.0)]],
        "steered all": [[Steer(direction, 4.0)]],
        "side by side": [[], [Steer(actadd, 4.0)]],
        "sweep 8 rows": [[Steer(actadd, c)] for c in coeffs],
        "single row": [[Steer(actadd, coeffs[0])]],
    }
    tokens: dict[str, int] = {}

    def variant(name):
        def go():
            result = generate(loaded, PROMPT, plans[name], sampling)
            tokens[name] = result.n_new_tokens
            if torch.cuda.is_available():
                torch.cuda.synchronize()

        return go

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    times = common.interleaved({name: variant(name) for name in plans}, reps)
    clock = "wall"  # GPU work is not this process's CPU time
    out = {
        "tokens_per_second": {name: tokens[name] / times.median(name, clock) for name in plans},
        "tokens": tokens,
        "steered_front_over_unsteered": times.ratio("unsteered", "steered front", clock)
        * tokens["steered front"]
        / tokens["unsteered"],
        "steered_all_over_unsteered": times.ratio("unsteered", "steered all", clock)
        * tokens["steered all"]
        / tokens["unsteered"],
        "side_by_side_time_ratio": times.ratio("side by side", "unsteered", clock),
        "sweep_time_ratio": times.ratio("sweep 8 rows", "single row", clock),
        "times": times.summary(),
    }
    if torch.cuda.is_available():
        out["vram_peak_generating_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def check(name: str, overrides: dict, quantize: str, dtype: str, device: str, args, root: Path) -> dict:
    import torch

    from engine import load_model, memory_report, unload

    entry: dict = {"shape": name, "quantize": quantize, "dtype": dtype}
    folder = root / name
    build_dtype = torch.float16 if dtype == "float16" else torch.bfloat16
    entry["build"] = build(overrides, folder, device, build_dtype if device == "cuda" else torch.float32)
    started = time.perf_counter()
    loaded = load_model(folder, quantize=quantize, dtype=dtype, device=device)
    entry["load_s"] = time.perf_counter() - started
    entry["memory_after_load"] = memory_report(loaded)
    entry.update(measure(loaded, args.new_tokens, args.reps))
    unload(loaded)
    shutil.rmtree(folder, ignore_errors=True)
    return entry


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: checks the code path only")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens per generation (default 64)")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    p.add_argument(
        "--budget-s", type=float, default=330.0, help="skip what would start after this many seconds"
    )
    p.add_argument(
        "--tmp", type=Path, default=None, help="where to write the models (default: a temp folder)"
    )
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    started = time.perf_counter()
    report: dict = {
        "benchmark": "gpu_check",
        "load_average_start": common.load_average(),
        "dry_run": args.dry_run,
    }
    try:
        import torch

        report["environment"] = common.environment()
        cuda = torch.cuda.is_available()
        if cuda:
            report["gpu"] = torch.cuda.get_device_name(0)
            report["gpu_memory_mb"] = torch.cuda.get_device_properties(0).total_memory / 2**20
        if not cuda and not args.dry_run:
            report["error"] = "no CUDA device: nothing measured (use --dry-run to check the code path on CPU)"
        else:
            if args.dry_run:
                args.new_tokens, args.reps = min(args.new_tokens, 4), 1
                plan = [
                    ("tiny float32", TINY, "none", "float32", "cpu"),
                    ("tiny 4bit", TINY, "4bit", "float32", "cpu"),
                ]
            else:
                plan = [
                    ("llama-3.2-1b-shape", MODELS["llama-3.2-1b-shape"], "none", "float16", "cuda"),
                    ("llama-3-8b-shape", MODELS["llama-3-8b-shape"], "4bit", "bfloat16", "cuda"),
                ]
            root = Path(tempfile.mkdtemp(prefix="actadd-gpu-check-", dir=args.tmp))
            report["models"] = []
            try:
                for name, overrides, quantize, dtype, device in plan:
                    if time.perf_counter() - started > args.budget_s:
                        report["models"].append({"shape": name, "skipped": "time budget spent"})
                        continue
                    try:
                        report["models"].append(check(name, overrides, quantize, dtype, device, args, root))
                    except Exception as exc:
                        report["models"].append(
                            {
                                "shape": name,
                                "error": f"{type(exc).__name__}: {exc}"[:500],
                                "trace": traceback.format_exc()[-1500:],
                            }
                        )
            finally:
                shutil.rmtree(root, ignore_errors=True)
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"[:500]
    report["seconds"] = time.perf_counter() - started
    report["load_average_end"] = common.load_average()
    text = json.dumps(report, default=str)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return report


if __name__ == "__main__":
    main()
