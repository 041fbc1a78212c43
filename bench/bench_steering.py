"""Targets 1-4: hook overhead, side by side, sweeps, and capture cost, through the engine's own paths.

    python -m bench.bench_steering                 # full run, writes bench/results/steering.json
    python -m bench.bench_steering --tiny          # seconds: tiny shapes, few repetitions (smoke test)

Everything generates with `engine.generate` and captures with `engine.capture_actadd` /
`engine.capture_mean_diff`; steering is `engine.Steer` rows, so the hooks are `engine.steering`'s.
Decoding is greedy (temperature 0): the least per-token work outside the model, which makes hook overhead
the largest share it can be, and fixes the number of generated tokens.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

PROMPT = "I think that the weather in the city is going to be"
PAIR = ("Love", "Hate")


def _layers(n_layers: int, k: int) -> list[int]:
    """k distinct layers spread over the model, avoiding the embedding-adjacent layer 0."""
    return sorted({max(1, round((i + 1) * n_layers / (k + 1))) for i in range(k)})


def make_pairs(n: int, seed: int = 0):
    """`n` contrastive pairs of varied lengths (so batches need padding), deterministic."""
    from engine import PromptPair

    rng = random.Random(seed)
    words = " ".join(common.CORPUS).replace(".", "").replace(",", "").replace(";", "").split()
    pairs = []
    for _ in range(n):
        body = " ".join(rng.choice(words) for _ in range(rng.randint(2, 14)))
        pairs.append(
            PromptPair(
                f"I love {body}",
                f"I hate {body} {rng.choice(words)}" if rng.random() < 0.5 else f"I hate {body}",
            )
        )
    return pairs


def _checked(result, n_rows: int, n_new: int):
    assert len(result.rows) == n_rows, f"{len(result.rows)} rows, expected {n_rows}"
    return result


def bench_hooks(loaded, n_new: int, reps: int, label: str = "", clock: str = "cpu") -> tuple[dict, dict]:
    """Target 1: tokens/s steered / unsteered with 1 and 4 vectors, ActAdd (front) and direction (all)."""
    from engine import SamplingConfig, Steer, capture_actadd, capture_mean_diff, generate

    n_layers = loaded.info.n_layers
    one = _layers(n_layers, 1)
    four = _layers(n_layers, 4)
    pairs = make_pairs(8)
    actadd = {l: capture_actadd(loaded, *PAIR, layers=l) for l in four + one}
    direction = {l: capture_mean_diff(loaded, pairs, layers=l) for l in four + one}
    plans = {
        "unsteered": None,
        "front x1": [[Steer(actadd[one[0]], 4.0)]],
        "front x4": [[Steer(actadd[l], 2.0) for l in four]],
        "all x1": [[Steer(direction[one[0]], 4.0)]],
        "all x4": [[Steer(direction[l], 2.0) for l in four]],
    }
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=n_new)
    tokens: dict[str, int] = {}

    def variant(name):
        def run():
            result = generate(loaded, PROMPT, plans[name], sampling)
            tokens[name] = result.n_new_tokens
            return result

        return run

    times = common.interleaved({name: variant(name) for name in plans}, reps, label=label)

    def ratios_on(on: str) -> dict[str, float]:  # (tokens/s steered) / (tokens/s unsteered), paired medians
        return {
            name: times.ratio("unsteered", name, on) * tokens[name] / tokens["unsteered"]
            for name in plans
            if name != "unsteered"
        }

    ratios = ratios_on(clock)
    per_token_us = 1e6 * times.median("unsteered", "cpu") / tokens["unsteered"]
    hook_us = {name: hook_cost_us(loaded, plan[0]) for name, plan in plans.items() if plan}
    details = {
        "ci95": {
            name: [x * tokens[name] / tokens["unsteered"] for x in times.ratio_ci("unsteered", name, clock)]
            for name in plans
            if name != "unsteered"
        },
        "cpu_us_per_token_unsteered": per_token_us,
        "hook_us_per_decode_token": hook_us,
        "predicted_ratio_from_hook_cost": {name: 1 / (1 + us / per_token_us) for name, us in hook_us.items()},
        "layers_one": one,
        "layers_four": four,
        "tokens": tokens,
        "times": times.summary(),
        "tokens_per_second_median_wall": {name: tokens[name] / times.median(name, "wall") for name in plans},
        "steered_over_unsteered_tokens_per_second": ratios,
        "steered_over_unsteered_cpu": ratios_on("cpu"),
        "steered_over_unsteered_wall": ratios_on("wall"),
    }
    return details, ratios


def hook_cost_us(loaded, steers, calls: int = 2000) -> float:
    """CPU microseconds that a plan's installed hooks take per decode step (all layers together).

    The hooks are the ones `SteeringPlan.apply` registers; they are called directly, first with a
    prompt-shaped input, then `calls` times with single-position inputs as in cached decoding. This
    isolates the hook's own cost, which is what the end-to-end ratio measures under the noise.
    """
    import time

    import torch

    from engine import SteeringPlan

    plan = SteeringPlan([steers])
    hidden = loaded.info.hidden_size
    prompt = torch.randn(1, 12, hidden)  # [batch, seq, hidden]
    step = torch.randn(1, 1, hidden)
    with plan.apply(loaded.blocks), torch.inference_mode():
        plan.bind(torch.ones(1, 12, dtype=torch.long))
        hooks = [(block, hook) for block in loaded.blocks for hook in block._forward_pre_hooks.values()]
        for block, hook in hooks:
            hook(block, (prompt,), {})
        started = time.process_time()
        for _ in range(calls):
            for block, hook in hooks:
                hook(block, (step,), {})
        return 1e6 * (time.process_time() - started) / calls


def bench_batches(
    loaded, n_new: int, reps: int, sweep_new: int, sweep_reps: int, label: str = "", clock: str = "cpu"
) -> dict:
    """Targets 2 and 3: side-by-side rows and an 8-coefficient sweep as rows of one batch."""
    from engine import SamplingConfig, Steer, capture_actadd, generate

    layer = _layers(loaded.info.n_layers, 1)[0]
    vector = capture_actadd(loaded, *PAIR, layers=layer)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=n_new)
    coeffs = [-8.0, -4.0, -2.0, -1.0, 1.0, 2.0, 4.0, 8.0]
    rows_seen: dict[str, list[int]] = {}

    def run(name, steering, sampling=sampling):
        def go():
            result = generate(loaded, PROMPT, steering, sampling)
            rows_seen[name] = [len(r.token_ids) for r in result.rows]
            return result

        return go

    side = common.interleaved(
        {
            "one unsteered": run("one unsteered", None),
            "side by side": run("side by side", [[], [Steer(vector, 4.0)]]),
        },
        reps,
        label=label and f"{label} side-by-side",
    )
    short = SamplingConfig(temperature=0.0, max_new_tokens=sweep_new)

    def sequential():
        for c in coeffs:
            generate(loaded, PROMPT, [[Steer(vector, c)]], short)

    sweep = common.interleaved(
        {
            "single row": run("single row", [[Steer(vector, coeffs[0])]], short),
            "sweep batch": run("sweep batch", [[Steer(vector, c)] for c in coeffs], short),
            "sweep sequential": sequential,
        },
        sweep_reps,
        label=label and f"{label} sweep",
    )
    for name, counts in rows_seen.items():
        assert len(set(counts)) == 1, f"{name}: rows generated different lengths {counts}"
    return {
        "layer": layer,
        "coefficients": coeffs,
        "rows_tokens": rows_seen,
        "side_by_side": {
            "times": side.summary(),
            "ratio_vs_one_unsteered": side.ratio("side by side", "one unsteered", clock),
            "ratio_wall": side.ratio("side by side", "one unsteered", "wall"),
        },
        "sweep": {
            "new_tokens": sweep_new,
            "times": sweep.summary(),
            "ratio_vs_single_row": sweep.ratio("sweep batch", "single row", clock),
            "ratio_wall": sweep.ratio("sweep batch", "single row", "wall"),
            "sequential_ratio_vs_single_row": sweep.ratio("sweep sequential", "single row", clock),
            "speedup_vs_sequential": sweep.ratio("sweep sequential", "sweep batch", clock),
        },
    }


def mean_diff_correctness(loaded, pairs, layers: list[int]) -> dict:
    """The batched, right-padded pair differences equal each prompt run alone, unpadded."""
    import torch

    from engine import capture_mean_diff, encode, pair_differences, resid_pre

    batched = pair_differences(loaded, pairs, layers)
    worst = 0.0
    for i, pair in enumerate(pairs):
        last = []
        for text in (pair.positive, pair.negative):
            ids = torch.tensor([encode(loaded.tokenizer, text)])  # [1, n], no padding
            acts = resid_pre(loaded, ids, layers)
            last.append({l: acts[l][0, -1] for l in layers})
        for l in layers:
            worst = max(worst, float((batched[l][i] - (last[0][l] - last[1][l])).abs().max()))
    lengths = [len(encode(loaded.tokenizer, t)) for p in pairs for t in (p.positive, p.negative)]
    vector = capture_mean_diff(loaded, pairs, layers=layers)
    mean_ok = all(torch.allclose(vector.layers[l], batched[l].mean(dim=0)) for l in layers)
    return {
        "n_pairs_checked": len(pairs),
        "prompt_tokens_min_max": [min(lengths), max(lengths)],
        "max_abs_diff_vs_unpadded": worst,
        "mean_matches": mean_ok,
        "padding_correct": worst < 1e-4 and mean_ok,
    }


def bench_capture(loaded, n_pairs: int, reps: int, label: str = "", clock: str = "cpu") -> dict:
    """Target 4: ActAdd capture vs forward passes; batched mean-diff vs pair by pair, and its correctness."""
    import torch

    from engine import capture_actadd, capture_mean_diff, pair_differences
    from engine.tokens import align_pair

    deepest = loaded.info.n_layers - 1  # the worst case: the capture runs through all but the last block
    aligned = align_pair(loaded.tokenizer, *PAIR)
    one_row = torch.tensor([aligned.positive])  # [1, n]

    def forward():
        with torch.inference_mode():
            loaded.model(input_ids=one_row.to(loaded.device), use_cache=False)

    actadd = common.interleaved(
        {
            "forward pass": forward,
            "capture_actadd": lambda: capture_actadd(loaded, *PAIR, layers=deepest),
        },
        max(1, reps) * 3 if reps < 10 else 30,
        label=label and f"{label} actadd",
    )
    forward_s = actadd.median("forward pass", clock)
    capture_s = actadd.median("capture_actadd", clock)

    pairs = make_pairs(n_pairs, seed=1)
    layers = sorted({1, loaded.info.n_layers // 2})
    mean_diff = common.interleaved(
        {
            "batched": lambda: capture_mean_diff(loaded, pairs, layers=layers),
            "one by one": lambda: [pair_differences(loaded, [pair], layers) for pair in pairs],
        },
        min(reps, 7),
        label=label and f"{label} mean-diff",
    )

    correctness = mean_diff_correctness(loaded, pairs, layers)
    return {
        "actadd": {
            "layer": deepest,
            "n_tokens": aligned.length,
            "times": actadd.summary(),
            "forward_passes": actadd.ratio("capture_actadd", "forward pass", clock),
            "forward_passes_wall": actadd.ratio("capture_actadd", "forward pass", "wall"),
            "overhead_ms_beyond_two_passes": 1000 * (capture_s - 2 * forward_s),
        },
        "mean_diff": {
            "n_pairs": n_pairs,
            "layers": layers,
            "times": mean_diff.summary(),
            "ratio_batched_vs_one_by_one": mean_diff.ratio("batched", "one by one", clock),
            "ratio_wall": mean_diff.ratio("batched", "one by one", "wall"),
            **correctness,
        },
    }


PARTS = ("hooks", "batches", "capture", "llama")


def _hook_targets(result, ratios: dict[str, float], shape: str) -> None:
    result.target(
        "1a", f"1 vector, ActAdd front ({shape}): steered/unsteered tok/s", ratios["front x1"], ">=", 0.97
    )
    result.target(
        "1a", f"1 vector, direction all ({shape}): steered/unsteered tok/s", ratios["all x1"], ">=", 0.97
    )
    result.target(
        "1b", f"4 vectors, ActAdd front ({shape}): steered/unsteered tok/s", ratios["front x4"], ">=", 0.95
    )
    result.target(
        "1b", f"4 vectors, direction all ({shape}): steered/unsteered tok/s", ratios["all x4"], ">=", 0.95
    )


def run(args: argparse.Namespace) -> dict:
    """Run the chosen parts; the result file is rewritten after each, so a long run is never all lost."""
    import torch

    torch.set_num_threads(args.threads)
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    if unknown := set(parts) - set(PARTS):
        raise SystemExit(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    result = common.Result("steering", params=vars(args).copy())
    if args.merge:
        result.keep_previous(args.out or common.RESULTS_DIR / "steering.json", parts)
    shapes = ("tiny-gpt2", "tiny-llama") if args.tiny else ("gpt2-small", "llama-small")
    n_new = args.new_tokens or (4 if args.tiny else 12)
    reps = args.reps or (1 if args.tiny else 41)
    label = "" if args.tiny else "steering"
    data = result.write(args.out)
    gpt2 = common.load(shapes[0]) if set(parts) & {"hooks", "batches", "capture"} else None
    if "hooks" in parts:
        result.begin_part("hooks")
        hooks, ratios = bench_hooks(gpt2, n_new, reps, label and f"{label} hooks {shapes[0]}", args.clock)
        result.details["hooks_" + shapes[0]] = hooks
        _hook_targets(result, ratios, shapes[0])
        data = result.write(args.out)
    if "batches" in parts:
        result.begin_part("batches")
        batches = bench_batches(
            gpt2,
            n_new,
            min(reps, 15),
            args.sweep_tokens or (4 if args.tiny else 16),
            args.sweep_reps or (1 if args.tiny else 3),
            label and f"{label} batches",
            args.clock,
        )
        result.details["batches_" + shapes[0]] = batches
        result.target(
            "2",
            "side by side (2 rows) / one unsteered row, time",
            batches["side_by_side"]["ratio_vs_one_unsteered"],
            "<=",
            1.3,
        )
        result.target(
            "3",
            "sweep of 8 coefficients as rows / one row, time",
            batches["sweep"]["ratio_vs_single_row"],
            "<=",
            3.0,
        )
        data = result.write(args.out)
    if "capture" in parts:
        result.begin_part("capture")
        capture = bench_capture(gpt2, 8 if args.tiny else 64, reps, label and f"{label} capture", args.clock)
        result.details["capture_" + shapes[0]] = capture
        result.target(
            "4a", "ActAdd capture / one forward pass, time", capture["actadd"]["forward_passes"], "<=", 2.1
        )
        result.target(
            "4b",
            f"mean-diff of {capture['mean_diff']['n_pairs']} pairs, batched / one by one, time",
            capture["mean_diff"]["ratio_batched_vs_one_by_one"],
            "<=",
            0.5,
        )
        result.target(
            "4b",
            "mean-diff batched vs unpadded: max |diff|",
            capture["mean_diff"]["max_abs_diff_vs_unpadded"],
            "<=",
            1e-4,
            unit="",
        )
        data = result.write(args.out)
    del gpt2
    if "llama" in parts:
        result.begin_part("llama")
        llama = common.load(shapes[1])
        hooks, ratios = bench_hooks(llama, n_new, reps, label and f"{label} hooks {shapes[1]}", args.clock)
        result.details["hooks_" + shapes[1]] = hooks
        _hook_targets(result, ratios, shapes[1])
        check = mean_diff_correctness(
            llama, make_pairs(8 if args.tiny else 16, seed=1), [1, llama.info.n_layers // 2]
        )
        result.details["capture_" + shapes[1]] = {"mean_diff_correctness": check}
        result.target(
            "4b",
            f"mean-diff batched vs unpadded ({shapes[1]}): max |diff|",
            check["max_abs_diff_vs_unpadded"],
            "<=",
            1e-4,
            unit="",
        )
        data = result.write(args.out)
    return data


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--tiny", action="store_true", help="tiny models and 1 repetition: checks the code path only"
    )
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument(
        "--merge", action="store_true", help="keep the other parts' results from the existing result file"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see bench/README.md)")
    p.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu", help="clock of the checked ratios (default cpu)"
    )
    p.add_argument("--new-tokens", type=int, default=0, help="tokens per generation (default 12)")
    p.add_argument("--reps", type=int, default=0, help="interleaved repetitions (default 41)")
    p.add_argument(
        "--sweep-tokens",
        type=int,
        default=0,
        help="tokens per generation in the sweep comparison (default 16)",
    )
    p.add_argument(
        "--sweep-reps", type=int, default=0, help="repetitions of the sweep comparison (default 3)"
    )
    p.add_argument("--out", type=Path, default=None, help="result file (default bench/results/steering.json)")
    return p


def main(argv: list[str] | None = None) -> dict:
    data = run(parser().parse_args(argv))
    print(f"steering: load average {data['load_average_start']} -> {data['load_average_end']}")
    common.print_targets(data)
    return data


if __name__ == "__main__":
    main()
