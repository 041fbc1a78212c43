"""How many CPU threads torch uses: the app's rule, shared by its worker and the scripts it exports.

torch's default, one thread per core, oversubscribes a busy machine: on a loaded 2-core computer an
exported script took 141 s for what the app did in 5.6 s. The app leaves one core to its GUI thread.
"""

from __future__ import annotations

import os


def default_torch_threads() -> int:
    """`$ACTADD_TORCH_THREADS` if set, else one thread fewer than the cores (at least one)."""
    if env := os.environ.get("ACTADD_TORCH_THREADS"):
        return max(1, int(env))
    return max(1, (os.cpu_count() or 2) - 1)


def use_app_threads() -> int:
    """Set torch's thread count as the app does; returns the count set."""
    import torch

    threads = default_torch_threads()
    torch.set_num_threads(threads)
    return threads
