"""Experiment 3: off-target perplexity ratio (steered / unsteered) on related and unrelated text."""

from __future__ import annotations

import math

from engine.experiments import plots
from engine.experiments.paper.context import Context, ppl_ratios, text_sets
from engine.experiments.paper.lexicon import TOPIC_PAIR
from engine.experiments.paper.settings import ExperimentReport
from engine.experiments.paper.tables import fmt, md_table, write_csv
from engine.steering import Steer


def run_perplexity(ctx: Context) -> ExperimentReport:
    working = ctx.topic_setting()[1]
    coeffs = sorted({*map(float, ctx.settings.ppl_coeffs), float(working)})  # always report the working c
    layers = ctx.layers
    vectors = {l: ctx.vector(TOPIC_PAIR, l) for l in layers}
    settings = [[Steer(vectors[l], c)] for l in layers for c in coeffs]
    ratios = ppl_ratios(ctx, settings)
    n = len(coeffs)
    by_set = {
        name: {f"layer {l}": ratios[name][i * n : (i + 1) * n] for i, l in enumerate(layers)}
        for name in ("wedding", "unrelated")
    }
    write_csv(
        ctx.path("perplexity.csv"),
        ["layer", "coeff", "ratio_wedding_text", "ratio_unrelated_text"],
        [
            [l, c, f"{ratios['wedding'][i * n + j]:.4f}", f"{ratios['unrelated'][i * n + j]:.4f}"]
            for i, l in enumerate(layers)
            for j, c in enumerate(coeffs)
        ],
    )
    plots.plot_lines(
        ctx.path("perplexity.png"),
        coeffs,
        {},
        title="Off-target perplexity ratio (steered / unsteered), ' weddings' − ' ' at the front of the text",
        ylabel="perplexity ratio",
        hlines={"no change": 1.0},
        panels={"held-out wedding text": by_set["wedding"], "unrelated text": by_set["unrelated"]},
    )
    layer, coeff = ctx.topic_setting()
    li = layers.index(layer)
    rows = [
        [f"{c:g}", fmt(ratios["wedding"][li * n + j], 3), fmt(ratios["unrelated"][li * n + j], 3)]
        for j, c in enumerate(coeffs)
    ]
    at = {
        name: ratios[name][li * n + coeffs.index(coeff)] if coeff in coeffs else math.nan
        for name in ("wedding", "unrelated")
    }
    markdown = (
        f"At the topic layer {layer} ({len(text_sets(ctx)['wedding'])} wedding texts, "
        f"{len(text_sets(ctx)['unrelated'])} unrelated texts; unsteered perplexity "
        f"{fmt(ratios['wedding_base'], 3)} and {fmt(ratios['unrelated_base'], 3)}):\n\n"
        + md_table(["c", "wedding text", "unrelated text"], rows)
        + f"\n\nAt the working coefficient c = {coeff:g}: {fmt(at['wedding'], 3)} on wedding text, "
        f"{fmt(at['unrelated'], 3)} on unrelated text. All layers are in `perplexity.csv`.\n"
    )
    summary = {
        "layer": layer,
        "coeff": coeff,
        "coeffs": coeffs,
        "layers": layers,
        "wedding": by_set["wedding"],
        "unrelated": by_set["unrelated"],
        "at_working": at,
        "base": {"wedding": ratios["wedding_base"], "unrelated": ratios["unrelated_base"]},
    }
    return ExperimentReport(
        "perplexity", "Off-target perplexity", markdown, summary, ["perplexity.csv", "perplexity.png"]
    )
