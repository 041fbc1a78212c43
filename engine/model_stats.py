"""Numbers about a loaded model as people read them: its parameter count and memory sizes.

One home for each, so that the model panel, the status bar and the CLI agree ("1.43 GB" everywhere,
never "1468 MB" in one place and "1.43 GB" in another).
"""

from __future__ import annotations

import math

from torch import nn


def parameter_count(model: nn.Module) -> int:
    """The number of logical parameters, as the model card counts them, whatever the quantization.

    bitsandbytes' 4-bit `Params4bit` stores two weights per uint8 byte in a flat `[n/2, 1]` tensor, so its
    `numel()` is half the real count (SmolLM2-135M read "81 M"); its `quant_state.shape` keeps the
    original shape. 8-bit `Int8Params` hold one int8 per weight and count correctly as they are.
    """
    total = 0
    for param in model.parameters():
        shape = getattr(getattr(param, "quant_state", None), "shape", None)
        total += math.prod(shape) if shape is not None else param.numel()
    return total


def format_megabytes(megabytes: float | None) -> str:
    """A size in MB (2**20 bytes, as `engine.models.memory_report` gives it) for display: "512 MB" below
    one GB, "1.43 GB" from there on; "–" when unknown."""
    if megabytes is None or not math.isfinite(megabytes):
        return "–"
    if megabytes >= 1024:
        return f"{megabytes / 1024:.2f} GB"
    return f"{megabytes:.0f} MB"
