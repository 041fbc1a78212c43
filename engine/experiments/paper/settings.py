"""What a run of the paper's experiments is configured with (`Settings`) and what each one reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine.generation import SamplingConfig

EXPERIMENTS = (
    "topic", "sentiment", "perplexity", "prompting", "injection", "methods", "overhead", "quantization",
)  # fmt: skip

Log = Callable[[str], None]


@dataclass
class Settings:
    """Sample sizes and grids; `quick()` is the small-sample version the test suite runs."""

    seed: int = 0
    n_prompts: int = 10  # held-out prompts used (the first n)
    max_layers: int | None = None  # sweep at most this many layers, spread over the depth (None: every)
    samples: int = 5  # samples per prompt and setting
    max_new_tokens: int = 32
    topic_coeffs: list[float] = field(default_factory=lambda: [-4, -1, 0, 1, 2, 4, 8, 16])
    sentiment_coeffs: list[float] = field(default_factory=lambda: [-16, -8, -4, -2, 0, 2, 4, 8, 16])
    ppl_coeffs: list[float] = field(default_factory=lambda: [-4, -1, 0, 0.5, 1, 2, 4, 8, 16])
    injection_coeffs: list[float] = field(default_factory=lambda: [0, 1, 2, 4, 8, 16])
    method_coeffs: list[float] = field(
        default_factory=lambda: [0.5, 1, 2, 4]
    )  # mean-diff / PCA, all positions
    n_pairs: int = 32  # prompt pairs for mean-diff / PCA
    n_texts: int = 24  # off-target texts per set
    timing_repeats: int = 9
    overhead_rows_per_prompt: int = 4
    overhead_tokens: int = 32
    quantization_steer: bool = True  # also steer each load with each load's vector (slow on real models)
    layers: list[int] | None = None  # None: every layer

    @classmethod
    def quick(cls) -> Settings:
        # Sized for a 135M-parameter model on 2 CPU cores in under 10 minutes: 4 layers, 8 samples of 16
        # tokens per cell, every cell of an experiment a row of the same batch. Shares of 8 samples carry
        # Wilson intervals ~0.5 wide: a smoke test of the whole pipeline, not a measurement.
        return cls(
            n_prompts=4,
            samples=2,
            max_new_tokens=16,
            max_layers=4,
            topic_coeffs=[0, 4, 16],
            sentiment_coeffs=[-8, 0, 8],
            ppl_coeffs=[0, 4],
            injection_coeffs=[0, 4],
            method_coeffs=[1, 4],
            n_pairs=32,  # all 32 pairs: one batched capture, cheap next to generating
            n_texts=6,
            timing_repeats=1,
            overhead_rows_per_prompt=1,
            overhead_tokens=16,
            quantization_steer=False,
        )

    def sampling(self, **overrides) -> SamplingConfig:
        return SamplingConfig.paper(**{"seed": self.seed, "max_new_tokens": self.max_new_tokens, **overrides})


@dataclass
class ExperimentReport:
    name: str
    title: str
    markdown: str  # tables and the facts behind them
    summary: dict  # key numbers (JSON-able), e.g. for tests and the README
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
