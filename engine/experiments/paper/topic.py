"""Experiment 1: wedding-topic fraction vs coefficient and layer (" weddings" − " ")."""

from __future__ import annotations

import math

from engine.experiments import plots
from engine.experiments.paper.context import Context, cells_at
from engine.experiments.paper.settings import ExperimentReport
from engine.experiments.paper.tables import ci_text, fmt, md_table


# ---- 1. topic ------------------------------------------------------------------------------------------
def run_topic(ctx: Context) -> ExperimentReport:
    result = ctx.topic_sweep()
    result.to_csv(ctx.path("topic.csv"))
    plots.plot_sweep(result, ctx.path("topic_heatmap.png"))
    layers, coeffs, values = result.grid()
    plots.plot_lines(
        ctx.path("topic_lines.png"),
        coeffs,
        {f"layer {l}": values[i] for i, l in enumerate(layers)},
        title="Wedding-topic fraction vs c (' weddings' − ' ', front injection)",
        ylabel="share of completions with a wedding word",
    )
    layer, coeff = ctx.topic_setting()
    base = cells_at(result, layer).get(0.0)
    chosen = cells_at(result, layer)[coeff]
    rows = [
        [f"layer {l}"]
        + [
            fmt(v) + ("†" if cells_at(result, l)[c].degenerate else "")
            for c, v in zip(coeffs, values[i], strict=True)
        ]
        for i, l in enumerate(layers)
    ]
    best = result.best()
    table = md_table(["layer \\ c", *[f"{c:g}" for c in coeffs]], rows)
    degenerate_note = (
        "† degenerate (most samples are loops, word salad, empty or implausible to the unsteered model). "
        if any(c.degenerate for c in result.cells)
        else "No cell is degenerate. "
    )
    if best is None or best.coeff <= 0 or (base is not None and best.value <= base.value):
        degenerate_note += (
            "No steered cell beats the unsteered one: there is no working setting, and the later "
            "experiments use the largest c at the first layer swept. "
        )
    markdown = (
        f"{table}\n\n{degenerate_note}Working setting: layer {layer}, c = {coeff:g}: "
        f"{ci_text(chosen.value, len(chosen.samples))} against "
        f"{ci_text(base.value, len(base.samples)) if base else '–'} unsteered ({len(chosen.samples)} samples per cell). "
        + (f"Best cell: layer {best.layer}, c = {best.coeff:g}, {fmt(best.value)}. " if best else "")
        + f"Mean repetition at the working setting {fmt(chosen.repetition)} "
        f"(unsteered {fmt(base.repetition if base else math.nan)}).\n"
    )
    summary = {
        "layers": layers,
        "coeffs": coeffs,
        "fraction": values,
        "working_layer": layer,
        "working_coeff": coeff,
        "baseline": base.value if base else None,
        "working_fraction": chosen.value,
        "best": {"layer": best.layer, "coeff": best.coeff, "value": best.value} if best else None,
        "example_unsteered": base.samples[0] if base else "",
        "example_steered": chosen.samples[0],
        "n_samples_per_cell": len(chosen.samples),
    }
    return ExperimentReport(
        "topic",
        "Topic steering vs coefficient and layer",
        markdown,
        summary,
        ["topic.csv", "topic_heatmap.png", "topic_lines.png"],
    )
