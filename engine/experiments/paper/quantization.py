"""Experiment 6: drift of vectors across float32 / 8-bit / 4-bit loads."""

from __future__ import annotations

import logging
import math
import warnings

import torch

from engine.capture import capture_actadd
from engine.experiments import metrics, plots
from engine.experiments.paper.context import Context, generate_rows
from engine.experiments.paper.lexicon import SENTIMENT_PAIR, TOPIC_PAIR
from engine.experiments.paper.settings import ExperimentReport
from engine.experiments.paper.tables import fmt, md_table, write_csv
from engine.steering import Steer


# ---- 6. quantization -----------------------------------------------------------------------------------
def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two vectors' tensors (`[n, hidden]` or `[hidden]`), over all positions: a shared
    BOS position is exactly zero in both, so it adds nothing (and a model without one has no row to drop)."""
    a, b = a.flatten().double(), b.flatten().double()
    return float(torch.dot(a, b) / (a.norm() * b.norm())) if a.norm() > 0 and b.norm() > 0 else math.nan


def run_quantization(ctx: Context) -> ExperimentReport:
    # bitsandbytes logs "MatMul8bitLt: inputs will be cast ..." on every 8-bit matmul of a float32 input.
    bnb_logger = logging.getLogger("bitsandbytes.autograd._functions")
    level = bnb_logger.level
    bnb_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return _quantization(ctx)
    finally:
        bnb_logger.setLevel(level)


def _quantization(ctx: Context) -> ExperimentReport:
    from engine.models import load_model, unload

    loads = {"float32": ctx.loaded}
    notes = []
    for q in ("8bit", "4bit"):
        try:
            # Same compute dtype as the reference load, so the drift measured is the quantization's alone.
            loads[q] = load_model(
                ctx.loaded.info.path,
                quantize=q,
                device=ctx.loaded.info.device.split(":")[0],
                dtype=ctx.loaded.info.dtype,
            )
        except Exception as exc:  # bitsandbytes missing or no backend for this device: report, go on
            notes.append(f"{q} load failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    layers = ctx.layers
    pairs = {"topic": TOPIC_PAIR, "sentiment": SENTIMENT_PAIR}
    vectors = {
        (q, name): capture_actadd(model, *pair, layers)
        for q, model in loads.items()
        for name, pair in pairs.items()
    }
    cos_rows, csv_rows, series = [], [], {}
    for q in loads:
        if q == "float32":
            continue
        for name in pairs:
            ref, other = vectors[("float32", name)], vectors[(q, name)]
            values = [cosine(ref.layers[l], other.layers[l]) for l in layers]
            norms = [float(other.layers[l].norm() / ref.layers[l].norm()) for l in layers]
            series[f"{name}, {q} vs float32"] = values
            cos_rows.append([f"{name}, {q}"] + [f"{v:.4f}" for v in values])
            csv_rows += [["cosine", name, q, l, f"{v:.6f}", f"{r:.4f}"] for l, v, r in zip(layers, values, norms, strict=True)]  # fmt: skip
    if series:
        plots.plot_lines(
            ctx.path("quantization_cosine.png"),
            layers,
            series,
            title="Cosine similarity to the float32 vector, per layer (positions ≥ 1)",
            xlabel="layer",
            ylabel="cosine similarity",
        )
    # Cross-steering: each load's topic vector on each load of the model, at the working setting.
    layer, coeff = ctx.topic_setting()
    grid = {}
    # Cross-steering runs a batch on every load (8-bit matmuls are slow on CPU): skipped by --quick.
    for model_q, model in loads.items() if ctx.settings.quantization_steer else ():
        # the captured vectors hold every layer: steer with the working layer only
        settings: list[list[Steer]] = [[]] + [
            [
                Steer(
                    vectors[(vq, "topic")].replace(layers={layer: vectors[(vq, "topic")].layers[layer]}),
                    coeff,
                )
            ]
            for vq in loads
        ]
        sub = Context(model, ctx.out_dir, ctx.settings, ctx.lexicon, ctx.log)
        texts = generate_rows(sub, ctx.prompts, settings, ctx.settings.sampling())
        fractions = [metrics.topic_fraction(t, ctx.lexicon.topic_words) for t in texts]
        grid[model_q] = {
            "unsteered": fractions[0],
            **{vq: f for vq, f in zip(loads, fractions[1:], strict=True)},
        }
        csv_rows += [
            ["steer", f"vector {vq}", f"model {model_q}", layer, f"{f:.4f}", ""]
            for vq, f in grid[model_q].items()
        ]
    write_csv(
        ctx.path("quantization.csv"), ["what", "vector", "load", "layer", "value", "norm_ratio"], csv_rows
    )
    columns = ["unsteered", *loads]
    markdown = "Cosine similarity with the float32 capture, per layer:\n\n" + md_table(
        ["vector, load", *[f"layer {l}" for l in layers]], cos_rows
    )
    if grid:
        plots.plot_heatmap(
            ctx.path("quantization_steer.png"),
            [f"model {q}" for q in loads],
            [c if c == "unsteered" else f"vector {c}" for c in columns],
            [[grid[m][c] for c in columns] for m in loads],
            title=f"Wedding fraction with vectors from each load (layer {layer}, c = {coeff:g})",
            colorbar="wedding-topic fraction",
            vmin=0.0,
            vmax=1.0,
        )
        markdown += (
            f"\n\nWedding-topic fraction when a vector captured on one load steers another (layer {layer}, "
            f"c = {coeff:g}):\n\n"
            + md_table(
                ["model \\ vector", *columns],
                [[f"model {m}"] + [fmt(grid[m][c]) for c in columns] for m in loads],
            )
        )
    else:
        notes.append("cross-steering between loads skipped (--quick)")
    markdown += "\n"
    if notes:
        markdown += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    summary = {
        "cosine": series,
        "steer": grid,
        "layer": layer,
        "coeff": coeff,
        "notes": notes,
    }
    files = ["quantization.csv"] + (["quantization_steer.png"] if grid else [])
    files += ["quantization_cosine.png"] if series else []
    for q, model in loads.items():
        if q != "float32":
            unload(model)
    return ExperimentReport("quantization", "Quantization drift", markdown, summary, files)
