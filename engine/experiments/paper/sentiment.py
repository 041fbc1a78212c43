"""Experiment 2: sentiment steering (Love − Hate), measured with VADER, in both directions.

- A layer × c sweep on neutral held-out prompts: the positive and negative shares of completions.
- At the layer with the widest swing, c ∈ {−c_max, 0, +c_max} on prompts that already lean positive or
  negative: steering against the grain, the paper's LLaMA-3 "pos→neg" and "neg→pos" measurements.
- A second pair (`SECOND_PAIR`, two words that are not Love/Hate) at the same layer and coefficients on
  the neutral prompts, to show the effect is not one pair's accident.
Every share carries a 95% Wilson interval.
"""

from __future__ import annotations

from engine.experiments import plots, stats
from engine.experiments.paper.context import Context, cells_at, generate_rows
from engine.experiments.paper.lexicon import SENTIMENT_PAIR
from engine.experiments.paper.settings import ExperimentReport
from engine.experiments.paper.tables import ci_text, fmt, md_table, write_csv
from engine.steering import Steer

SECOND_PAIR = ("Happy", "Sad")  # another one-word sentiment pair, unrelated to Love/Hate


def _bands(shares: list[float], n: int) -> tuple[list[float], list[float]]:
    intervals = [stats.wilson(round(s * n), n) for s in shares]
    return [lo for lo, _ in intervals], [hi for _, hi in intervals]


def run_sentiment(ctx: Context) -> ExperimentReport:
    result = ctx.sentiment_sweep()
    layers, coeffs, _ = result.grid()
    pos = [[ctx.shares(cells_at(result, l)[c].completions)[0] for c in coeffs] for l in layers]
    neg = [[ctx.shares(cells_at(result, l)[c].completions)[1] for c in coeffs] for l in layers]
    n = len(result.cells[0].completions) if result.cells else 0
    write_csv(
        ctx.path("sentiment.csv"),
        ["layer", "coeff", "positive_share", "negative_share", "n", "repetition", "degenerate", "ppl_ratio",
         "example"],
        [
            [l, c, f"{pos[i][j]:.4f}", f"{neg[i][j]:.4f}", n, f"{cell.repetition:.4f}", int(cell.degenerate),
             f"{cell.ppl_ratio:.3g}", cell.samples[0]]
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
        [[p - q for p, q in zip(pr, nr, strict=True)] for pr, nr in zip(pos, neg, strict=True)],
        title="Love − Hate: positive minus negative share of completions (VADER, neutral prompts)",
        xlabel="coefficient c",
        ylabel="layer",
        colorbar="positive share − negative share",
        cmap="RdBu",
        vmin=-1.0,
        vmax=1.0,
    )
    # Both directions, against the grain: positive-leaning and negative-leaning prompts at ±c_max.
    vector = ctx.vector(SENTIMENT_PAIR, layer)
    c_max = max(abs(c) for c in coeffs)
    lean = {
        "positive": ctx.lexicon.positive_prompts[: ctx.settings.n_prompts],
        "negative": ctx.lexicon.negative_prompts[: ctx.settings.n_prompts],
    }
    direction_coeffs = [-c_max, 0.0, c_max]
    settings = [(kind, c) for kind in lean for c in direction_coeffs]
    texts = generate_rows(
        ctx,
        [lean[kind] for kind, _ in settings],
        [[Steer(vector, c)] if c else [] for _, c in settings],
        ctx.settings.sampling(),
    )
    lean_shares = {key: ctx.shares(t) for key, t in zip(settings, texts, strict=True)}
    n_lean = len(texts[0]) if texts else 0
    # The second pair on the neutral prompts, same layer and coefficients, same seeds (CRN)
    # (c = 0 is the sweep's own unsteered cell at this layer, same seeds: not sampled again)
    second = ctx.vector(SECOND_PAIR, layer)
    zero = cells_at(result, layer).get(0.0)
    by_coeff = {0.0: zero.completions} if zero is not None else {}
    steered = [c for c in direction_coeffs if c not in by_coeff]
    rows = generate_rows(
        ctx, ctx.prompts, [[Steer(second, c)] if c else [] for c in steered], ctx.settings.sampling()
    )
    by_coeff.update(zip(steered, rows, strict=True))
    second_texts = [by_coeff[c] for c in direction_coeffs]
    second_shares = [ctx.shares(t) for t in second_texts]
    n_second = len(second_texts[0]) if second_texts else 0
    write_csv(
        ctx.path("sentiment_second_pair.csv"),
        ["positive", "negative", "layer", "coeff", "positive_share", "negative_share", "n", "example"],
        [
            [SECOND_PAIR[0], SECOND_PAIR[1], layer, c, f"{p:.4f}", f"{q:.4f}", n_second, t[0] if t else ""]
            for c, (p, q), t in zip(direction_coeffs, second_shares, second_texts, strict=True)
        ],
    )
    # Template prompts (the demo model's training-text openings), when the lexicon has them.
    template = ctx.lexicon.template_prompts[: ctx.settings.n_prompts]
    template_shares = []
    if template:
        t_texts = generate_rows(
            ctx,
            template,
            [[Steer(vector, c)] if c else [] for c in direction_coeffs],
            ctx.settings.sampling(),
        )
        template_shares = [ctx.shares(t) for t in t_texts]
    plots.plot_lines(
        ctx.path("sentiment_lines.png"),
        coeffs,
        {"positive share": pos[li], "negative share": neg[li]},
        title=f"Love − Hate at layer {layer}: VADER sentiment of completions on neutral prompts "
        "(95% Wilson bands)",
        ylabel="share of completions",
        bands={"positive share": _bands(pos[li], n), "negative share": _bands(neg[li], n)},
        share=True,
    )
    rows = [[f"{c:g}", ci_text(pos[li][j], n), ci_text(neg[li][j], n)] for j, c in enumerate(coeffs)]
    spread_rows = [
        [f"layer {l}"] + [fmt(pos[i][j] - neg[i][j]) for j in range(len(coeffs))]
        for i, l in enumerate(layers)
    ]
    lean_rows = [
        [f"{kind}-leaning", f"{c:g}", ci_text(lean_shares[(kind, c)][0], n_lean),
         ci_text(lean_shares[(kind, c)][1], n_lean)]
        for kind, c in settings
    ]  # fmt: skip
    pos_to_neg = (lean_shares[("positive", 0.0)][1], lean_shares[("positive", -c_max)][1])
    neg_to_pos = (lean_shares[("negative", 0.0)][0], lean_shares[("negative", c_max)][0])
    markdown = (
        f"VADER positive / negative share at layer {layer} (the layer with the widest swing), "
        f"{len(ctx.prompts)} neutral held-out prompts × {ctx.settings.samples} samples per cell, 95% Wilson "
        "intervals:\n\n"
        + md_table(["c", "positive share", "negative share"], rows)
        + "\n\nPositive minus negative share, every layer swept:\n\n"
        + md_table(["layer \\ c", *[f"{c:g}" for c in coeffs]], spread_rows)
        + f"\n\nAgainst the grain (layer {layer}): prompts that already lean one way, {n_lean} samples per "
        "row:\n\n"
        + md_table(["prompts", "c", "positive share", "negative share"], lean_rows)
        + f"\n\npos→neg (negative share on positive-leaning prompts): {fmt(pos_to_neg[0])} → "
        f"{fmt(pos_to_neg[1])} at c = −{c_max:g}; neg→pos (positive share on negative-leaning prompts): "
        f"{fmt(neg_to_pos[0])} → {fmt(neg_to_pos[1])} at c = +{c_max:g}. "
        "(LLaMA-3-8B in the paper, IMDb: pos→neg 0.207 → 0.395, neg→pos 0.200 → 0.349.)"
    )
    second_rows = [
        [f"{c:g}", ci_text(p, n_second), ci_text(q, n_second)]
        for c, (p, q) in zip(direction_coeffs, second_shares, strict=True)
    ]
    markdown += (
        f"\n\nA second pair, {SECOND_PAIR[0]} − {SECOND_PAIR[1]}, at layer {layer} on the neutral prompts "
        f"({n_second} samples per row):\n\n"
        + md_table(["c", "positive share", "negative share"], second_rows)
    )
    if template_shares:
        markdown += (
            f"\n\nOn {len(template)} template prompts of the training text (layer {layer}): "
            + ", ".join(
                f"c = {c:g}: {fmt(s[0])} / {fmt(s[1])}"
                for c, s in zip(direction_coeffs, template_shares, strict=True)
            )
            + "."
        )
    markdown += "\n\nNeutral prompts: " + "; ".join(f"`{p}`" for p in ctx.prompts) + "\n"
    summary = {
        "layer": layer,
        "coeffs": coeffs,
        "positive": pos[li],
        "negative": neg[li],
        "n_per_cell": n,
        "spread": [[pos[i][j] - neg[i][j] for j in range(len(coeffs))] for i in range(len(layers))],
        "layers": layers,
        "leaning": {f"{kind} {c:g}": list(lean_shares[(kind, c)]) for kind, c in settings},
        "pos_to_neg": list(pos_to_neg),
        "neg_to_pos": list(neg_to_pos),
        "template": {f"{c:g}": list(s) for c, s in zip(direction_coeffs, template_shares, strict=False)},
        "prompts": ctx.prompts,
        "second_pair": {
            "pair": list(SECOND_PAIR),
            "coeffs": direction_coeffs,
            "positive": [p for p, _ in second_shares],
            "negative": [q for _, q in second_shares],
            "n_per_cell": n_second,
        },
    }
    return ExperimentReport(
        "sentiment",
        "Sentiment steering (Love − Hate, VADER)",
        markdown,
        summary,
        ["sentiment.csv", "sentiment_heatmap.png", "sentiment_lines.png", "sentiment_second_pair.csv"],
    )
