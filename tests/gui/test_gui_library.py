"""The library tab: listing, greyed incompatible vectors, edits, delete with undo, combine, import/export."""

from __future__ import annotations

import pytest
import torch

from engine.fingerprint import ModelFingerprint
from engine.library import Library
from engine.vector import SteeringVector
from gui.item_models import COMPAT_ROLE, INCOMPATIBLE

pytestmark = pytest.mark.gui


def _wait_listing(qtbot, window, condition, timeout=10_000):
    qtbot.waitUntil(lambda: condition(window.library_panel.visible_keys()), timeout=timeout)


def test_incompatible_vectors_are_greyed_with_the_reason(loaded_window, qtbot, library_dir, capture_in):
    Library(library_dir).save(
        SteeringVector(
            {1: torch.ones(32)},
            method="pca",
            default_mode="all",
            fingerprint=ModelFingerprint("llama", 32, 2, "x"),
        ),
        "narrow",
    )
    capture_in(loaded_window, "love")
    loaded_window.context.refresh_library()
    _wait_listing(qtbot, loaded_window, lambda keys: {"narrow", "love"} <= set(keys))
    panel = loaded_window.library_panel
    row = panel.model.row_of("narrow")
    index = panel.model.index(row, 0)
    assert index.data(COMPAT_ROLE) == INCOMPATIBLE
    assert "hidden size 32, the model has 64" in index.data(3)  # ToolTipRole
    # Not offered for generation or sweeps, and "Use in Generate" refuses it readably.
    assert loaded_window.generate_panel._add_combo.findData("narrow") < 0
    assert not loaded_window.sweep_panel.set_vector("narrow")
    assert panel.select("narrow")
    assert "incompatible" in panel._fields["Fit"].text()
    assert not panel._use.isEnabled()
    panel._fits_only.setChecked(True)
    assert "narrow" not in panel.visible_keys()


def test_edit_delete_undo_and_combine(loaded_window, qtbot, capture_in):
    capture_in(loaded_window, "love", "Love", "Hate")
    capture_in(loaded_window, "joy", "Hate", "Love")  # same token count: combinable
    panel = loaded_window.library_panel
    library = loaded_window.context.library

    panel.select("love")
    panel.tags.setText("mood, demo")
    panel.notes.setPlainText("works at layer 1")
    panel.save_tags_and_notes()
    qtbot.waitUntil(lambda: loaded_window.context.entry("love").notes == "works at layer 1", timeout=10_000)
    assert library.entry("love").tags == ("mood", "demo")
    panel.search.setText("layer 1")  # the filter searches notes too
    assert panel.visible_keys() == ["love"]
    panel.search.setText("")

    panel.rename("love", "love-hate")
    _wait_listing(qtbot, loaded_window, lambda keys: "love-hate" in keys and "love" not in keys)
    qtbot.waitUntil(lambda: panel.selected_keys() == ["love-hate"], timeout=5000)

    panel.delete_selected()
    _wait_listing(qtbot, loaded_window, lambda keys: "love-hate" not in keys)
    assert panel.undo_button.isEnabled()
    panel.undo_delete()
    _wait_listing(qtbot, loaded_window, lambda keys: "love-hate" in keys)
    assert library.entry("love-hate").tags == ("mood", "demo")

    panel.combine([(1.0, "love-hate"), (0.5, "joy")], "love+joy")
    _wait_listing(qtbot, loaded_window, lambda keys: "love+joy" in keys)
    assert library.entry("love+joy").method == "combined"

    panel.to_direction("joy", "joy-dir")
    _wait_listing(qtbot, loaded_window, lambda keys: "joy-dir" in keys)
    assert library.entry("joy-dir").shape == [64]
    assert not loaded_window.errors


def test_a_refused_operation_is_a_readable_error(loaded_window, qtbot, capture_in):
    capture_in(loaded_window, "love")
    capture_in(loaded_window, "hate", "Hate", "Love")
    panel = loaded_window.library_panel
    panel.rename("love", "hate")  # taken
    qtbot.waitUntil(lambda: bool(loaded_window.errors), timeout=10_000)
    assert "already exists" in loaded_window.errors[-1][1]
    assert "--force" not in loaded_window.errors[-1][1]  # a command-line hint means nothing in the app
    assert loaded_window.error_dialog() is not None


def test_use_in_generate_adds_the_vector(loaded_window, qtbot, capture_in):
    capture_in(loaded_window, "love")
    panel = loaded_window.library_panel
    panel.select("love")
    panel.use_selected()
    rows = loaded_window.generate_panel.vector_rows()
    assert [r.entry.key for r in rows] == ["love"]
    assert rows[0].coefficient() == 4.0 and rows[0].mode.currentText() == "front"
    assert loaded_window.tabs.currentWidget() is loaded_window.generate_panel


def test_bundle_and_gguf_round_trip(loaded_window, qtbot, capture_in, tmp_path):
    capture_in(loaded_window, "love", layer=2)  # llama.cpp's direction.N is our layer N+1: layer 1 can't go
    panel = loaded_window.library_panel
    bundle = tmp_path / "share.zip"
    gguf = tmp_path / "love.gguf"
    panel.export(["love"], bundle)
    panel.export(["love"], gguf)
    qtbot.waitUntil(lambda: bundle.exists() and gguf.exists(), timeout=10_000)
    qtbot.waitUntil(lambda: loaded_window.context.tasks.pending == 0, timeout=10_000)
    panel.select("love")
    panel.delete_selected()
    _wait_listing(qtbot, loaded_window, lambda keys: "love" not in keys)
    panel.import_file(bundle)
    _wait_listing(qtbot, loaded_window, lambda keys: "love" in keys)
    panel.import_file(gguf)
    # The GGUF import is named after the file; it exists already, so it is refused readably.
    qtbot.waitUntil(lambda: bool(loaded_window.errors), timeout=10_000)
    assert "exists" in loaded_window.errors[-1][1]
    (tmp_path / "love-control.gguf").write_bytes(gguf.read_bytes())
    panel.import_file(tmp_path / "love-control.gguf")
    _wait_listing(qtbot, loaded_window, lambda keys: "love-control" in keys)
    assert loaded_window.context.library.entry("love-control").shape == [64]
