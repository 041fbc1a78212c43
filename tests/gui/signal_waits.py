"""Waiting for a signal that a worker thread emits many times (a job's tokens or progress).

`qtbot.waitSignal(job.token).wait()` connects a blocker's slot across threads and disconnects it after
the first emission, while the worker keeps emitting: under load a queued emission reached a blocker
that was already gone, and the test process died with a segmentation fault inside pytest-qt's slot.
Here a plain counter stays connected for the job's lifetime and the test polls it.
"""

from __future__ import annotations


def wait_for_emission(qtbot, signal, timeout: int = 20_000, count: int = 1) -> None:
    """Return once `signal` has been emitted `count` times after this call (polling the event loop)."""
    seen: list[int] = []
    signal.connect(lambda *args: seen.append(1))
    qtbot.waitUntil(lambda: len(seen) >= count, timeout=timeout)
