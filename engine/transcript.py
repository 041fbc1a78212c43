"""Transcripts of generations (Markdown and JSON) and "export as Python script" for generations and sweeps.

A transcript records every setting needed to reproduce a generation: the model and how it was loaded,
the prompt, the vectors (file, coefficient, mode, layer, enabled), the sampling values including the seed,
and the coefficient changes made live while it streamed (the token step each one took effect at).

The exported scripts use only the engine's public API, so they run without Qt. A generation script
replays the live changes with `SteeringPlan.set_coefficient` at the same token steps, so with the same seed
on the same device it reproduces the panes exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from engine import __version__ as ENGINE_VERSION

if TYPE_CHECKING:
    from engine.experiments.sweep import SweepSpec


def model_record(info, fingerprint=None) -> dict:
    """The loaded model as plain data (ModelInfo plus the fingerprint id)."""
    record = {
        "source": info.source,
        "path": info.path,
        "architecture": info.architecture,
        "n_layers": info.n_layers,
        "hidden_size": info.hidden_size,
        "quantize": info.quantize,
        "dtype": info.dtype,
        "device": info.device,
    }
    if fingerprint is not None:
        record["fingerprint"] = fingerprint.id
    return record


def _load_args(model: dict) -> str:
    device = "cpu" if str(model.get("device", "cpu")).startswith("cpu") else "auto"
    return (
        f"{model['source']!r}, quantize={model.get('quantize', 'none')!r}, device={device!r}, "
        f"dtype={model.get('dtype', 'auto')!r}"
    )


def _sampling_expr(sampling: dict) -> str:
    parts = []
    for key, value in sampling.items():
        if key == "stop":
            value = tuple(value)
        parts.append(f"{key}={value!r}")
    return "SamplingConfig(" + ", ".join(parts) + ")"


@dataclass
class Transcript:
    prompt: str
    chat: bool
    model: dict
    sampling: dict  # SamplingConfig as a dict (seed always concrete)
    vectors: list[dict]  # name, key, path, coeff, enabled, mode, at_layer, method, layers, strength, profile
    outputs: dict  # unsteered/steered text, finish reasons, token counts
    live_changes: list[dict] = field(default_factory=list)  # step, index, value
    effect: bool = False
    seconds: float = 0.0
    tokens_per_second: float = 0.0
    cancelled: bool = False
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    app: str = f"ActAdd Studio {ENGINE_VERSION}"

    # ---- files ------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Transcript:
        return cls(**json.loads(text))

    def to_markdown(self) -> str:
        m, s = self.model, self.sampling
        lines = [
            "# ActAdd Studio transcript",
            "",
            f"- Created: {self.created} ({self.app})",
            f"- Model: `{m['source']}` ({m['architecture']}, {m['n_layers']} layers, hidden {m['hidden_size']}, "
            f"{m['dtype']} on {m['device']}, quantization {m['quantize']})",
            f"- Sampling: temperature {s['temperature']}, top-p {s['top_p']}, top-k {s['top_k']}, "
            f"repetition penalty {s['repetition_penalty']}, frequency penalty {s['frequency_penalty']}, "
            f"max tokens {s['max_new_tokens']}, seed {s['seed']}",
            f"- Chat template: {'on' if self.chat else 'off'}",
            f"- Speed: {self.tokens_per_second:.1f} tokens/s over {self.seconds:.2f} s"
            + (" (stopped early)" if self.cancelled else ""),
            "",
            "## Steering (steered pane)",
            "",
        ]
        if not self.vectors:
            lines.append("No vectors: both panes are unsteered.")
        else:
            lines += [
                "| # | Vector | c | Mode | Layer(s) | Enabled | File |",
                "|---|---|---|---|---|---|---|",
            ]
            for i, v in enumerate(self.vectors):
                layer = (
                    v["at_layer"]
                    if v.get("at_layer") is not None
                    else ", ".join(map(str, v.get("layers", [])))
                )
                c = f"{v['coeff']:g}" + (
                    f" (strength {v['strength']:g})" if v.get("strength") is not None else ""
                )
                lines.append(
                    f"| {i} | {v['name']} | {c} | {v.get('mode') or 'default'} | {layer} | "
                    f"{'yes' if v.get('enabled', True) else 'no'} | `{v['path']}` |"
                )
        if self.live_changes:
            lines += ["", "Live coefficient changes while streaming:", ""]
            for change in self.live_changes:
                name = self.vectors[change["index"]]["name"] if change["index"] < len(self.vectors) else "?"
                lines.append(f"- from token {change['step']}: {name} c = {change['value']:g}")
        lines += [
            "",
            "## Prompt",
            "",
            "```text",
            self.prompt,
            "```",
            "",
            "## Unsteered",
            "",
            "```text",
            self.prompt + self.outputs["unsteered"],
            "```",
            "",
            "## Steered",
            "",
            "```text",
            self.prompt + self.outputs["steered"],
            "```",
            "",
            "<details><summary>Settings as JSON</summary>",
            "",
            "```json",
            self.to_json(),
            "```",
            "",
            "</details>",
            "",
        ]
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        """Markdown for .md, JSON otherwise."""
        path = Path(path)
        text = self.to_markdown() if path.suffix.lower() in (".md", ".markdown") else self.to_json()
        path.write_text(text, encoding="utf-8")
        return path

    # ---- reproduction ---------------------------------------------------------------------------------------
    def to_script(self) -> str:
        return generation_script(self)


def generation_script(t: Transcript) -> str:
    steer_lines = []
    for v in t.vectors:
        coeff = v["coeff"] if v.get("enabled", True) else 0.0
        note = v["name"] + ("" if v.get("enabled", True) else " (disabled: coefficient 0)")
        if v.get("strength") is not None:
            note += f", normalised strength {v['strength']:g}"
        # a multi-layer vector set by strength scales its layers apart (JSON turns the keys to strings)
        profile = {int(k): float(x) for k, x in v["profile"].items()} if v.get("profile") else None
        steer_lines.append(
            f"    Steer(load_vector({v['path']!r}), {coeff!r}, mode={v.get('mode')!r}, "
            f"at_layer={v.get('at_layer')!r}"
            + (f", profile={profile!r}" if profile else "")
            + f"),  # {note}"
        )
    live: dict[int, list[tuple[int, float]]] = {}
    for change in t.live_changes:
        live.setdefault(int(change["step"]), []).append((int(change["index"]), float(change["value"])))
    steers = "\n".join(steer_lines)
    return f'''#!/usr/bin/env python3
"""Reproduce a generation made in ActAdd Studio on {t.created}.

Run it from the ActAdd Studio folder: python {{this file}} [--json]
Row 0 is the unsteered pane, row 1 the steered pane: one batch, and both rows sample with the
same seed (common random numbers), so they differ by steering alone.
"""

import json
import sys

from engine import SamplingConfig, Steer, SteeringPlan, generate, load_model, load_vector
from engine.threads import use_app_threads

use_app_threads()  # torch's thread count as the app sets it (one core left free), not one per core
PROMPT = {t.prompt!r}
CHAT = {t.chat!r}

loaded = load_model({_load_args(t.model)})
steers = [
{steers}
]
plan = SteeringPlan([[], steers])
sampling = {_sampling_expr(t.sampling)}

# Coefficients moved while the text streamed: first steered token -> [(steer index, new coefficient)].
LIVE = {live!r}


def on_token(event):
    # Applied between two tokens, exactly where the app applied them.
    for index, value in LIVE.pop(event.step + 1, []):
        plan.set_coefficient(1, index, value)


result = generate(loaded, PROMPT, plan, sampling, on_token=on_token, chat=CHAT)
if "--json" in sys.argv:
    print(json.dumps({{"unsteered": result.rows[0].text, "steered": result.rows[1].text}}))
else:
    print("--- unsteered ---")
    print(PROMPT + result.rows[0].text)
    print("--- steered ---")
    print(PROMPT + result.rows[1].text)
'''


def sweep_script(spec: SweepSpec, vector_path: str, model: dict, created: str | None = None) -> str:
    """A script that reruns a sweep layer by layer, as the app does (`spec.vector` is `vector_path`'s)."""
    created = created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    sampling = asdict(spec.sampling)
    return f'''#!/usr/bin/env python3
"""Reproduce a coefficient × layer sweep made in ActAdd Studio on {created}.

Run it from the ActAdd Studio folder: python {{this file}}
It writes sweep.csv and sweep.png next to where it runs and prints the best cell.
"""

from engine import SamplingConfig, load_model, load_vector
from engine.experiments import SweepResult, SweepSpec, plot_sweep, run_sweep
from engine.threads import use_app_threads

use_app_threads()  # torch's thread count as the app sets it (one core left free), not one per core
loaded = load_model({_load_args(model)})
vector = load_vector({vector_path!r})
LAYERS = {spec.layers!r}  # None: the vector's own layers


def spec(layers):
    return SweepSpec(
        vector=vector,
        coeffs={list(spec.coeffs)!r},
        layers=layers,
        prompts={list(spec.prompts)!r},
        metric={spec.metric!r},
        targets={list(spec.targets)!r},
        reference_text={spec.reference_text!r},
        samples_per_prompt={spec.samples_per_prompt!r},
        sampling={_sampling_expr(sampling)},
        mode={spec.mode!r},
        allow_other_model={spec.allow_other_model!r},
        sentiment_sign={spec.sentiment_sign!r},
        strengths={spec.strengths!r},  # True: coeffs are normalised strengths (x typical residual norm)
    )


# The app runs one layer per call (the plot fills in layer by layer); batches, and so samples, match.
cells = []
for layers in [None] if LAYERS is None else [[layer] for layer in LAYERS]:
    cells += run_sweep(loaded, spec(layers), progress=lambda done, total: print(f"\\r{{done}}/{{total}}", end="")).cells
print()
result = SweepResult(spec=spec(LAYERS), cells=cells, model=loaded.info.source)
result.to_csv("sweep.csv")
plot_sweep(result, "sweep.png")
best = result.best()
for cell in result.cells:
    flag = "  (degenerate)" if cell.degenerate else ""
    setting = f"{{result.spec.coeff_text(cell.coeff):>7}} (c = {{cell.steer_coeff:.4g}})"
    print(f"layer {{cell.layer:>3}}  {{setting}}  {spec.metric} = {{cell.value:.4g}}{{flag}}")
if best is not None:
    setting = f"{{result.spec.coeff_text(best.coeff)}} (c = {{best.steer_coeff:.4g}})"
    print(f"best: layer {{best.layer}}, {{setting}} ({spec.metric} = {{best.value:.4g}})")
'''
