"""The Capture tab: the layer profile, half-filled pairs, the live pair counter and the layer range."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

pytestmark = pytest.mark.gui


def _edit(panel, row, column, text):
    model = panel.pairs_model
    assert model.setData(model.index(row, column), text, Qt.ItemDataRole.EditRole)


def test_layer_profile_is_measured_on_the_worker_and_marks_the_chosen_layer(loaded_window, qtbot, job_of):
    panel = loaded_window.capture_panel
    n_layers = loaded_window.context.model.info.n_layers
    panel.set_layers(1)
    if panel._profile_job is None and panel.profile is None:
        panel.profile_button.click()
    qtbot.waitUntil(lambda: panel.profile is not None, timeout=30_000)
    assert len(panel.profile.norms) == n_layers
    assert all(norm > 0 for norm in panel.profile.norms)
    colors = panel.profile_colors()
    assert len(colors) == n_layers
    orange = [layer for layer, color in enumerate(colors) if color == colors[1] and color != colors[0]]
    assert orange == [1]
    panel.set_layers(0, 2)  # a range: every chosen bar is marked
    assert len(set(panel.profile_colors())) == 1 and panel.profile_colors()[0] != colors[0]
    # Measured again on request: from the cache this time, and the note says so.
    job = job_of(loaded_window.context.controller, panel.profile_button.click)
    qtbot.waitSignal(job.finished, timeout=30_000).wait()
    assert "cache" in panel.profile_note.text()


def test_layer_profile_click_picks_the_layer(loaded_window, qtbot):
    from matplotlib.backend_bases import MouseEvent

    panel = loaded_window.capture_panel
    panel.measure_profile()
    qtbot.waitUntil(lambda: panel.profile is not None, timeout=30_000)
    panel.set_layers(0)
    panel.profile_canvas.draw()
    ax = panel.profile_figure.get_axes()[0]
    x, y = ax.transData.transform((2, panel.profile.norms[2] / 2))
    MouseEvent("button_press_event", panel.profile_canvas, x, y, button=1)._process()
    assert panel.layers() == [2]


def test_half_filled_pair_is_refused_naming_the_table_row(loaded_window, qtbot, job_of):
    panel = loaded_window.capture_panel
    panel.set_method("mean-diff")
    panel.pairs_model.insertRows(0, 3)
    _edit(panel, 0, 0, "I love it")
    _edit(panel, 0, 1, "I hate it")
    # row 2 stays blank (ignored); row 3 has only its positive side, and its negative is spaces only
    _edit(panel, 2, 0, "Wonderful")
    _edit(panel, 2, 1, "   ")
    panel.name.setText("half")
    controller = loaded_window.context.controller
    submitted = []
    controller.job_submitted.connect(submitted.append)
    panel.capture_button.click()
    assert not submitted  # nothing reached the worker
    title, message = loaded_window.errors[-1]
    assert title == "Capture"
    assert "pair row 3" in message and "negative" in message
    assert "pair row 3" in panel._result.text()
    # Filled in: it captures.
    _edit(panel, 2, 1, "Awful")
    job = job_of(controller, panel.capture_button.click)
    with qtbot.waitSignal(job.done, timeout=30_000) as blocker:
        pass
    assert blocker.args[0].name == "half"


def test_pair_counter_follows_every_edit(loaded_window):
    panel = loaded_window.capture_panel
    panel.set_method("mean-diff")
    note = panel._pairs_note
    panel.pairs_model.insertRows(0, 1)
    assert note.text() == "0 pairs"
    _edit(panel, 0, 0, "yes")
    assert note.text() == "1 pair (1 half-filled)"
    _edit(panel, 0, 1, "no")
    assert note.text() == "1 pair"
    panel.pairs_model.insertRows(1, 1)
    _edit(panel, 1, 0, "good")
    _edit(panel, 1, 1, "bad")
    assert note.text() == "2 pairs"
    _edit(panel, 0, 0, "")
    _edit(panel, 0, 1, "")
    assert note.text() == "1 pair"


def test_first_layer_keeps_the_range_valid_and_visible(loaded_window):
    panel = loaded_window.capture_panel
    panel.set_layers(2)
    assert panel.layers() == [2]
    panel.layer_from.setValue(1)  # a single layer moves: no silent 2-layer vector
    assert panel.layers() == [1]
    assert "single-layer vector at layer 1" in panel.layer_count.text()
    panel.layer_to.setValue(2)  # widened on purpose
    assert panel.layers() == [1, 2]
    assert "2-layer vector" in panel.layer_count.text()
    panel.layer_from.setValue(0)  # a range keeps its end
    assert panel.layers() == [0, 1, 2]
    assert "3-layer" in panel.layer_count.text()
    panel.layer_to.setValue(0)  # never ends before it starts
    assert panel.layers() == [0]
    panel.layer_to.setValue(1)
    panel.layer_from.setValue(2)  # past the end: clamped to a single layer
    assert panel.layers() == [2]
    assert panel.request().layers == [2]
