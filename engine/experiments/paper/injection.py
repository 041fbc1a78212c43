"""Front (ActAdd) versus all-positions injection."""

from __future__ import annotations

from engine.experiments import plots
from engine.experiments.paper.context import Context, cells_at, ppl_ratios
from engine.experiments.paper.lexicon import TOPIC_PAIR
from engine.experiments.paper.settings import ExperimentReport
from engine.experiments.paper.tables import fmt, md_table, write_csv
from engine.experiments.sweep import SweepSpec, run_sweep
from engine.steering import Steer


# ---- front vs all-positions injection --------------------------------------------------------------------
def run_injection(ctx: Context) -> ExperimentReport:
    layer, working = ctx.topic_setting()
    vector = ctx.vector(TOPIC_PAIR, layer)
    coeffs = list(ctx.settings.injection_coeffs)
    results = {}
    for mode in ("front", "all"):
        spec = SweepSpec(
            effect=False,  # the paper's measures only: the effect's shadow rows double the rows
            vector=vector,
            coeffs=coeffs,
            prompts=ctx.prompts,
            targets=ctx.lexicon.topic_words,
            samples_per_prompt=ctx.settings.samples,
            sampling=ctx.settings.sampling(),
            mode=mode,
        )
        results[mode] = run_sweep(ctx.loaded, spec)
    ratios = {
        mode: ppl_ratios(ctx, [[Steer(vector, c, mode=mode)] for c in coeffs])["unrelated"]
        for mode in results
    }
    table_rows, csv_rows = [], []
    for mode, result in results.items():
        cells = cells_at(result, layer)
        for j, c in enumerate(coeffs):
            cell = cells[c]
            csv_rows.append(
                [
                    mode,
                    c,
                    f"{cell.value:.4f}",
                    f"{cell.repetition:.4f}",
                    f"{cell.degenerate_share:.4f}",
                    f"{cell.fluency:.4g}",
                    f"{ratios[mode][j]:.4f}",
                    cell.samples[0],
                ]
            )
            table_rows.append([mode, f"{c:g}", fmt(cell.value), fmt(cell.degenerate_share), fmt(cell.fluency, 1), fmt(ratios[mode][j], 2)])  # fmt: skip
    write_csv(
        ctx.path("injection.csv"),
        [
            "mode",
            "coeff",
            "wedding_fraction",
            "repetition",
            "degenerate_share",
            "fluency_ppl",
            "ppl_ratio_unrelated",
            "example",
        ],
        csv_rows,
    )
    plots.plot_lines(
        ctx.path("injection.png"),
        coeffs,
        {},
        title=f"Front (ActAdd) vs all-positions injection, layer {layer}",
        ylabel="",
        panels={
            "wedding-topic fraction": {
                m: [cells_at(r, layer)[c].value for c in coeffs] for m, r in results.items()
            },
            "perplexity ratio, unrelated text (log scale)": ratios,
        },
        sharey=False,
        logy_panels={"perplexity ratio, unrelated text (log scale)"},
    )
    shown = sorted({c for c in (working, max(coeffs)) if c in coeffs})
    examples = {
        f"{m}, c = {c:g}": cells_at(r, layer)[c].samples[:2] for c in shown for m, r in results.items()
    }
    markdown = (
        md_table(
            [
                "mode",
                "c",
                "wedding fraction",
                "degenerate share",
                "fluency ppl of samples",
                "ppl ratio (unrelated text)",
            ],
            table_rows,
        )
        + "\n\nFluency ppl: the median perplexity of the completions under the unsteered model. Examples:\n\n"
        + "\n".join(f"- {m}: `{' '.join(t.split())}`" for m, texts in examples.items() for t in texts)
        + "\n"
    )
    summary = {
        "layer": layer,
        "coeffs": coeffs,
        "fraction": {m: [cells_at(r, layer)[c].value for c in coeffs] for m, r in results.items()},
        "repetition": {m: [cells_at(r, layer)[c].repetition for c in coeffs] for m, r in results.items()},
        "degenerate_share": {
            m: [cells_at(r, layer)[c].degenerate_share for c in coeffs] for m, r in results.items()
        },
        "fluency": {m: [cells_at(r, layer)[c].fluency for c in coeffs] for m, r in results.items()},
        "ppl_ratio_unrelated": ratios,
        "examples": examples,
    }
    return ExperimentReport(
        "injection",
        "Front versus all-positions injection",
        markdown,
        summary,
        ["injection.csv", "injection.png"],
    )
