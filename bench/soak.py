"""Soak: many generations through the engine with vectors toggled on and off; no leaks of memory, hooks
or threads.

    python -m bench.soak              # 300 generations on the demo model (or a model of its shape)
    python -m bench.soak --n 40       # shorter

Generations cycle through: unsteered; ActAdd (front); a direction at every position; side by side;
a sweep; a live coefficient toggled on and off from the token callback; and a cancelled one. After each,
`hook_count(blocks)` must be 0. Resident memory is sampled (after `gc.collect()`) through the run; its
growth after the warm-up must stay under 50 MB, and the thread count must not grow.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

PROMPT = "I think that the weather in the city is going to be"


def load_demo(tiny: bool):
    """The embedded demo model when it is there, else a random model of its shape."""
    from engine import DEMO_MODEL_DIR, load_model

    if not tiny and (DEMO_MODEL_DIR / "config.json").exists():
        return load_model("demo", device="cpu"), "demo"
    shape = "tiny-gpt2" if tiny else "demo-shape"
    return common.load(shape), shape


def run(args: argparse.Namespace) -> dict:
    import psutil
    import torch

    from bench.bench_steering import make_pairs
    from engine import (
        SamplingConfig,
        Steer,
        SteeringPlan,
        capture_actadd,
        capture_mean_diff,
        generate,
        hook_count,
    )

    torch.set_num_threads(args.threads)
    result = common.Result("soak", params=vars(args).copy())
    loaded, model_name = load_demo(args.tiny)
    process = psutil.Process(os.getpid())
    layer = max(1, loaded.info.n_layers // 2)
    actadd = capture_actadd(loaded, "Love", "Hate", layers=layer)
    direction = capture_mean_diff(loaded, make_pairs(8), layers=layer)
    sampling = SamplingConfig.paper(max_new_tokens=args.new_tokens)

    def toggled():
        plan = SteeringPlan([[Steer(direction, 4.0, mode="all")]])

        def on_token(event):  # the GUI's slider: off and on again while streaming
            plan.set_coefficient(0, 0, 0.0 if event.step % 2 else 4.0)

        return generate(loaded, PROMPT, plan, sampling, on_token=on_token)

    def cancelled():
        cancel = threading.Event()

        def on_token(event):
            if event.step >= 2:
                cancel.set()

        return generate(loaded, PROMPT, [[Steer(actadd, 4.0)]], sampling, cancel=cancel, on_token=on_token)

    kinds = {
        "unsteered": lambda: generate(loaded, PROMPT, None, sampling),
        "actadd front": lambda: generate(loaded, PROMPT, [[Steer(actadd, 4.0)]], sampling),
        "direction all": lambda: generate(loaded, PROMPT, [[Steer(direction, 4.0)]], sampling),
        "side by side": lambda: generate(loaded, PROMPT, [[], [Steer(actadd, 4.0)]], sampling),
        "sweep": lambda: generate(loaded, PROMPT, [[Steer(actadd, c)] for c in (-4, 0, 4, 8)], sampling),
        "live toggle": toggled,
        "cancelled": cancelled,
    }
    names = list(kinds)
    warmup = max(len(names), args.n // 10)
    samples: list[tuple[int, float, int]] = []  # (generation, RSS MB, threads)
    leaked_hooks = []
    counts = dict.fromkeys(names, 0)
    rss_warm = threads_warm = None
    for i in range(args.n):
        name = names[i % len(names)]
        kinds[name]()
        counts[name] += 1
        if hook_count(loaded.blocks) != 0:
            leaked_hooks.append(i)
        if i + 1 == warmup or (i + 1) % args.sample_every == 0 or i + 1 == args.n:
            gc.collect()
            sample = (i + 1, process.memory_info().rss / 2**20, process.num_threads())
            samples.append(sample)
            if i + 1 == warmup:
                rss_warm, threads_warm = sample[1], sample[2]
    rss_end, threads_end = samples[-1][1], samples[-1][2]
    after = [s for s in samples if s[0] >= warmup]
    growth = rss_end - rss_warm if rss_warm is not None else 0.0
    result.details.update(
        model=model_name,
        generations=counts,
        warmup_generations=warmup,
        rss_mb_samples=[[g, round(r, 1), t] for g, r, t in samples],
        rss_after_warmup_mb=rss_warm,
        rss_end_mb=rss_end,
        rss_max_after_warmup_mb=max(s[1] for s in after) if after else rss_end,
        threads_after_warmup=threads_warm,
        threads_end=threads_end,
        python_threads_end=threading.active_count(),
        generations_with_leftover_hooks=leaked_hooks,
    )
    result.target("soak", "memory growth after warm-up", growth, "<=", 50.0, unit=" MB")
    result.target("soak", "generations with hooks left behind", float(len(leaked_hooks)), "<=", 0.0, unit="")
    result.target(
        "soak",
        "threads gained after warm-up",
        float(threads_end - (threads_warm or threads_end)),
        "<=",
        0.0,
        unit="",
    )
    return result.write(args.out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300, help="number of generations (default 300)")
    p.add_argument("--new-tokens", type=int, default=12, help="tokens per generation (default 12)")
    p.add_argument("--sample-every", type=int, default=25, help="measure memory every N generations")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--tiny", action="store_true", help="a tiny model instead of the demo model")
    p.add_argument("--out", type=Path, default=None, help="result file (default bench/results/soak.json)")
    return p


def main(argv: list[str] | None = None) -> dict:
    data = run(parser().parse_args(argv))
    print(f"soak: load average {data['load_average_start']} -> {data['load_average_end']}")
    common.print_targets(data)
    return data


if __name__ == "__main__":
    main()
