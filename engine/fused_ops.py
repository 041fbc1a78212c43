"""Load-time swaps of a model's element-wise modules for fused kernels computing the same function.

GPT-2-family models (GPT-2, GPT-J, Phi-1/2, CodeGen, the demo model) use transformers' `gelu_new`: the
tanh approximation of GELU written as five separate tensor ops. Each writes a `[tokens, 4 * hidden]`
temporary, so once a batch's activations outgrow the cache every op streams them through memory, and
it costs several times as much per element as PyTorch's single fused kernel for the same formula
(`F.gelu(approximate="tanh")`, transformers' own `gelu_pytorch_tanh`; measured in bench/README.md). The two agree to
float32 rounding (about 5e-7); in 16-bit the fused kernel is the more accurate, as it computes in float32.
"""

from __future__ import annotations

from torch import nn
from transformers.activations import GELUTanh, NewGELUActivation


def fuse_activations(model: nn.Module) -> int:
    """Replace every `gelu_new` module in `model` with the fused kernel; returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is NewGELUActivation:  # exactly it: a subclass may compute something else
                setattr(parent, name, GELUTanh())
                replaced += 1
    return replaced
