"""Experiment 2: sentiment steering (Love − Hate), measured with VADER."""

from __future__ import annotations

from engine.experiments import plots
from engine.experiments.paper.common import (
    SENTIMENT_PAIR,
    Context,
    ExperimentReport,
    cells_at,
    fmt,
    generate_rows,
    md_table,
    write_csv,
)
from engine.steering import Steer


# ---- 2. sentiment --------------------------------------------------------------------------------------
def run_sentiment(ctx: Context) -> ExperimentReport:
    result = ctx.sentiment_sweep()
    layers, coeffs, _ = result.grid()
    pos = [[ctx.shares(cells_at(result, l)[c].completions)[0] for c in coeffs] for l in layers]
    neg = [[ctx.shares(cells_at(result, l)[c].completions)[1] for c in coeffs] for l in layers]
    write_csv(
        ctx.path("sentiment.csv"),
        ["layer", "coeff", "positive_share", "negative_share", "repetition", "degenerate", "example"],
        [
            [l, c, f"{pos[i][j]:.4f}", f"{neg[i][j]:.4f}", f"{cell.repetition:.4f}", int(cell.degenerate),
             cell.samples[0]]
            for i, l in enumerate(layers)
            for j, c in enumerate(coeffs)
            for cell in [cells_at(result, l)[c]]
        ],
    )  # fmt: skip
    layer = ctx.sentiment_layer()
    li = layers.index(layer)
    plots.plot_heatmap(
        ctx.path("sentiment_heatmap.png"),
        [f"layer {l}" for l in layers],
        [f"{c:g}" for c in coeffs],
        [[p - n for p, n in zip(pr, nr, strict=True)] for pr, nr in zip(pos, neg, strict=True)],
        title="Love − Hate: positive minus negative share of completions (held-out prompts)",
        xlabel="coefficient c",
        ylabel="layer",
        colorbar="positive share − negative share",
        cmap="RdBu",
        vmin=-1.0,
        vmax=1.0,
    )
    # Second sampling regime at the chosen layer: plain temperature 1.0 (no nucleus, no penalty).
    plain = ctx.settings.sampling(top_p=1.0, frequency_penalty=0.0)
    vector = ctx.vector(SENTIMENT_PAIR, layer)
    plain_texts = generate_rows(ctx, ctx.prompts, [[Steer(vector, c)] for c in coeffs], plain)
    plain_shares = [ctx.shares(t) for t in plain_texts]
    template = ctx.lexicon.template_prompts[: ctx.settings.n_prompts]
    template_coeffs = [c for c in (min(coeffs), 0.0, max(coeffs)) if c in coeffs]
    template_shares = []
    if template:
        texts = generate_rows(
            ctx, template, [[Steer(vector, c)] for c in template_coeffs], ctx.settings.sampling()
        )
        template_shares = [ctx.shares(t) for t in texts]
    plots.plot_lines(
        ctx.path("sentiment_lines.png"),
        coeffs,
        {
            "positive, top_p 0.3": pos[li],
            "negative, top_p 0.3": neg[li],
            "positive, temperature 1.0": [s[0] for s in plain_shares],
            "negative, temperature 1.0": [s[1] for s in plain_shares],
        },
        title=f"Love − Hate at layer {layer}: sentiment of completions on held-out prompts",
        ylabel="share of completions",
    )
    rows = [
        [f"{c:g}", f"{fmt(pos[li][j])} / {fmt(neg[li][j])}", f"{fmt(plain_shares[j][0])} / {fmt(plain_shares[j][1])}"]
        for j, c in enumerate(coeffs)
    ]  # fmt: skip
    spread_rows = [
        [f"layer {l}"] + [fmt(pos[i][j] - neg[i][j]) for j in range(len(coeffs))]
        for i, l in enumerate(layers)
    ]
    markdown = (
        f"Positive / negative share at layer {layer} (the layer with the widest swing), "
        f"{len(ctx.prompts)} held-out prompts × {ctx.settings.samples} samples per cell:\n\n"
        + md_table(["c", "paper sampling (top_p 0.3)", "temperature 1.0"], rows)
        + "\n\nPositive minus negative share, every layer (paper sampling):\n\n"
        + md_table(["layer \\ c", *[f"{c:g}" for c in coeffs]], spread_rows)
    )
    if template_shares:
        markdown += (
            f"\n\nFor contrast, on {len(template)} template prompts that occur in the training text "
            f"(layer {layer}, paper sampling): "
            + ", ".join(
                f"c = {c:g}: {fmt(s[0])} / {fmt(s[1])}"
                for c, s in zip(template_coeffs, template_shares, strict=True)
            )
            + "."
        )
    markdown += "\n\nHeld-out prompts: " + "; ".join(f"`{p}`" for p in ctx.prompts) + "\n"
    summary = {
        "layer": layer,
        "coeffs": coeffs,
        "positive": pos[li],
        "negative": neg[li],
        "positive_t1": [s[0] for s in plain_shares],
        "negative_t1": [s[1] for s in plain_shares],
        "spread": [[pos[i][j] - neg[i][j] for j in range(len(coeffs))] for i in range(len(layers))],
        "layers": layers,
        "template": {f"{c:g}": list(s) for c, s in zip(template_coeffs, template_shares, strict=False)},
        "prompts": ctx.prompts,
    }
    return ExperimentReport(
        "sentiment",
        "Sentiment steering (Love − Hate)",
        markdown,
        summary,
        ["sentiment.csv", "sentiment_heatmap.png", "sentiment_lines.png"],
    )
