"""The Sweep tab's cells: each with its interval, picked from the plot or the table, applied to Generate;
no "best" from 1 hit in 6; share axes from 0."""

from __future__ import annotations

import math

import pytest
import torch
from matplotlib.backend_bases import MouseEvent

from engine.experiments import stats
from engine.experiments.sweep import SweepCell, SweepResult, SweepSpec
from engine.vector import SteeringVector
from gui.context import SteeringChoice
from gui.widgets.sweep_cells import cell_interval, judge, suggest_region

pytestmark = pytest.mark.gui


def _cell(layer, coeff, hits, n, degenerate=False):
    return SweepCell(layer, coeff, hits / n, 0.0, degenerate, [f"sample {k}" for k in range(n)])


def _result(cells, coeffs=(0.0, 2.0, 4.0)):
    spec = SweepSpec(vector=SteeringVector({1: torch.ones(4)}), coeffs=list(coeffs), targets=["x"])
    return SweepResult(spec=spec, cells=cells)


def test_one_hit_in_six_is_not_called_best():
    result = _result([_cell(1, 0.0, 0, 6), _cell(1, 2.0, 1, 6), _cell(1, 4.0, 0, 6)])
    low, high = cell_interval(result, result.cells[1])
    assert (low, high) == stats.wilson(1, 6) and 0 < low < 0.05 and 0.5 < high < 0.6
    verdict = judge(result)
    assert verdict.best is None and verdict.top is result.cells[1]
    text = suggest_region(result)
    assert text.startswith("No cell is clearly better than no steering")
    assert "1 of 6" in text and "95% CI 0.03" in text
    # Without an unsteered cell, 1 of 6 is still within what 0 hits allow.
    assert judge(_result([_cell(1, 2.0, 1, 6), _cell(1, 4.0, 0, 6)])).best is None


def test_a_steady_share_beats_a_lucky_one():
    lucky, steady = _cell(1, 2.0, 1, 2), _cell(1, 4.0, 10, 24)  # 0.5 of 2 vs 0.42 of 24
    result = _result([_cell(1, 0.0, 0, 24), lucky, steady])
    verdict = judge(result)
    assert verdict.best is steady
    assert suggest_region(result).startswith("Best: layer 1, c = 4 (")


def test_engine_intervals_are_used_when_a_cell_has_them():
    cell = _cell(1, 2.0, 3, 6)
    cell.ci_low, cell.ci_high = 0.25, 0.75  # what the engine's cells carry once the suggest work is in
    assert cell_interval(_result([cell]), cell) == (0.25, 0.75)


def test_panel_shows_intervals_and_keeps_share_axis_at_zero(window):
    panel = window.sweep_panel
    result = _result([_cell(1, 0.0, 0, 6), _cell(1, 2.0, 1, 6), _cell(1, 4.0, 0, 6), _cell(2, 2.0, 0, 6)])
    panel._on_done(result)
    line_ax = panel.figure.get_axes()[0]
    assert line_ax.get_ylim()[0] == 0.0
    assert line_ax.containers  # the error bars
    table = panel.cell_table
    assert table.rowCount() == 4
    rows = {(table.item(r, 0).text(), table.item(r, 1).text()): r for r in range(table.rowCount())}
    lucky = rows[("1", "2")]
    assert table.item(lucky, 3).text() == "0.03–0.56"
    assert table.item(lucky, 5).text() == "top (not clearly better)"
    assert not any(table.item(r, 5).text().startswith("★") for r in range(table.rowCount()))
    assert panel.suggestion.text().startswith("No cell is clearly better")


def _configure(window):
    panel = window.sweep_panel
    assert panel.set_vector("love")
    panel.form.set_units("raw")  # these cells are read as raw c (test_gui_sweep_strength: strengths)
    panel.coeff_from.setValue(0)
    panel.coeff_to.setValue(4)
    panel.coeff_count.setValue(2)
    panel.sweep_layers.setChecked(True)
    panel.layer_from.setValue(0)
    panel.layer_to.setValue(1)
    panel.metric.setCurrentText("target-words")
    panel.targets.setText("love, wedding")
    panel.samples.setValue(2)
    panel.max_tokens.setValue(4)
    return panel


def test_click_a_cell_to_read_its_samples_and_apply_it_to_generate(loaded_window, qtbot, capture_in, job_of):
    capture_in(loaded_window, "love", layer=1)
    panel = _configure(loaded_window)
    job = job_of(loaded_window.context.controller, panel.run_button.click)
    qtbot.waitSignal(job.done, timeout=60_000).wait()
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=5000)
    result = panel.result
    assert panel.cell_table.rowCount() == len(result.cells) == 4
    assert not panel.apply_button.isEnabled()

    # A click on the heatmap's (layer 1, c = 4) cell.
    panel.canvas.draw()
    heat_ax = panel.figure.get_axes()[1]
    x, y = heat_ax.transData.transform((1, 1))  # column 1 (c = 4), row 1 (layer 1)
    MouseEvent("button_press_event", panel.canvas, x, y, button=1)._process()
    chosen = panel.chosen_cell()
    assert (chosen.layer, chosen.coeff) == (1, 4.0)
    text = panel.cell_samples.toPlainText()
    assert text.startswith("layer 1, c = 4") and chosen.samples[0] in text
    assert f"of {len(chosen.samples)}" in text  # its share with the interval

    # The table picks too.
    row = next(r for r, c in enumerate(panel.cell_table.cells()) if (c.layer, c.coeff) == (0, 0.0))
    panel.cell_table.selectRow(row)
    assert (panel.chosen_cell().layer, panel.chosen_cell().coeff) == (0, 0.0)
    panel.cell_table.selectRow(next(r for r, c in enumerate(panel.cell_table.cells()) if c is chosen))

    assert panel.apply_button.isEnabled()
    with qtbot.waitSignal(loaded_window.context.apply_steering, timeout=5000) as blocker:
        panel.apply_button.click()
    choice = blocker.args[0]
    assert isinstance(choice, SteeringChoice)
    entry = loaded_window.context.entry("love")
    assert choice == SteeringChoice(
        vector_key="love", vector_path=str(entry.path), coeff=4.0, layer=1, mode=None, exact=True
    )
    line_ax = panel.figure.get_axes()[0]
    assert line_ax.get_ylim()[0] == 0.0 and not math.isnan(line_ax.get_ylim()[1])
