"""Experiment 5: the compute overhead of steering."""

from __future__ import annotations

import statistics
import time

import torch

from engine.capture import capture_actadd
from engine.experiments import metrics, plots
from engine.experiments.paper.context import Context, text_sets
from engine.experiments.paper.lexicon import TOPIC_PAIR
from engine.experiments.paper.settings import ExperimentReport
from engine.experiments.paper.tables import md_table, write_csv
from engine.generation import generate
from engine.steering import Steer


# ---- 5. overhead ---------------------------------------------------------------------------------------
def run_overhead(ctx: Context) -> ExperimentReport:
    layer, coeff = ctx.topic_setting()
    vector = ctx.vector(TOPIC_PAIR, layer)
    per_prompt = ctx.settings.overhead_rows_per_prompt  # a realistic batch: 4 rows per prompt
    prompts = [p for p in ctx.prompts for _ in range(per_prompt)]
    n = len(prompts)
    sampling = ctx.settings.sampling(max_new_tokens=ctx.settings.overhead_tokens)
    settings: dict[str, list[list[Steer]]] = {
        "unsteered": [[] for _ in prompts],
        "ActAdd front, one c": [[Steer(vector, coeff)] for _ in prompts],
        "ActAdd front, a c per row": [[Steer(vector, coeff * (k + 1) / n)] for k in range(n)],
        "all positions": [[Steer(vector, coeff, mode="all")] for _ in prompts],
    }
    # EOS can end a batch early, and steering changes when: compare the process's CPU time per decoding
    # step (the batch runs until its longest row ends; CPU time is less disturbed by other processes than
    # wall time on a shared machine), and report wall time too.
    per_step: dict[str, list[float]] = {k: [] for k in settings}
    wall: dict[str, list[float]] = {k: [] for k in settings}
    generate(ctx.loaded, prompts, settings["unsteered"], sampling)  # warm-up
    for _ in range(ctx.settings.timing_repeats):
        for name, row_steers in settings.items():  # interleaved, so load from other processes hits all alike
            cpu_started = time.process_time()
            result = generate(ctx.loaded, prompts, row_steers, sampling)
            cpu = time.process_time() - cpu_started
            steps = max(1, max(len(r.token_ids) for r in result.rows))
            per_step[name].append(cpu / steps)
            wall[name].append(result.seconds)
    capture_times: dict[str, list[float]] = {f"layer {layer}": [], f"layer {len(ctx.loaded.blocks) - 1}": []}
    for _ in range(ctx.settings.timing_repeats):
        for label in capture_times:
            started = time.perf_counter()
            capture_actadd(ctx.loaded, *TOPIC_PAIR, int(label.split()[1]))
            capture_times[label].append(time.perf_counter() - started)
    texts = text_sets(ctx)["unrelated"]  # scoring: one forward pass over each text, steered or not
    score_times: dict[str, list[float]] = {"unsteered": [], "ActAdd front, one c": []}
    for _ in range(ctx.settings.timing_repeats):
        for name, steer in (("unsteered", []), ("ActAdd front, one c", [Steer(vector, coeff)])):
            started = time.perf_counter()
            metrics.corpus_perplexities(ctx.loaded, texts, [steer])
            score_times[name].append(time.perf_counter() - started)

    med = {k: statistics.median(v) for k, v in per_step.items()}
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    base = med["unsteered"]
    rows: list[list[str]] = []
    csv_rows: list[list[str]] = []
    for name in settings:
        rows.append([name, f"{med[name] * 1000:.2f}", f"{med[name] / base:.3f}", f"{med_wall[name]:.3f}"])
        csv_rows.append(
            ["generate", name, f"{med[name]:.6f}", f"{med[name] / base:.4f}", f"{med_wall[name]:.5f}"]
        )
    score_base = statistics.median(score_times["unsteered"])
    score_ratio = statistics.median(score_times["ActAdd front, one c"]) / score_base
    for name, values in score_times.items():
        csv_rows.append(["score", name, f"{statistics.median(values):.6f}", f"{statistics.median(values) / score_base:.4f}", ""])  # fmt: skip
    capture = {k: statistics.median(v) for k, v in capture_times.items()}
    for label, seconds in capture.items():
        csv_rows.append(["capture", f"capture_actadd at {label}", f"{seconds:.6f}", "", ""])
    write_csv(
        ctx.path("overhead.csv"),
        ["what", "setting", "median_seconds_per_step_or_call", "ratio_to_unsteered", "median_wall_seconds"],
        csv_rows,
    )
    plots.plot_bars(
        ctx.path("overhead.png"),
        list(settings),
        {"CPU time per decoding step / unsteered": [med[k] / base for k in settings]},
        title=f"Generation cost relative to unsteered ({n} rows, up to {sampling.max_new_tokens} tokens, "
        f"median of {ctx.settings.timing_repeats})",
        fmt="{:.3f}",
    )
    capture_text = ", ".join(f"{seconds * 1000:.1f} ms at {label}" for label, seconds in capture.items())
    markdown = (
        md_table(["setting", "CPU ms per decoding step", "ratio to unsteered", "median wall s"], rows)
        + f"\n\nOne batch of {n} rows ({len(ctx.prompts)} prompts × {per_prompt}) and up to {sampling.max_new_tokens} new "
        f"tokens, median of {ctx.settings.timing_repeats} interleaved runs, {torch.get_num_threads()} CPU "
        f"thread(s). Capturing the vector (one forward pass over the two-row pair, stopped after the layer): "
        f"{capture_text}; unsteered generation of the batch takes {med_wall['unsteered'] * 1000:.0f} ms. "
        f"Scoring {len(texts)} texts, steered / unsteered time: {score_ratio:.3f}.\n"
    )
    summary = {
        "step_ratio": {k: med[k] / base for k in settings},
        "seconds_per_step": med,
        "wall_seconds": med_wall,
        "capture_seconds": capture,
        "score_ratio": score_ratio,
        "threads": torch.get_num_threads(),
        "rows": n,
    }
    return ExperimentReport("overhead", "Overhead", markdown, summary, ["overhead.csv", "overhead.png"])
