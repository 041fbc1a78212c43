"""The fork server that the kill -9 tests share (tests/test_library.py, tests/test_crash_safety.py).

A script run with `zygote` imports the engine once, prints "ready", then reads JSON commands on stdin and
answers one JSON line each (`serve_forks`):
    {"cmd": "fork", ...}         -> {"pid": PID}   (a forked child runs the command; the test may SIGKILL it)
    {"cmd": "wait", "pid": PID}  -> {"exit": CODE or null, "signal": SIGNAL or null}
    {"cmd": "quit"}
`Zygote` is the test side that starts such a script and talks to it; `Log` is the append-only log the
children write (one `write` per line, O_APPEND, so what it says is done was done before a kill).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Log:
    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def __call__(self, *words) -> None:
        os.write(self.fd, (" ".join(str(w) for w in words) + "\n").encode())


def serve_forks(run_child: Callable[[dict], None]) -> None:
    """Answer fork/wait/quit commands on stdin; a forked child runs `run_child(command)` and exits."""
    print("ready", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            return
        if command["cmd"] == "fork":
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    run_child(command)
                except BaseException as exc:
                    print(f"child failed: {exc!r}", file=sys.stderr, flush=True)
                    code = 1
                os._exit(code)
            print(json.dumps({"pid": pid}), flush=True)
        elif command["cmd"] == "wait":
            _, status = os.waitpid(int(command["pid"]), 0)
            print(
                json.dumps(
                    {
                        "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                    }
                ),
                flush=True,
            )


class Zygote:
    """Runs `script zygote` (a fork server) and forks a fresh child per round through it."""

    def __init__(self, script: str | Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def ask(self, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def fork(self, **command) -> int:
        return self.ask(cmd="fork", **command)["pid"]

    def wait(self, pid: int) -> dict:
        return self.ask(cmd="wait", pid=pid)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
        self.proc.wait(timeout=30)
