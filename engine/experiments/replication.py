"""The ActAdd paper's experiments (Turner et al., arXiv 2308.10248), rerun as trends on a local model.

Experiments (each writes `<name>*.csv`, `<name>*.png` and a Markdown table `<name>.md` into `out_dir`):

- topic:        wedding-topic fraction of sampled completions vs c, for every layer (" weddings" − " ").
- sentiment:    VADER positive / negative share vs c for "Love" − "Hate", on neutral held-out prompts,
                and both directions on prompts that already lean positive or negative.
- perplexity:   off-target perplexity ratio (steered / unsteered) on held-out wedding text and unrelated text.
- prompting:    the same measurements with the word prepended to the prompt (or text) instead of ActAdd.
- injection:    the contrast between front injection (ActAdd) and adding at all positions.
- methods:      ActAdd (one pair, front) vs mean-diff and PCA directions from 32 pairs (all positions).
- overhead:     wall time of steered vs unsteered generation, measured in one run.
- quantization: cosine similarity per layer of vectors captured on float32 / 8-bit / 4-bit loads, and
                whether vectors from one load still steer another.

Word lists, prompts and off-target texts come from `lexicon.json` in the model folder (the demo model
ships one); other models fall back to the built-in `DEFAULT_LEXICON`. Everything is seeded, and every
sampled measurement is one or a few batched generate calls with per-row steering.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.errors import InvalidInputError
from engine.experiments.paper.context import Context, text_sets
from engine.experiments.paper.injection import run_injection
from engine.experiments.paper.lexicon import (
    DEFAULT_LEXICON,
    SENTIMENT_PAIR,
    TOPIC_PAIR,
    Lexicon,
    load_lexicon,
)
from engine.experiments.paper.methods import run_methods
from engine.experiments.paper.overhead import run_overhead
from engine.experiments.paper.perplexity import run_perplexity
from engine.experiments.paper.prompting import run_prompting
from engine.experiments.paper.quantization import run_quantization
from engine.experiments.paper.sentiment import run_sentiment
from engine.experiments.paper.settings import EXPERIMENTS, ExperimentReport, Log, Settings
from engine.experiments.paper.topic import run_topic
from engine.models import LoadedModel

__all__ = [
    "DEFAULT_LEXICON",
    "EXPERIMENTS",
    "RUNNERS",
    "SENTIMENT_PAIR",
    "TOPIC_PAIR",
    "Context",
    "ExperimentReport",
    "Lexicon",
    "Settings",
    "_text_sets",
    "load_lexicon",
    "run_experiments",
    "text_sets",
]


def _weights_digest(loaded: LoadedModel, limit: int = 200 * 2**20) -> str:
    """sha256 (first 16 hex) of the weight files, to tell which model a report came from; '' if large."""
    from engine.models import weight_files

    files = weight_files(Path(loaded.info.path))
    if not files or sum(f.stat().st_size for f in files) > limit:
        return ""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


# ---- the runner ------------------------------------------------------------------------------------------
RUNNERS: dict[str, Callable[[Context], ExperimentReport]] = {
    "topic": run_topic,
    "sentiment": run_sentiment,
    "perplexity": run_perplexity,
    "prompting": run_prompting,
    "injection": run_injection,
    "methods": run_methods,
    "overhead": run_overhead,
    "quantization": run_quantization,
}


def run_experiments(
    loaded: LoadedModel,
    names: Sequence[str],
    out_dir: str | Path,
    *,
    settings: Settings | None = None,
    lexicon: Lexicon | None = None,
    log: Log | None = None,
) -> dict[str, ExperimentReport]:
    """Run the named experiments ("all" for every one) and write their files and `summary.json`."""
    wanted = list(EXPERIMENTS) if "all" in names else list(dict.fromkeys(names))
    if bad := [n for n in wanted if n not in RUNNERS]:
        raise InvalidInputError(f"unknown experiment {bad[0]!r}; choose from {', '.join(EXPERIMENTS)} or all")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        loaded, out, settings or Settings(), lexicon or load_lexicon(loaded), log or (lambda _: None)
    )
    reports = {}
    for name in wanted:
        ctx.log(f"{name}: running")
        started = time.perf_counter()
        report = RUNNERS[name](ctx)
        report.seconds = time.perf_counter() - started
        (out / f"{name}.md").write_text(f"## {report.title}\n\n{report.markdown}", encoding="utf-8")
        report.files.append(f"{name}.md")
        reports[name] = report
        ctx.log(f"{name}: done in {report.seconds:.1f} s")
    summary_path = out / "summary.json"
    summary = {}
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {}
    summary["_model"] = {
        "source": loaded.info.source,
        "lexicon": ctx.lexicon.source,
        "weights_sha256": _weights_digest(loaded),
        "settings": dataclasses.asdict(ctx.settings),
    }
    for name, report in reports.items():
        summary[name] = {**report.summary, "seconds": round(report.seconds, 2), "files": report.files}
    summary_path.write_text(json.dumps(summary, indent=1, default=float), encoding="utf-8")
    return reports


_text_sets = text_sets  # the name older tests and scripts import
