"""Running a transcript's exported reproduce script (`Transcript.to_script`) the way a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_exported_script(script: Path, timeout: float = 180) -> dict:
    """Run `script --json` in a fresh interpreter (one torch thread) and return its texts:
    {"steered": ..., "unsteered": ...}, the last line it prints."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACTADD_TORCH_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(script), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
