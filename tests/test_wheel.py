"""The built wheel is complete: installed into a fresh virtual environment (no checkout on its path), it
carries the engine, the GUI package and resources/ (the demo model, the icons), and `generate --model demo`
runs from there.

The venv sees this interpreter's site-packages (`--system-site-packages`) for torch and transformers, and
the wheel is installed with `--no-deps --no-index`, so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env}, check=False
    )


def test_the_wheel_installs_and_generates_with_the_demo_model(tmp_path):
    # Build from a copy, so the checkout gets no build/ or egg-info folders.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "main.py"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("engine", "gui", "resources"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    dist = tmp_path / "dist"
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
        ],
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = dist.glob("actadd_studio-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = [n for n in names if ".data/data/share/actadd-studio/" in n]
    assert any(n.endswith("demo-model/model.safetensors") for n in data), data
    assert any(n.endswith("icons/actadd-studio.svg") for n in data), data
    assert "engine/library/__init__.py" in names and "gui/jobs.py" in names

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    installed = _run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        cwd=tmp_path,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing can come from it by accident
    elsewhere.mkdir()
    where = _run(
        [str(python), "-c", "import engine, gui.jobs; from engine.models import DEMO_MODEL_DIR; "
         "from engine.resources import resources_dir; "
         "print(engine.__file__); print(DEMO_MODEL_DIR); print(resources_dir() / 'icons')"],
        cwd=elsewhere,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr[-3000:]
    engine_file, demo_dir, icons = (Path(line) for line in where.stdout.split())
    assert venv in engine_file.parents and venv in demo_dir.parents, where.stdout
    assert (demo_dir / "config.json").is_file() and (icons / "actadd-studio.png").is_file()

    script = venv / ("Scripts/actadd-studio.exe" if os.name == "nt" else "bin/actadd-studio")
    result = _run(
        [str(script), "generate", "--model", "demo", "--prompt", "Yesterday we went to the market",
         "--max-new-tokens", "6", "--temperature", "0", "--json"],
        cwd=elsewhere,
        HF_HUB_OFFLINE="1",
        ACTADD_LIBRARY=str(tmp_path / "library"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    assert payload["finish_reason"] == "length" and len(payload["token_ids"]) == 6, payload
    assert payload["text"].strip(), payload
