"""ActAdd (one pair, front) versus mean-diff (CAA) and PCA (repeng) directions from 32 pairs (all positions).

Same tasks, same prompts and samples: the wedding topic (share of completions with a topic word) and
sentiment (VADER positive share), at the topic experiment's working layer. ActAdd is added at the front of
the prompt; the directions at every position, as their methods do. (At layer 0, the embedding output,
last-token differences of pairs that end alike are zero: the next layer swept is used instead.) Mean-diff and PCA vectors share a
scale (`capture_pca`), so one coefficient list serves both.
"""

from __future__ import annotations

from engine.capture import capture_mean_diff, capture_pca
from engine.experiments import plots
from engine.experiments.paper.context import Context
from engine.experiments.paper.lexicon import SENTIMENT_PAIR, TOPIC_PAIR
from engine.experiments.paper.settings import ExperimentReport
from engine.experiments.paper.tables import ci_text, fmt, md_table, write_csv
from engine.experiments.sweep import SweepSpec
from engine.experiments.sweep_cells import SweepCell, generation_cells
from engine.pairs import PromptPair
from engine.steering import Steer

_FRAMES = (
    "We talked about the {} all evening.",
    "My sister is busy planning the {}.",
    "Everyone was excited about the {}.",
    "I bought new shoes for the {}.",
    "The photos from the {} came out well.",
    "She could not stop thinking about the {}.",
    "They spent a lot of money on the {}.",
    "He told me a funny story about the {}.",
)
_TOPIC_NOUNS = (
    ("wedding", "meeting"),
    ("wedding reception", "office party"),
    ("wedding ceremony", "school concert"),
    ("bride and groom", "new neighbours"),
)
_SENTIMENT_FRAMES = (
    "Today was a {} day.",
    "That film was {}.",
    "The dinner last night was {}.",
    "Our trip to the coast was {}.",
    "The weather this week has been {}.",
    "The new neighbours are {}.",
    "This book is {}.",
    "The service at the hotel was {}.",
)
_SENTIMENT_WORDS = (
    ("wonderful", "terrible"),
    ("lovely", "awful"),
    ("great", "horrible"),
    ("delightful", "miserable"),
)
TOPIC_PAIRS = [PromptPair(f.format(p), f.format(n)) for p, n in _TOPIC_NOUNS for f in _FRAMES]
SENTIMENT_PAIRS = [
    PromptPair(f.format(p), f.format(n)) for p, n in _SENTIMENT_WORDS for f in _SENTIMENT_FRAMES
]


def _compare(ctx: Context, task: str, layer: int, actadd_coeffs: list[float]) -> list[tuple[str, SweepCell]]:
    """[(setting label, cell)] for unsteered, ActAdd and the two 32-pair directions on one task."""
    n_pairs = ctx.settings.n_pairs
    if task == "topic":
        pair, pairs, metric = TOPIC_PAIR, TOPIC_PAIRS[:n_pairs], "target-words"
    else:
        pair, pairs, metric = SENTIMENT_PAIR, SENTIMENT_PAIRS[:n_pairs], "sentiment"
    actadd = ctx.vector(pair, layer)
    mean_diff = capture_mean_diff(ctx.loaded, pairs, layer)
    pca = capture_pca(ctx.loaded, pairs, layer)
    settings: list[tuple[str, list[Steer]]] = [("unsteered", [])]
    settings += [(f"ActAdd front, c = {c:g}", [Steer(actadd, c)]) for c in actadd_coeffs]
    for name, vector in (("mean-diff", mean_diff), ("PCA", pca)):
        settings += [
            (f"{name} all, c = {c:g}", [Steer(vector, c, mode="all")]) for c in ctx.settings.method_coeffs
        ]
    spec = SweepSpec(
        effect=False,  # the paper's measures only: the effect's shadow rows double the rows
        vector=actadd,
        coeffs=[1.0],
        prompts=ctx.prompts,
        samples_per_prompt=ctx.settings.samples,
        sampling=ctx.settings.sampling(),
        metric=metric,
        targets=list(ctx.lexicon.topic_words) if metric == "target-words" else [],
        sentiment_sign=1,
    )
    # Keys are (setting index, c): labels of the batched cells, c = 0 only for the unsteered one.
    keys = [(i, 0.0 if not steer else 1.0) for i, (_, steer) in enumerate(settings)]
    cells, _ = generation_cells(
        ctx.loaded, spec, keys, {k: s for k, (_, s) in zip(keys, settings, strict=True)}
    )
    return [(label, cell) for (label, _), cell in zip(settings, cells, strict=True)]


def run_methods(ctx: Context) -> ExperimentReport:
    layer, coeff = ctx.topic_setting()
    if layer == 0:  # the embedding output: a pair's last tokens ("." and ".") differ by nothing there
        layer = min([l for l in ctx.layers if l > 0] or [1])
    actadd_coeffs = sorted({coeff, max(ctx.settings.topic_coeffs)})
    ctx.log(f"methods: ActAdd vs mean-diff/PCA ({ctx.settings.n_pairs} pairs) at layer {layer}")
    results = {
        "topic": _compare(ctx, "topic", layer, actadd_coeffs),
        "sentiment": _compare(ctx, "sentiment", layer, [max(ctx.settings.sentiment_coeffs)]),
    }
    csv_rows, md_rows = [], []
    for task, rows in results.items():
        for label, cell in rows:
            n = len(cell.completions)
            csv_rows.append([task, label, f"{cell.value:.4f}", f"{cell.ci_low:.4f}", f"{cell.ci_high:.4f}", n,
                             int(cell.degenerate), f"{cell.ppl_ratio:.3g}", cell.samples[0]])  # fmt: skip
            md_rows.append([task, label, ci_text(cell.value, n), "no" if cell.degenerate else "yes",
                            fmt(cell.ppl_ratio, 1), f"`{' '.join(cell.completions[0].split())[:90]}`"])  # fmt: skip
    write_csv(
        ctx.path("methods.csv"),
        ["task", "setting", "value", "ci_low", "ci_high", "n", "incoherent", "ppl_ratio", "example"],
        csv_rows,
    )
    plots.plot_bars(
        ctx.path("methods.png"),
        [label for label, _ in results["topic"]],
        {"wedding-topic share": [cell.value for _, cell in results["topic"]]},
        title=f"ActAdd (1 pair, front) vs mean-diff / PCA ({ctx.settings.n_pairs} pairs, all positions), "
        f"layer {layer}",
    )
    markdown = (
        md_table(["task", "setting", "share (95% CI)", "coherent", "ppl ratio", "example"], md_rows)
        + f"\n\nLayer {layer}; topic: share of completions with a wedding word, sentiment: VADER positive share "
        f"(Love − Hate for ActAdd; {ctx.settings.n_pairs} adjective pairs such as "
        f"{SENTIMENT_PAIRS[0].positive!r} / {SENTIMENT_PAIRS[0].negative!r} for the directions). ppl ratio: "
        "median perplexity of the completions under the unsteered model / the unsteered completions'.\n"
    )
    summary = {
        "layer": layer,
        "n_pairs": ctx.settings.n_pairs,
        **{
            task: {label: {"value": c.value, "ci": [c.ci_low, c.ci_high], "coherent": not c.degenerate}
                   for label, c in rows}
            for task, rows in results.items()
        },
    }  # fmt: skip
    return ExperimentReport(
        "methods", "ActAdd versus mean-diff and PCA", markdown, summary, ["methods.csv", "methods.png"]
    )
