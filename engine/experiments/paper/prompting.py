"""Experiment 4: ActAdd versus prompting with the topic word."""

from __future__ import annotations

import math
import statistics

from engine.experiments import metrics, plots
from engine.experiments.paper.context import Context, generate_rows, ppl_ratios
from engine.experiments.paper.lexicon import SENTIMENT_PAIR, TOPIC_PAIR
from engine.experiments.paper.settings import ExperimentReport
from engine.experiments.paper.tables import ci_text, fmt, md_table, write_csv
from engine.steering import Steer


# ---- 4. prompting --------------------------------------------------------------------------------------
def run_prompting(ctx: Context) -> ExperimentReport:
    layer, coeff = ctx.topic_setting()
    vector = ctx.vector(TOPIC_PAIR, layer)
    word = TOPIC_PAIR[0]
    # Topic fraction: unsteered, prompted (the word before the prompt), ActAdd, on the same prompts.
    prompts = ctx.prompts
    prompted = [word + " " + p for p in prompts]  # BOS, the pair's own " weddings" token, then the prompt
    texts = generate_rows(
        ctx, [prompts, prompted, prompts], [[], [], [Steer(vector, coeff)]], ctx.settings.sampling()
    )
    fractions = [metrics.topic_fraction(t, ctx.lexicon.topic_words) for t in texts]
    repetition = [statistics.fmean(map(metrics.repetition_rate, t)) for t in texts]
    # Perplexity: the word's tokens inserted after BOS, scoring the text's own tokens, vs ActAdd over c.
    coeffs = [c for c in ctx.settings.ppl_coeffs if c >= 0]
    ratios = ppl_ratios(
        ctx, [[]] + [[Steer(vector, c)] for c in coeffs], prefixes=[word] + [""] * len(coeffs)
    )
    prompt_ratio = {name: ratios[name][0] for name in ("wedding", "unrelated")}
    actadd_ratio = {name: ratios[name][1:] for name in ("wedding", "unrelated")}
    at = {
        name: actadd_ratio[name][coeffs.index(coeff)] if coeff in coeffs else math.nan
        for name in prompt_ratio
    }
    # Sentiment: "Love"/"Hate" before the prompt vs ActAdd ± c at the sentiment layer.
    s_layer = ctx.sentiment_layer()
    s_vector = ctx.vector(SENTIMENT_PAIR, s_layer)
    s_c = max(abs(c) for c in ctx.settings.sentiment_coeffs)
    s_prompts = [
        [f"{SENTIMENT_PAIR[0]} {p}" for p in prompts],
        [f"{SENTIMENT_PAIR[1]} {p}" for p in prompts],
        prompts,
        prompts,
    ]
    s_texts = generate_rows(
        ctx, s_prompts, [[], [], [Steer(s_vector, s_c)], [Steer(s_vector, -s_c)]], ctx.settings.sampling()
    )
    s_shares = [ctx.shares(t) for t in s_texts]

    write_csv(
        ctx.path("prompting.csv"),
        ["measure", "unsteered", "prompting", "actadd"],
        [
            ["wedding_fraction", f"{fractions[0]:.4f}", f"{fractions[1]:.4f}", f"{fractions[2]:.4f}"],
            ["repetition", f"{repetition[0]:.4f}", f"{repetition[1]:.4f}", f"{repetition[2]:.4f}"],
            ["ppl_ratio_wedding_text", "1", f"{prompt_ratio['wedding']:.4f}", f"{at['wedding']:.4f}"],
            ["ppl_ratio_unrelated_text", "1", f"{prompt_ratio['unrelated']:.4f}", f"{at['unrelated']:.4f}"],
        ],
    )
    plots.plot_lines(
        ctx.path("prompting.png"),
        coeffs,
        {},
        title=f"ActAdd (layer {layer}) vs prompting with {word!r}: off-target perplexity ratio",
        ylabel="perplexity ratio",
        panels={
            "held-out wedding text": {"ActAdd": actadd_ratio["wedding"]},
            "unrelated text": {"ActAdd": actadd_ratio["unrelated"]},
        },
        hlines={"unsteered": 1.0},
        panel_hlines={
            "held-out wedding text": {"prompting": prompt_ratio["wedding"]},
            "unrelated text": {"prompting": prompt_ratio["unrelated"]},
        },
    )
    plots.plot_bars(
        ctx.path("prompting_bars.png"),
        ["wedding fraction", "ppl ratio, wedding text", "ppl ratio, unrelated text"],
        {
            "unsteered": [fractions[0], 1.0, 1.0],
            f"prompting ({word.strip()!r} first)": [
                fractions[1],
                prompt_ratio["wedding"],
                prompt_ratio["unrelated"],
            ],
            f"ActAdd (layer {layer}, c={coeff:g})": [fractions[2], at["wedding"], at["unrelated"]],
        },
        title="ActAdd vs prompting",
    )
    rows = [
        ["wedding-topic fraction", *(ci_text(f, len(t)) for f, t in zip(fractions, texts, strict=True))],
        ["mean repetition", fmt(repetition[0]), fmt(repetition[1]), fmt(repetition[2])],
        ["perplexity ratio, wedding text", "1", fmt(prompt_ratio["wedding"], 3), fmt(at["wedding"], 3)],
        [
            "perplexity ratio, unrelated text",
            "1",
            fmt(prompt_ratio["unrelated"], 3),
            fmt(at["unrelated"], 3),
        ],
    ]
    s_rows = [
        [f"prompt starts with {SENTIMENT_PAIR[0]!r}", f"{fmt(s_shares[0][0])} / {fmt(s_shares[0][1])}"],
        [f"prompt starts with {SENTIMENT_PAIR[1]!r}", f"{fmt(s_shares[1][0])} / {fmt(s_shares[1][1])}"],
        [f"ActAdd layer {s_layer}, c = +{s_c:g}", f"{fmt(s_shares[2][0])} / {fmt(s_shares[2][1])}"],
        [f"ActAdd layer {s_layer}, c = −{s_c:g}", f"{fmt(s_shares[3][0])} / {fmt(s_shares[3][1])}"],
    ]
    markdown = (
        md_table(
            ["", "unsteered", f"prompting ({word!r} prepended)", f"ActAdd (layer {layer}, c = {coeff:g})"],
            rows,
        )
        + "\n\nSentiment, positive / negative share on the same held-out prompts:\n\n"
        + md_table(["setting", "positive / negative"], s_rows)
        + "\n"
    )
    summary = {
        "layer": layer,
        "coeff": coeff,
        "fraction": {"unsteered": fractions[0], "prompting": fractions[1], "actadd": fractions[2]},
        "ppl_ratio_prompting": prompt_ratio,
        "ppl_ratio_actadd": at,
        "ppl_ratio_actadd_by_coeff": {"coeffs": coeffs, **actadd_ratio},
        "sentiment": {
            "prompt_positive": s_shares[0],
            "prompt_negative": s_shares[1],
            "actadd_positive": s_shares[2],
            "actadd_negative": s_shares[3],
            "layer": s_layer,
            "coeff": s_c,
        },
    }
    return ExperimentReport(
        "prompting",
        "ActAdd versus prompting",
        markdown,
        summary,
        ["prompting.csv", "prompting.png", "prompting_bars.png"],
    )
