"""Which devices a model can be loaded on: CPU, CUDA, and Apple's MPS and Intel's XPU where torch has them.

The choice offered to the user (`available_devices`, used by the CLI's `--device` and the Model tab) is
"auto", "cpu", "cuda" (always: asking for it without a GPU gets a clear error) and "mps"/"xpu" when torch
reports them. `device_map_for` turns the choice into the `device_map` that transformers loads with.

bitsandbytes quantization (8-bit/4-bit) runs only on the devices the installed bitsandbytes lists in
`bitsandbytes.supported_torch_devices` (the list transformers itself checks). The policy where it can't:
- an explicit device (`--device mps --quantize 4bit`) is refused with a clear `ModelLoadError` that names
  the way out (quantization none, or the CPU): silently loading unquantized could need 4-8x the memory;
- "auto" never picks a device that can't honour the request: it skips to the CPU and logs a warning.
"""

from __future__ import annotations

import logging

from engine.errors import ModelLoadError

log = logging.getLogger(__name__)

KNOWN_DEVICES = ("auto", "cpu", "cuda", "mps", "xpu")
_NAMES = {"cuda": "CUDA GPU", "mps": "Apple GPU (MPS)", "xpu": "Intel GPU (XPU)"}


def device_available(kind: str) -> bool:
    """Whether torch reports a usable `kind` device ("cpu" always is)."""
    if kind == "cpu":
        return True
    import torch  # here, not at the top: the CLI imports this module to build its parser

    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())
    if kind == "xpu":
        xpu = getattr(torch, "xpu", None)
        return bool(xpu is not None and xpu.is_available())
    return False


def available_devices() -> tuple[str, ...]:
    """The device choices to offer: auto, cpu, cuda, then mps and xpu where torch reports them."""
    return ("auto", "cpu", "cuda", *(kind for kind in ("mps", "xpu") if device_available(kind)))


def bnb_devices() -> frozenset[str]:
    """The devices the installed bitsandbytes can quantize on."""
    try:
        import bitsandbytes
    except ImportError:
        return frozenset()
    return frozenset(getattr(bitsandbytes, "supported_torch_devices", {"cpu", "cuda"}))


def can_quantize_on(kind: str, quantize: str) -> bool:
    return quantize == "none" or kind in bnb_devices()


def device_map_for(device: str, quantize: str = "none", max_memory: dict | None = None) -> str | dict:
    """The transformers `device_map` for a device choice, or a `ModelLoadError` saying why not."""
    if device not in KNOWN_DEVICES:
        raise ModelLoadError(f"device must be one of {KNOWN_DEVICES}, not {device!r}")
    if device == "auto":
        if device_available("cuda") or max_memory:
            return "auto"  # accelerate spreads the model over the GPUs (or applies the memory budget)
        for kind in ("xpu", "mps"):
            if not device_available(kind):
                continue
            if can_quantize_on(kind, quantize):
                return {"": kind}
            log.warning(
                "bitsandbytes can't quantize to %s on the %s; loading on the CPU instead",
                quantize,
                _NAMES[kind],
            )
        return "cpu"
    if device == "cpu":
        return "cpu"
    if not device_available(device):
        raise ModelLoadError(f"device {device!r} was asked for, but no {_NAMES[device]} is available")
    if not can_quantize_on(device, quantize):
        raise ModelLoadError(
            f"the installed bitsandbytes can't quantize to {quantize} on the {_NAMES[device]} ({device}); "
            "choose quantization none, or device cpu"
        )
    return {"": 0} if device == "cuda" else {"": device}


def on_accelerator(device_map: str | dict) -> bool:
    """Whether a `device_map_for` result puts the model on a GPU of some kind."""
    return device_map != "cpu" and not (device_map == "auto" and not device_available("cuda"))
