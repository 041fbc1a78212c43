"""kill -9 in the middle of the library operations that tests/test_library.py doesn't kill, and three
processes at once (issue 6: crashes and data).

tests/test_library.py already kills a writer mid-save, mid-overwrite, mid-rename and mid-retag (10 times,
100 under `slow`) and races two savers/renamers. Here a forked worker (this file run as a script, see
`zygote`) loops over the other operations, each logged with `start ...` before and `done ...` after
(one `write` each, O_APPEND), and is killed with SIGKILL at a random moment:

- trasher: save, delete into the trash, restore, duplicate, notes, combine, to-direction, empty one trash
  item, list (which rewrites the index);
- importer: import a 6-vector bundle into a new collection, again and again.

After every kill the library is replayed from the log and checked: every vector the log calls done is
there whole with its own values (or in the trash, if its delete is done), the one operation in flight is
either done or not done (never neither, never half), nothing else appeared, every visible file loads, the
index is whole and agrees with a fresh scan, and the trash lists.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import time
from functools import partial
from pathlib import Path

import fork_server
import pytest
from fork_server import Zygote

ROOT = Path(__file__).resolve().parent.parent
ROWS, HIDDEN = 32, 256  # 32 KiB per layer, two layers: writes take long enough to be interrupted


# ---- the worker (runs in a forked child of the zygote) -----------------------------------------------------
def make_vector(value: float):
    import torch

    from engine.vector import SteeringVector

    return SteeringVector(
        layers={l: torch.full((ROWS, HIDDEN), float(value)) for l in (1, 2)},
        prompts={"positive": f"p{value}", "negative": "n"},
    )


class Log(fork_server.Log):
    def op(self, name: str, *args, run, record: bool = False):
        """Log `start`, run, log `done` (with the result, for `record`)."""
        self("start", name, *args)
        result = run()
        self("done", name, *args, *([result] if record else []))
        return result


def trasher(library, log: Log, prefix: str, rng: random.Random, iterations: int, **_) -> None:
    trash_ids: list[str] = []
    i = 0
    while iterations <= 0 or i < iterations:
        name = f"{prefix}-{i}"
        log.op("save", name, i, run=partial(library.save, make_vector(i), name))
        if i % 3 == 1:
            log.op("duplicate", name, f"{name}-copy", run=partial(library.duplicate, name, f"{name}-copy"))
        if i % 3 == 2:
            victim = f"{prefix}-{i - 1}"
            trash_ids.append(log.op("delete", victim, run=partial(library.delete, victim), record=True))
        if i % 4 == 3 and trash_ids:
            trash_id = trash_ids.pop(rng.randrange(len(trash_ids)))
            log.op("restore", trash_id, run=partial(library.restore, trash_id))
        if i % 5 == 4:
            log.op("notes", name, run=partial(library.set_notes, name, "x" * rng.randrange(1, 5000)))
        if i % 6 == 5:
            log.op(
                "combine",
                name,
                f"{name}-sum",
                run=partial(library.combine, [(1, name), (1, name)], f"{name}-sum"),
            )
        if i % 7 == 6:
            log.op("direction", name, f"{name}-dir", run=partial(library.to_direction, name, f"{name}-dir"))
        if i % 8 == 7 and trash_ids:
            trash_id = trash_ids.pop(0)
            log.op("empty", trash_id, run=partial(library.empty_trash, trash_id))
        if i % 2 == 0:
            library.list()
        i += 1
    log("finished")


def importer(
    library, log: Log, prefix: str, rng: random.Random, iterations: int, bundle: str = "", **_
) -> None:
    from engine.interop.bundle import import_bundle

    i = 0
    while iterations <= 0 or i < iterations:
        collection = f"{prefix}{i}"
        log.op("import", collection, run=partial(import_bundle, library, Path(bundle), collection=collection))
        library.list()
        i += 1
    log("finished")


ROLES = {"trasher": trasher, "importer": importer}


def serve_forks() -> None:
    """Import the engine once, then fork one child per command (a fresh process per kill, no re-import)."""
    sys.path.insert(0, str(ROOT))
    import torch

    from engine.library import Library

    torch.set_num_threads(1)
    fork_server.serve_forks(
        lambda command: ROLES[command["role"]](
            Library(command["library"]),
            Log(command["log"]),
            command["prefix"],
            random.Random(command["seed"]),
            int(command.get("iterations", 0)),
            bundle=command.get("bundle", ""),
        )
    )


# ---- the test side -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zygote():
    if not hasattr(os, "fork"):
        pytest.skip("the kill tests fork a worker (POSIX)")
    z = Zygote(__file__)
    yield z
    z.close()


BUNDLE_NAMES = [f"b{k}" for k in range(6)]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A bundle of six vectors whose values are 100..105."""
    import torch

    from engine.interop.bundle import export_bundle
    from engine.library import Library
    from engine.vector import SteeringVector

    source = Library(tmp_path_factory.mktemp("bundle-source"))
    for k, name in enumerate(BUNDLE_NAMES):
        source.save(SteeringVector(layers={l: torch.full((ROWS, HIDDEN), 100.0 + k) for l in (1, 2)}), name)
    out = tmp_path_factory.mktemp("bundle") / "six.zip"
    export_bundle(source, BUNDLE_NAMES, out)
    return out


def value_of(vector) -> float:
    values = {float(t.flatten()[0]) for t in vector.layers.values()}
    assert len(values) == 1, f"layers disagree: {values}"
    (value,) = values
    assert all(bool((t == value).all()) for t in vector.layers.values()), "a half-written vector"
    return value


def replay(log: str) -> tuple[dict[str, float], dict[str, tuple[str, float]], dict[str, set], tuple | None]:
    """From the log: (library key -> value, trash id -> (key, value), imported collections, op in flight)."""
    present: dict[str, float] = {}
    trash: dict[str, tuple[str, float]] = {}
    imports: dict[str, set] = {}
    in_flight = None
    for line in log.splitlines():
        if not line.strip() or line == "finished":
            continue
        phase, op, *args = line.split()
        if phase == "start":
            in_flight = (op, *args)
            continue
        in_flight = None
        if op == "save":
            present[args[0]] = float(args[1])
        elif op == "duplicate":
            present[args[1]] = present[args[0]]
        elif op == "combine":
            present[args[1]] = 2 * present[args[0]]
        elif op == "direction":
            present[args[1]] = present[args[0]]
        elif op == "delete":
            trash[args[1]] = (args[0], present.pop(args[0]))
        elif op == "restore":
            key, value = trash.pop(args[0])
            present[key] = value
        elif op == "empty":
            trash.pop(args[0])
        elif op == "import":
            imports[args[0]] = set(BUNDLE_NAMES)
    return present, trash, imports, in_flight


def check_library(root: Path, log: str) -> int:
    """Check the library against its log (see the module docstring); returns the number of done operations."""
    from engine.library import INDEX_NAME, Library
    from engine.vector import load_vector

    present, trash, imports, in_flight = replay(log)
    library = Library(root)
    listing = library.list()
    assert listing.bad_files == [], listing.bad_files
    found = {e.key: value_of(library.load(e.key)) for e in listing.entries}
    visible = [
        p
        for p in root.rglob("*.safetensors")
        if not any(x.startswith(".") for x in p.relative_to(root).parts)
    ]
    assert len(visible) == len(found), "a visible file is not a listed vector"
    for path in visible:
        load_vector(path)
    in_trash = {
        e.key: (e.collection + "/" + e.name if e.collection else e.name, value_of(library.load(str(e.path))))
        for e in library.trash()
    }

    # the operation in flight may or may not have happened, never half
    op, *args = in_flight or (None,)
    maybe_present: set[str] = set()
    maybe_trash: set[str] = set()
    if op == "save":
        maybe_present.add(args[0])
        present.pop(args[0], None)
    elif op in ("duplicate", "combine", "direction"):
        maybe_present.add(args[1])
    elif op == "delete":
        assert (args[0] in found) + any(k == args[0] for k, _ in in_trash.values()) == 1, (
            f"delete {args[0]} lost it or doubled it"
        )
        present.pop(args[0])
        maybe_present.add(args[0])
        maybe_trash.update(t for t, (k, _) in in_trash.items() if k == args[0])
    elif op == "restore":
        key, value = trash.pop(args[0])
        assert key in found or args[0] in in_trash, f"restore {args[0]} lost {key}"
        maybe_present.add(key)
        maybe_trash.add(args[0])
    elif op == "empty":
        trash.pop(args[0])
        maybe_trash.add(args[0])
    elif op == "import":
        imports[args[0]] = set()
        got = {k.split("/", 1)[1] for k in found if k.startswith(args[0] + "/")}
        assert got <= set(BUNDLE_NAMES)
        maybe_present.update(f"{args[0]}/{n}" for n in got)

    for key, value in present.items():
        assert found.get(key) == value, f"{key}: expected value {value}, found {found.get(key)}"
    for collection, names in imports.items():
        for k, name in enumerate(sorted(names)):
            assert found.get(f"{collection}/{name}") == 100.0 + k, f"{collection}/{name} lost"
    expected = set(present) | {f"{c}/{n}" for c, names in imports.items() for n in names}
    assert set(found) - expected <= maybe_present, (
        f"appeared from nowhere: {set(found) - expected - maybe_present}"
    )
    for trash_id, (key, value) in trash.items():
        assert in_trash.get(trash_id) == (key, value), f"trash item {trash_id} ({key}) lost or changed"
    assert set(in_trash) - set(trash) <= maybe_trash, "unexpected trash items"

    # the index is whole and agrees with a fresh scan
    if (root / INDEX_NAME).exists():
        json.loads((root / INDEX_NAME).read_text())
    fresh = Library(root)
    (root / INDEX_NAME).unlink(missing_ok=True)
    assert sorted(fresh.list().keys()) == sorted(found)
    return sum(1 for line in log.splitlines() if line.startswith("done"))


def kill_rounds(zygote, tmp_path: Path, role: str, rounds: int, seed: int, bundle: Path) -> tuple[int, int]:
    """Kill a busy worker `rounds` times at random moments; (operations done in all, kills inside an op)."""
    rng = random.Random(seed)
    done = inside = 0
    for r in range(rounds):
        root, log = tmp_path / f"lib{r}", tmp_path / f"log{r}.txt"
        pid = zygote.fork(
            role=role, library=str(root), log=str(log), prefix=f"r{r}", seed=r, bundle=str(bundle)
        )
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(pid, signal.SIGKILL)
        status = zygote.wait(pid)
        assert status["signal"] == signal.SIGKILL, f"the worker ended on its own: {status}"
        text = log.read_text() if log.exists() else ""
        done += check_library(root, text)
        inside += replay(text)[3] is not None
        shutil.rmtree(root, ignore_errors=True)
    return done, inside


@pytest.mark.parametrize("role", ["trasher", "importer"])
def test_kill_during_trash_restore_copy_combine_and_import(zygote, tmp_path, bundle, role):
    done, _ = kill_rounds(zygote, tmp_path, role, rounds=5, seed=random.randrange(1 << 30), bundle=bundle)
    assert done > 0, "no operation completed before the kills; the test proved nothing"


@pytest.mark.slow
@pytest.mark.parametrize("role", ["trasher", "importer"])
def test_kill_during_trash_restore_copy_combine_and_import_100_times(zygote, tmp_path, bundle, role):
    done, inside = kill_rounds(zygote, tmp_path, role, rounds=100, seed=1234, bundle=bundle)
    assert done > 0 and inside > 0


def test_three_processes_trashing_restoring_and_importing_at_once(zygote, tmp_path, bundle):
    """Two trashers and an importer on one library while this process lists: no vector is lost."""
    root = tmp_path / "shared"
    roles = [("trasher", "a", 40), ("trasher", "b", 40), ("importer", "c", 6)]
    logs = [tmp_path / f"{prefix}.txt" for _, prefix, _ in roles]
    pids = [
        zygote.fork(
            role=role,
            library=str(root),
            log=str(log),
            prefix=prefix,
            seed=i,
            iterations=n,
            bundle=str(bundle),
        )
        for i, ((role, prefix, n), log) in enumerate(zip(roles, logs, strict=True))
    ]
    from engine.library import Library

    library = Library(root)
    deadline = time.monotonic() + 180
    while not all(log.exists() and log.read_text().endswith("finished\n") for log in logs):
        assert time.monotonic() < deadline, "the workers did not finish"
        assert library.list().bad_files == []  # list (and rewrite the index) while they work
        library.trash()
        time.sleep(0.01)
    assert [zygote.wait(pid) for pid in pids] == [{"exit": 0, "signal": None}] * len(pids)
    # each log's vectors are there (names are per process, the trash and the index are shared)
    merged = "\n".join(log.read_text() for log in logs)
    check_library(root, merged)


def test_the_checker_notices_a_lost_or_half_written_vector(zygote, tmp_path, bundle):
    """The replay check is not vacuous: a completed run passes, a truncated or missing vector fails it."""
    from engine.errors import ActAddError

    root, log = tmp_path / "lib", tmp_path / "log.txt"
    pid = zygote.fork(role="trasher", library=str(root), log=str(log), prefix="t", seed=0, iterations=12)
    assert zygote.wait(pid) == {"exit": 0, "signal": None}
    assert check_library(root, log.read_text()) > 12
    victim = root / "t-11.safetensors"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises((AssertionError, ActAddError)):
        check_library(root, log.read_text())
    victim.unlink()
    with pytest.raises(AssertionError, match="t-11"):
        check_library(root, log.read_text())


if __name__ == "__main__":
    if sys.argv[1:] == ["zygote"]:
        serve_forks()
