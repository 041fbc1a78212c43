"""Stopping a forward pass between decoder blocks once a cancel event is set.

transformers' stopping criteria run between tokens, so a Stop waits for the whole current forward pass:
the prompt pass of a long prompt, or one decode step of a slow (4-bit, CPU) model, took 3.5-3.9 s on a
real model. A forward pre-hook on every block reads the event and raises `StoppedBetweenBlocks`, so the
pass ends at the next block boundary; `generate` catches it and returns its ordinary cancelled result.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


class StoppedBetweenBlocks(Exception):
    """Raised from a block's pre-hook when the cancel event is set; never leaves the engine."""


@contextmanager
def cancel_between_blocks(blocks: nn.ModuleList, event: threading.Event) -> Iterator[None]:
    """While inside, every forward pass through `blocks` stops at the next block once `event` is set."""

    def hook(module: nn.Module, args: tuple) -> None:
        if event.is_set():  # one attribute read per block: nothing next to the block's own work
            raise StoppedBetweenBlocks

    hook.actadd_hook = True  # type: ignore[attr-defined]  # counted by steering.hook_count
    handles = [block.register_forward_pre_hook(hook) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
