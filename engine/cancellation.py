"""Stopping a forward pass between decoder blocks once a cancel event is set, when passes are slow.

transformers' stopping criteria run between tokens, so a Stop waits for the whole current forward pass:
the prompt pass of a long prompt, or one decode step of a slow (4-bit, CPU) model, took 3.5-3.9 s on a
real model. A forward pre-hook on every block reads the event and raises `StoppedBetweenBlocks`, so the
pass ends at the next block boundary; `generate` catches it and returns its ordinary cancelled result.

The per-block check is only needed while a token takes longer than `SLOW_TOKEN_SECONDS`: below that the
check between tokens already answers a Stop in time. `BlockChecks.token_done` (called between tokens by
`generate`'s stopping criterion) removes the hooks after a fast token and puts them back after a slow one,
so a fast model's decode steps run without 30 extra hook calls each (most of the app path's extra
Python calls per step). The prompt pass always runs with them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.utils.hooks import RemovableHandle

# The longest wait for a Stop without per-block checks: a token that takes less is stopped between tokens.
SLOW_TOKEN_SECONDS = 0.2


class StoppedBetweenBlocks(Exception):
    """Raised from a block's pre-hook when the cancel event is set; never leaves the engine."""


class BlockChecks:
    """The per-block check of `event` on `blocks`, installed while tokens are slow enough to need it."""

    def __init__(self, blocks: nn.ModuleList, event: threading.Event):
        self.blocks, self.event = blocks, event
        self._handles: list[RemovableHandle] = []
        self._last_token = time.perf_counter()

        def hook(module: nn.Module, args: tuple) -> None:
            if event.is_set():  # one attribute read per block: nothing next to the block's own work
                raise StoppedBetweenBlocks

        hook.actadd_hook = True  # type: ignore[attr-defined]  # counted by steering.hook_count
        self._hook = hook

    def install(self) -> None:
        if not self._handles:
            self._handles = [block.register_forward_pre_hook(self._hook) for block in self.blocks]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def token_done(self) -> None:
        """Between two tokens (never inside a pass): keep the per-block check only if the token just made
        took `SLOW_TOKEN_SECONDS` or more (the first one includes the prompt pass)."""
        now = time.perf_counter()
        if now - self._last_token >= SLOW_TOKEN_SECONDS:
            self.install()
        else:
            self.remove()
        self._last_token = now


@contextmanager
def cancel_between_blocks(blocks: nn.ModuleList, event: threading.Event) -> Iterator[BlockChecks]:
    """While inside, a forward pass through `blocks` stops at the next block once `event` is set: every pass
    until the caller's `token_done` finds tokens fast, and every slow one after."""
    checks = BlockChecks(blocks, event)
    checks.install()
    try:
        yield checks
    finally:
        checks.remove()
