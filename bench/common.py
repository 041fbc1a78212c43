"""Shared helpers for the benchmarks: random-init models of real shapes, interleaved timing, results.

Every benchmark loads its models through `engine.load_model` from a folder written here with
`save_pretrained`, and generates/captures through the engine's public functions: the code paths are the
app's. Absolute times on a shared 2-core machine are noisy, so each target is a ratio of variants timed
side by side in one process, interleaved (A B B A A B ...), and summarised by the median of the paired
per-repetition ratios.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BOS = "<|endoftext|>"
BUILDER_VERSION = 2  # bump when a shape or the tokenizer changes, so cached folders are rebuilt

CORPUS = [
    "Love is patient and kind. I love weddings, the bride and the groom.",
    "Hate is a strong word. I hate rain and cold weather on a long trip.",
    "The team won the match; sports fans cheered in the stadium.",
    "We ate pasta and bread, the food was warm and the soup was good.",
    "Travel by train to the coast, the weather was sunny and calm.",
    "I went up to my friend and said hello. Anger and calm are moods.",
    "Intent to praise, intent to hurt. I talk about weddings constantly.",
    "I think that the results of the experiment were surprising to everyone.",
]

# name -> (model_type, config overrides). vocab_size is the model's; the tokenizer is padded to it.
SHAPES: dict[str, tuple[str, dict]] = {
    # GPT-2 small: 12 layers, d=768, 12 heads, 50257 tokens, context 1024 (124M parameters)
    "gpt2-small": (
        "gpt2",
        {"n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "vocab_size": 50257},
    ),
    # A Llama of similar compute: 12 layers, d=768, GQA 12/4 heads, SwiGLU 2048, 32000 tokens (~110M)
    "llama-small": (
        "llama",
        {
            "hidden_size": 768,
            "intermediate_size": 2048,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "num_key_value_heads": 4,
            "max_position_embeddings": 2048,
            "vocab_size": 32000,
        },
    ),
    # A few hundred million parameters: SmolLM2-360M's shape (Llama, 32 layers, d=960, GQA 15/5 heads,
    # SwiGLU 2560, 49152 tokens, tied embeddings; 362M parameters), for the quantization memory benchmark
    "smollm-360m": (
        "llama",
        {
            "hidden_size": 960,
            "intermediate_size": 2560,
            "num_hidden_layers": 32,
            "num_attention_heads": 15,
            "num_key_value_heads": 5,
            "max_position_embeddings": 2048,
            "vocab_size": 49152,
            "tie_word_embeddings": True,
        },
    ),
    # The demo model's shape (4 layers, d=256, context 128), used when resources/demo-model is absent
    "demo-shape": (
        "gpt2",
        {"n_embd": 256, "n_layer": 4, "n_head": 4, "n_positions": 128, "vocab_size": 1800},
    ),
    # Tiny shapes for the smoke tests and --tiny runs
    "tiny-gpt2": ("gpt2", {"n_embd": 64, "n_layer": 4, "n_head": 4, "n_positions": 256, "vocab_size": 512}),
    "tiny-llama": (
        "llama",
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
            "vocab_size": 512,
        },
    ),
}
ADDS_BOS = {"llama"}  # tokenizers that add BOS themselves, as Llama's does


# ---- models -----------------------------------------------------------------------------------------------
def build_tokenizer(vocab_size: int, adds_bos: bool):
    """A byte-level BPE trained on CORPUS, its vocabulary padded with filler words up to `vocab_size`.

    The filler tokens are never produced by encoding, but every id a random model samples decodes to text,
    as with a real tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(vocab_size, 600),
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    spec = json.loads(tok.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    words = (
        "Ġ" + "".join(w)
        for n in itertools.count(2)
        for w in itertools.product("abcdefghijklmnopqrstuvwxyz", repeat=n)
    )
    while len(vocab) < vocab_size:
        word = next(words)
        if word not in vocab:
            vocab[word] = len(vocab)
    tok = Tokenizer.from_str(json.dumps(spec))
    if adds_bos:
        bos_id = tok.token_to_id(BOS)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=BOS, unk_token=BOS, pad_token=BOS
    )


def build_model(shape: str, folder: Path, *, seed: int = 0, save_dtype: str = "float32") -> Path:
    """Random-initialise a model of `shape` and save it (and its tokenizer) into `folder`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, overrides = SHAPES[shape]
    tokenizer = build_tokenizer(overrides["vocab_size"], model_type in ADDS_BOS)
    config = AutoConfig.for_model(
        model_type,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.to(getattr(torch, save_dtype))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def model_dir(shape: str, *, save_dtype: str = "float32", root: Path | None = None) -> Path:
    """The folder of a saved model of `shape`, built once and cached under the temp folder."""
    root = root or Path(tempfile.gettempdir()) / "actadd-bench-models"
    folder = root / f"{shape}-{save_dtype}-v{BUILDER_VERSION}"
    if not (folder / ".complete").exists():
        # Build beside it and rename, so concurrent runs never see (or load) a half-written folder.
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
        build_model(shape, staging, save_dtype=save_dtype)
        (staging / ".complete").write_text("ok")
        if folder.exists() and not (folder / ".complete").exists():
            shutil.rmtree(folder, ignore_errors=True)  # left over from an interrupted older build
        try:
            staging.rename(folder)
        except OSError:  # another run finished first
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def load(shape: str, **kwargs):
    """A model of `shape` loaded through the app's own `engine.load_model` (CPU by default)."""
    from engine import load_model

    kwargs.setdefault("device", "cpu")
    return load_model(model_dir(shape), **kwargs)


# ---- timing -----------------------------------------------------------------------------------------------
def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class Timings:
    """Per-variant repetition times from `interleaved`, on two clocks.

    `cpu` is this process's CPU time (`time.process_time`). With one torch thread every bit of work of a
    generation (model, hooks, sampling, decoding) runs on this process's CPU, so CPU time counts the work
    itself and hardly moves when other processes compete for the cores; wall time does. Ratios default
    to CPU time; wall-clock ratios are reported beside them.
    """

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]

    def ratio(self, numerator: str, denominator: str, clock: str = "cpu") -> float:
        """Median over repetitions of t[numerator] / t[denominator] (each pair ran back to back)."""
        times = self.cpu if clock == "cpu" else self.wall
        return median(a / b for a, b in zip(times[numerator], times[denominator], strict=True))

    def ratio_ci(
        self, numerator: str, denominator: str, clock: str = "cpu", n_boot: int = 2000
    ) -> list[float]:
        """A 95% bootstrap interval of `ratio` (the median of paired ratios): how far noise can move it."""
        import random

        times = self.cpu if clock == "cpu" else self.wall
        pairs = [a / b for a, b in zip(times[numerator], times[denominator], strict=True)]
        rng = random.Random(0)
        medians = sorted(median(rng.choices(pairs, k=len(pairs))) for _ in range(n_boot))
        return [medians[int(0.025 * n_boot)], medians[int(0.975 * n_boot) - 1]]

    def median(self, name: str, clock: str = "cpu") -> float:
        return median((self.cpu if clock == "cpu" else self.wall)[name])

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "median_cpu_s": median(self.cpu[name]),
                "median_wall_s": median(self.wall[name]),
                "min_wall_s": min(self.wall[name]),
                "max_wall_s": max(self.wall[name]),
                "reps": len(self.wall[name]),
            }
            for name in self.wall
        }


def interleaved(
    variants: dict[str, Callable[[], object]], reps: int, warmup: int = 1, label: str = ""
) -> Timings:
    """Time each variant `reps` times, interleaved A B B A A B ... so drifting load hits all alike.

    With a `label`, one progress line per repetition goes to stderr.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    timings = Timings({name: [] for name in names}, {name: [] for name in names})
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            wall, cpu = time.perf_counter(), time.process_time()
            variants[name]()
            timings.cpu[name].append(time.process_time() - cpu)
            timings.wall[name].append(time.perf_counter() - wall)
        if label:
            last = ", ".join(
                f"{name} {timings.cpu[name][-1]:.2f}/{timings.wall[name][-1]:.2f}s" for name in names
            )
            print(
                f"  {label} {rep + 1}/{reps} (cpu/wall): {last} (load {os.getloadavg()[0]:.1f})",
                file=sys.stderr,
                flush=True,
            )
    return timings


def paired_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over repetitions of time[numerator] / time[denominator] (each pair ran back to back)."""
    return median(a / b for a, b in zip(times[numerator], times[denominator], strict=True))


def summarize(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {"median_s": median(ts), "min_s": min(ts), "max_s": max(ts), "reps": len(ts)}
        for name, ts in times.items()
    }


# ---- results ----------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def environment() -> dict:
    import torch

    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "bitsandbytes": _version("bitsandbytes"),
        "platform": platform.platform(),
        "git_commit": commit,
    }


@dataclass
class Target:
    """One checked number: `value op threshold`, e.g. steered/unsteered tokens per second >= 0.97."""

    id: str  # e.g. "1a"
    name: str
    value: float
    op: str  # ">=" or "<="
    threshold: float
    unit: str = "x"
    part: str = ""  # the benchmark part that measured it (for --merge)

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.op == ">=" else self.value <= self.threshold

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "value": float(f"{self.value:.6g}"),
            "op": self.op,
            "threshold": self.threshold,
            "unit": self.unit,
            "passed": self.passed,
            "part": self.part,
        }


@dataclass
class Result:
    """A benchmark's JSON result; the load average is recorded at creation and at each write.

    A benchmark made of parts calls `begin_part(name)` before each; `keep_previous(path, parts)` then
    carries over, from an earlier result file, the targets and details of the parts not run this time
    (each with the load average and time of its own run), so one part can be re-measured alone.
    """

    benchmark: str
    params: dict = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    load_start: list[float] = field(default_factory=load_average)
    started: float = field(default_factory=time.time)
    part: str = ""
    parts: dict = field(
        default_factory=dict
    )  # part -> {"details": [keys], "load_average_start", "timestamp"}
    previous: dict = field(default_factory=dict)  # part -> {"targets": [...], "details": {...}, ...}

    def target(self, *args, **kwargs) -> Target:
        self.targets.append(Target(*args, **kwargs, part=self.part))
        return self.targets[-1]

    def begin_part(self, name: str) -> None:
        self.part = name
        self.parts[name] = {
            "details_before": set(self.details),
            "load_average_start": load_average(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "commit": environment()["git_commit"],
        }

    def keep_previous(self, path: Path, rerun: list[str]) -> None:
        if not path.exists():
            return
        old = json.loads(path.read_text(encoding="utf-8"))
        for name, record in old.get("parts", {}).items():
            if name not in rerun:
                self.previous[name] = {
                    **record,
                    "targets": [t for t in old.get("targets", []) if t.get("part") == name],
                    "details": {
                        k: old["details"][k] for k in record.get("details", []) if k in old["details"]
                    },
                }

    def as_dict(self) -> dict:
        parts = {
            name: {
                "details": sorted(set(self.details) - info["details_before"]),
                "load_average_start": info["load_average_start"],
                "timestamp": info["timestamp"],
                "commit": info["commit"],
            }
            for name, info in self.parts.items()
        }
        targets = [t.as_dict() for t in self.targets]
        details = dict(self.details)
        for name, record in self.previous.items():
            parts[name] = {k: v for k, v in record.items() if k not in ("targets", "details")}
            targets += record["targets"]
            details.update(record["details"])
        if self.previous:
            targets.sort(key=lambda t: t["id"])  # stable: a part's targets keep their order
        return {
            "benchmark": self.benchmark,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "seconds": round(time.time() - self.started, 1),
            "environment": environment(),
            "load_average_start": self.load_start,
            "load_average_end": load_average(),
            "params": self.params,
            "targets": targets,
            "all_passed": all(t["passed"] for t in targets),
            "details": details,
            **({"parts": parts} if parts else {}),
        }

    def write(self, out: Path | None = None) -> dict:
        """Write the result JSON (to bench/results/<benchmark>.json unless `out` is given) and return it."""
        data = self.as_dict()
        path = out or RESULTS_DIR / f"{self.benchmark}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(path)
        return data


def print_targets(data: dict) -> None:
    for t in data["targets"]:
        mark = "PASS" if t["passed"] else "FAIL"
        print(
            f"  [{mark}] {t['id']:>3} {t['name']}: {t['value']:.3f}{t['unit']} ({t['op']} {t['threshold']})"
        )
