"""The one mapping from the sampling flags of `generate`, `sweep` and `sweep --suggest` to a SamplingConfig."""

from __future__ import annotations

import argparse
from dataclasses import fields, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # generation imports torch, which `--help` need not load
    from engine.generation import SamplingConfig


def sampling_from_args(args: argparse.Namespace, base: SamplingConfig) -> SamplingConfig:
    """`base` with every sampling option the subcommand has set from its flags: the one mapping from
    --temperature, --top-p, --top-k, ..., --stop, --seed to `SamplingConfig` fields. A flag the subcommand
    lacks, or leaves unset (None), keeps `base`'s value."""
    values = {f.name: getattr(args, f.name) for f in fields(base) if getattr(args, f.name, None) is not None}
    if "stop" in values:  # repeated --stop arrives as a list
        values["stop"] = tuple(values["stop"])
    return replace(base, **values)
