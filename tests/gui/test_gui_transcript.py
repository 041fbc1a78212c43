"""Transcripts carry every setting, and the exported script reproduces the panes (live changes included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.transcript import Transcript

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parents[2]


def test_transcript_files_and_script_reproduce_a_live_steered_generation(
    loaded_window, qtbot, capture_in, tmp_path, run_generation
):
    entry = capture_in(loaded_window)
    panel = loaded_window.generate_panel
    row = panel.add_vector(entry)
    row.set_coefficient(0.0)
    row.mode.setCurrentText("all")
    panel.prompt.setPlainText("I think that you")
    panel.max_tokens.setValue(40)
    panel.seed.setValue(7)  # paper sampling: temperature 1, top-p 0.3, frequency penalty 1
    controller = loaded_window.context.controller
    controller.worker.pace_s = 0.01
    moved = []

    def on_token(delta):
        if delta.step >= 2 and not moved:
            moved.append(True)
            row.spin.setValue(8.0)

    run_generation(loaded_window, on_token=on_token)
    transcript = panel.transcript
    assert transcript.live_changes and transcript.sampling["seed"] == 7

    md, js, py = tmp_path / "t.md", tmp_path / "t.json", tmp_path / "reproduce.py"
    panel.save_transcript(md)
    panel.save_transcript(js)
    panel.export_script(py)
    qtbot.waitUntil(lambda: md.exists() and js.exists() and py.exists(), timeout=10_000)
    qtbot.waitUntil(lambda: loaded_window.context.tasks.pending == 0, timeout=10_000)
    markdown = md.read_text(encoding="utf-8")
    assert "seed 7" in markdown and "top-p 0.3" in markdown and "from token" in markdown
    assert entry.path.name in markdown
    again = Transcript.from_json(js.read_text(encoding="utf-8"))
    assert again.outputs == transcript.outputs and again.vectors[0]["mode"] == "all"

    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACTADD_TORCH_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(py), "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    texts = json.loads(out.stdout.strip().splitlines()[-1])
    assert texts == {"unsteered": transcript.outputs["unsteered"], "steered": transcript.outputs["steered"]}
