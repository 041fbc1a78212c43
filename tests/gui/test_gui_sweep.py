"""The sweep tab: a layer x coefficient sweep runs on the worker, plots live, suggests a region, exports."""

from __future__ import annotations

import csv

import pytest
import torch
from signal_waits import wait_for_emission

from engine.experiments.sweep import SweepCell, SweepResult, SweepSpec
from engine.vector import SteeringVector
from gui.widgets.coeff_range import linspace
from gui.widgets.sweep_cells import suggest_region

pytestmark = pytest.mark.gui


def _configure(window, metric, *, layers=True):
    panel = window.sweep_panel
    assert panel.set_vector("love")
    panel.coeff_from.setValue(-4)
    panel.coeff_to.setValue(4)
    panel.coeff_count.setValue(3)
    panel.sweep_layers.setChecked(layers)
    panel.layer_from.setValue(0)
    panel.layer_to.setValue(2)
    panel.metric.setCurrentText(metric)
    panel.targets.setText("love, wedding")
    panel.samples.setValue(1)
    panel.max_tokens.setValue(6)
    return panel


def test_sweep_finishes_plots_and_suggests(loaded_window, qtbot, capture_in, tmp_path, job_of):
    capture_in(loaded_window, "love")
    panel = _configure(loaded_window, "target-prob")
    controller = loaded_window.context.controller
    partials = []
    job = job_of(controller, panel.run_button.click)
    job.partial.connect(partials.append)
    qtbot.waitSignal(job.done, timeout=60_000).wait()
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=5000)
    result = panel.result
    assert not result.cancelled
    assert sorted({c.layer for c in result.cells}) == [0, 1, 2]
    assert len(result.cells) == 9
    assert len(partials) == 3  # the plot filled in layer by layer
    assert panel.progress.value() == 1000
    # Two axes: the metric against c, and the layer x coefficient heatmap (+ its colour bar).
    axes = panel.figure.get_axes()
    assert len(axes) >= 2 and len(axes[0].get_lines()) >= 3
    assert axes[1].images and axes[1].images[0].get_array().shape == (3, 3)
    # A verdict on the top cell: "Best: ..." only when its interval clears the unsteered cell (test_gui_sweep_cells)
    assert panel.suggestion.text().startswith(("Best: layer", "No cell is clearly better than no steering"))

    for name in ("sweep.csv", "sweep.png", "sweep.py"):
        panel.export(tmp_path / name)
    qtbot.waitUntil(
        lambda: all((tmp_path / n).exists() for n in ("sweep.csv", "sweep.png", "sweep.py")), timeout=20_000
    )
    qtbot.waitUntil(lambda: loaded_window.context.tasks.pending == 0, timeout=20_000)
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert len(rows) == 9 and rows[0]["metric"] == "target-prob"
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    script = (tmp_path / "sweep.py").read_text()
    compile(script, "sweep.py", "exec")
    assert "run_sweep" in script and "love.safetensors" in script


def test_sampled_sweep_can_be_stopped(loaded_window, qtbot, capture_in, job_of):
    capture_in(loaded_window, "love")
    panel = _configure(loaded_window, "target-words")
    panel.max_tokens.setValue(60)
    controller = loaded_window.context.controller
    controller.worker.pace_s = 0.01
    job = job_of(controller, panel.run_button.click)
    wait_for_emission(qtbot, job.progress, timeout=20_000)
    with qtbot.waitSignals([job.done, job.aborted], order="strict", timeout=20_000):
        panel.stop_button.click()
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=5000)
    assert panel.result.cancelled
    assert panel.run_button.isEnabled()


def test_linspace_and_region_text():
    assert linspace(-8, 8, 5) == [-8, -4, 0, 4, 8]
    assert linspace(2, 2, 1) == [2]

    spec = SweepSpec(vector=SteeringVector({1: torch.ones(4)}), coeffs=[2.0, 4.0, 8.0], targets=["x"])
    cells = [
        SweepCell(1, 2.0, 0.7, 0.0, False, []),
        SweepCell(1, 4.0, 0.8, 0.0, False, []),
        SweepCell(1, 8.0, 0.9, 0.5, True, []),
        SweepCell(0, 4.0, 0.1, 0.0, False, []),
    ]
    text = suggest_region(SweepResult(spec=spec, cells=cells))
    assert text.startswith("Best: layer 1, c = 4")
    assert "1 degenerate cell" in text and "|c| = 8" in text


def test_close_during_a_sweep_is_fast(loaded_window, qtbot, capture_in, job_of):
    import time

    capture_in(loaded_window, "love")
    panel = _configure(loaded_window, "target-words")
    panel.max_tokens.setValue(100)
    controller = loaded_window.context.controller
    controller.worker.pace_s = 0.05
    job = job_of(controller, panel.run_button.click)
    wait_for_emission(qtbot, job.progress, timeout=20_000)
    started = time.monotonic()
    loaded_window.close()
    assert time.monotonic() - started < 1.0
    assert not controller._thread.isRunning()


def test_metric_and_targets_follow_the_chosen_vector(loaded_window, capture_in):
    capture_in(loaded_window, "love")
    capture_in(loaded_window, "weddings", positive=" weddings", negative=" ")
    panel = loaded_window.sweep_panel
    assert panel.set_vector("love")
    assert panel.metric.currentText() == "sentiment"  # Love - Hate: VADER, not wedding words
    assert not panel.targets.isEnabled() and panel.samples.isEnabled()
    assert panel.set_vector("weddings")
    assert panel.metric.currentText() == "target-words"
    assert panel.targets.text().startswith("wedding, weddings")
    assert panel.request().spec.metric == "target-words"
