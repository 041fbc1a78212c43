"""Target 15: steering cost on a real pretrained model (SmolLM2-135M-Instruct), through the app's paths.

    python -m bench.bench_real_models                 # full run (float32 and 4-bit, plus the peers)
    python -m bench.bench_real_models --quick         # fewer repetitions and tokens
    python -m bench.bench_real_models --tiny          # random tiny Llama: checks the code path only

Parts, each a ratio of variants timed interleaved in one process (medians of paired ratios):
- 15a: steered / unsteered tokens per second, greedy, same prompt; the paper's Love - Hate ActAdd vector
  at layer 6, mode "all" (`capture_actadd` + `Steer` + `generate`); in float32 and in bitsandbytes 4-bit
  on CPU.
- 15b: side by side (2 rows in one batch: unsteered + steered, as the GUI runs them) / the steered row
  alone: wall time per generated token of the steered row (float32).
- 15c: ours vs repeng and steering-vectors on the same model: `bench.bench_peers --model` in its own
  process (it needs bench/.venv-peers, see bench/setup_peers.sh); its targets are folded in here.

The model is a `.gguf` (default: /tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf when present, else fetched
with `engine.model_fetch.fetch_model("smollm2")`), opened by `engine.load_model` like the app does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

LOCAL_SMOLLM2 = Path("/tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf")
PROMPT = "I went up to my friend and said"
POSITIVE, NEGATIVE = "Love", "Hate"


def model_source(args: argparse.Namespace) -> Path:
    """The model to benchmark: --model, the tiny random Llama (--tiny), a local SmolLM2, or a fetched one."""
    if args.model:
        return Path(args.model)
    if args.tiny:
        return common.model_dir("tiny-llama")
    if LOCAL_SMOLLM2.exists():
        return LOCAL_SMOLLM2
    from engine.model_fetch import fetch_model

    return fetch_model("smollm2")


def steering_cost(loaded, args: argparse.Namespace, quantize: str, reps: int, n_new: int) -> dict:
    """Steered vs unsteered, and (float32 only) side by side vs one row, on one loaded model."""
    from engine import SamplingConfig, Steer, generate, hook_count
    from engine.capture import capture_actadd

    layer = min(args.layer, loaded.info.n_layers - 1)
    vector = capture_actadd(loaded, POSITIVE, NEGATIVE, layer)  # [n_tokens, hidden] at resid_pre(layer)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=n_new)
    steer = Steer(vector, args.coeff, mode="all")
    tokens: dict[str, list[list[int]]] = {}

    def run(name: str, steering):
        def go():
            rows = generate(loaded, PROMPT, steering, sampling).rows
            tokens[name] = [r.token_ids for r in rows]

        return go

    variants = {"unsteered": run("unsteered", None), "steered": run("steered", [[steer]])}
    if quantize == "none":
        variants["side by side"] = run("side by side", [[], [steer]])
    label = "" if args.tiny else f"real {quantize}"
    times = common.interleaved(variants, reps, label=label)
    assert hook_count(loaded.blocks) == 0, "hooks left behind"
    n = {name: len(rows[-1]) for name, rows in tokens.items()}  # the steered row is the last row
    out = {
        "layer": layer,
        "coefficient": args.coeff,
        "vector_tokens": int(vector.layers[layer].shape[0]),
        "new_tokens": n,
        "steering_changes_tokens": tokens["steered"][0] != tokens["unsteered"][0],
        "times": times.summary(),
        "tokens_per_second_median_wall": {k: n[k] / times.median(k, "wall") for k in variants},
    }
    # tok/s ratio = (n_s / t_s) / (n_u / t_u) = (t_u / t_s) * (n_s / n_u)
    out["steered_over_unsteered"] = (
        times.ratio("unsteered", "steered", args.clock) * n["steered"] / n["unsteered"]
    )
    out["steered_over_unsteered_wall"] = (
        times.ratio("unsteered", "steered", "wall") * n["steered"] / n["unsteered"]
    )
    out["steered_over_unsteered_ci95"] = [
        x * n["steered"] / n["unsteered"] for x in times.ratio_ci("unsteered", "steered", args.clock)
    ]
    if "side by side" in variants:
        # time per steered-row token: (t_sbs / n_sbs) / (t_one / n_one); wall time, as the user waits
        scale = n["steered"] / n["side by side"]
        out["side_by_side_over_one_row"] = times.ratio("side by side", "steered", "wall") * scale
        out["side_by_side_over_one_row_cpu"] = times.ratio("side by side", "steered", "cpu") * scale
        out["side_by_side_over_one_row_ci95"] = [
            x * scale for x in times.ratio_ci("side by side", "steered", "wall")
        ]
        out["side_by_side_steered_row_matches_alone"] = tokens["side by side"][1] == tokens["steered"][0]
    return out


def run_peers(source: Path, args: argparse.Namespace) -> dict:
    """bench_peers on the same model, in its own process (it re-runs itself in bench/.venv-peers)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peers.json"
        cmd = [sys.executable, "-m", "bench.bench_peers", "--model", str(source), "--out", str(out)]
        cmd += ["--threads", str(args.threads), "--clock", args.clock]
        if args.tiny:
            cmd += ["--tiny"]
        else:
            cmd += ["--reps", str(args.peer_reps or (5 if args.quick else 15))]
            cmd += ["--new-tokens", str(args.new_tokens or (12 if args.quick else 24))]
        proc = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True)
        if not out.exists():
            return {"error": f"bench_peers failed (exit {proc.returncode}): {proc.stderr[-500:]}"}
        return json.loads(out.read_text(encoding="utf-8"))


def run(args: argparse.Namespace) -> dict:
    import torch

    from engine import load_model, unload

    torch.set_num_threads(args.threads)
    result = common.Result("real_models", params=vars(args).copy())
    source = model_source(args)
    result.details["model"] = str(source)
    name = source.name.split(".")[0]  # e.g. SmolLM2-135M-Instruct
    reps = args.reps or (1 if args.tiny else 5 if args.quick else 15)
    n_new = args.new_tokens or (4 if args.tiny else 12 if args.quick else 24)
    for quantize in ("none", "4bit"):
        loaded = load_model(source, quantize=quantize, device="cpu")
        result.details["model_info"] = {"n_layers": loaded.info.n_layers}
        part = steering_cost(loaded, args, quantize, reps, n_new)
        result.details[f"cost_{quantize}"] = part
        label = "float32" if quantize == "none" else "4-bit"
        result.target(
            "15a",
            f"{name} {label}, ActAdd all: steered/unsteered tok/s",
            part["steered_over_unsteered"],
            ">=",
            0.9,
        )
        if quantize == "none":
            result.target(
                "15b",
                f"{name} side by side (2 rows) / steered row alone, time per token",
                part["side_by_side_over_one_row"],
                "<=",
                1.5,
            )
        unload(loaded)
    if args.no_peers:
        return result.write(args.out)
    peers = run_peers(source, args)
    result.details["peers"] = {k: peers.get(k) for k in ("details", "params", "environment")} or peers
    if error := peers.get("error") or peers.get("details", {}).get("error"):
        result.details["peers_error"] = error  # not a target: the peers are optional (setup_peers.sh)
    for t in peers.get("targets", []):
        result.target("15c", f"{name}: {t['name']}", t["value"], t["op"], t["threshold"], unit=t["unit"])
    return result.write(args.out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="model file or folder (default: SmolLM2-135M-Instruct GGUF)")
    p.add_argument("--tiny", action="store_true", help="tiny random Llama, 1 repetition: code path only")
    p.add_argument("--quick", action="store_true", help="5 repetitions of 12 tokens (default 15 of 24)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see bench/README.md)")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="clock of 15a (default cpu)")
    p.add_argument("--layer", type=int, default=6, help="ActAdd layer (default 6, as in the paper)")
    p.add_argument("--coeff", type=float, default=5.0, help="ActAdd coefficient (default 5)")
    p.add_argument("--new-tokens", type=int, default=0, help="tokens per generation")
    p.add_argument("--reps", type=int, default=0, help="interleaved repetitions")
    p.add_argument("--peer-reps", type=int, default=0, help="repetitions of the peers comparison")
    p.add_argument("--no-peers", action="store_true", help="skip 15c (repeng, steering-vectors)")
    p.add_argument(
        "--out", type=Path, default=None, help="result file (default bench/results/real_models.json)"
    )
    return p


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = run(args)
    print(f"real_models: load average {data['load_average_start']} -> {data['load_average_end']}")
    if err := data["details"].get("peers_error"):
        print(f"real_models: peers: {err}")
    common.print_targets(data)
    return data


if __name__ == "__main__":
    main()
