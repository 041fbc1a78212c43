"""A library writer for the kill -9 and concurrency tests (run as a separate process).

    python tests/library_writer.py run ROLE LIBRARY LOG PREFIX SEED [ITERATIONS]
    python tests/library_writer.py zygote

`run` performs ROLE in this process. `zygote` imports the engine once, prints "ready", then reads JSON
commands on stdin and answers one JSON line each:
    {"cmd": "fork", "role": ..., "library": ..., "log": ..., "prefix": ..., "seed": ..., "iterations": ...}
        -> {"pid": PID}   (a forked child runs the role; the test may SIGKILL it at any moment)
    {"cmd": "wait", "pid": PID}  -> {"exit": CODE or null, "signal": SIGNAL or null}
    {"cmd": "quit"}
Forking a process that has only imported torch (no op has run, so no thread pool exists) is safe and
avoids paying the import for each of the hundred kills.

Every completed operation is appended to LOG with a single `write` (O_APPEND), so what the log says is
done was done before the kill: `start OP ARGS` before an operation, `done OP ARGS` after it returned.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from fork_server import Log, serve_forks

from engine.errors import LibraryError
from engine.fingerprint import ModelFingerprint
from engine.library import Library
from engine.vector import SteeringVector

FINGERPRINT = ModelFingerprint("gpt2", 256, 4, "0123456789abcdef", "writer-test")
ROWS = 64  # 64 x 256 float32 = 64 KiB per layer, 2 layers: writes take long enough to be interrupted


def make_vector(value: float) -> SteeringVector:
    """A vector whose every element is `value`, so a reader can tell which write it sees."""
    return SteeringVector(
        layers={l: torch.full((ROWS, FINGERPRINT.hidden_size), float(value)) for l in (1, 2)},
        method="actadd",
        fingerprint=FINGERPRINT,
        prompts={"positive": f"p{value}", "negative": "n"},
        provenance={"pad_token": "Ġ", "dtype": "float32", "quantize": "none"},
    )


def saver(library: Library, log: Log, prefix: str, rng: random.Random, iterations: int) -> None:
    """Saves, overwrites, renames, retags and lists, forever or for `iterations` rounds."""
    current = f"{prefix}-current"
    i = 0
    while iterations <= 0 or i < iterations:
        name = f"{prefix}-{i}"
        log("start", "save", name, i)
        library.save(make_vector(i), name)
        log("done", "save", name, i)
        log("start", "overwrite", current, i)
        library.save(make_vector(i), current, overwrite=True)
        log("done", "overwrite", current, i)
        if i % 3 == 2:
            old, new = f"{prefix}-{i - 1}", f"{prefix}-{i - 1}-renamed"
            log("start", "rename", old, new)
            library.rename(old, new)
            log("done", "rename", old, new)
        if i % 4 == 1:
            log("start", "tag", name, i)
            library.set_tags(name, [f"t{i}", rng.choice(["a", "b"])])
            log("done", "tag", name, i)
        if i % 5 == 4:
            library.list()
        i += 1


def racer(library: Library, log: Log, prefix: str, rng: random.Random, iterations: int) -> None:
    """One of several processes working on one library at once, with some names contested."""
    barrier = library.root / ".go"
    while not barrier.exists():
        time.sleep(0.001)
    for i in range(iterations):
        name = f"{prefix}-{i}"
        library.save(make_vector(i), name)
        log("done", "save", name, i)
        try:
            library.save(make_vector(1000 + i), f"shared-{i}")
            log("done", "won", f"shared-{i}", i)
        except LibraryError:
            log("done", "lost", f"shared-{i}", i)
        if i % 2 == 1:
            library.rename(f"{prefix}-{i - 1}", f"{prefix}-{i - 1}-r")
            log("done", "rename", f"{prefix}-{i - 1}", f"{prefix}-{i - 1}-r")
        if i % 3 == 0:
            library.list()
        if rng.random() < 0.2:
            time.sleep(rng.random() * 0.005)


ROLES = {"saver": saver, "racer": racer}


def run(role: str, library: str, log: str, prefix: str, seed: int, iterations: int = 0) -> None:
    torch.set_num_threads(1)
    ROLES[role](Library(library), Log(log), prefix, random.Random(seed), iterations)


def zygote() -> None:
    serve_forks(
        lambda command: run(
            command["role"],
            command["library"],
            command["log"],
            command["prefix"],
            int(command["seed"]),
            int(command.get("iterations", 0)),
        )
    )


if __name__ == "__main__":
    if sys.argv[1] == "zygote":
        zygote()
    else:
        run(*sys.argv[2:6], int(sys.argv[6]), int(sys.argv[7]) if len(sys.argv) > 7 else 0)
