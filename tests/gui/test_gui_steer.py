"""The Generate tab's strengths and live markers, and how Generate follows the library (issue 16)."""

from __future__ import annotations

import pytest
from exported_scripts import run_exported_script
from PySide6.QtGui import QTextCursor

from engine.generation import SamplingConfig, generate
from engine.library import Library
from engine.residual_norms import cache_file, residual_norms
from engine.steering import Steer
from engine.strength import relative_norms
from engine.vector import load_vector
from gui.widgets.vector_row import STRENGTH_LIMIT, STRENGTH_STEPS

pytestmark = pytest.mark.gui


def _capture_layers(qtbot, window, name, first, last):
    """Drive the capture panel for an ActAdd vector over layers first..last."""
    panel = window.capture_panel
    panel.set_method("actadd")
    panel.positive.setText("Love")
    panel.negative.setText("Hate")
    panel.set_layers(first, last)
    panel.name.setText(name)
    with qtbot.waitSignal(window.library_panel.refreshed, timeout=20_000):
        panel.capture_button.click()
    qtbot.waitUntil(lambda: name in window.library_panel.visible_keys(), timeout=10_000)
    return window.context.entry(name)


def _row_with_scale(qtbot, window, entry, mode="all"):
    panel = window.generate_panel
    row = panel.add_vector(entry)
    row.mode.setCurrentText(mode)
    qtbot.waitUntil(lambda: row.scale() is not None, timeout=20_000)  # norms measured, scales read
    return row


def _statuses(window) -> list[str]:
    messages: list[str] = []
    window.context.status.connect(messages.append)
    return messages


def test_the_slider_is_a_normalised_strength_resolved_exactly_to_c(
    loaded_window, qtbot, run_generation, tmp_path
):
    window = loaded_window
    entry = _capture_layers(qtbot, window, "love", 1, 2)  # two layers: the strength sets a profile
    row = _row_with_scale(qtbot, window, entry)
    ctx = window.context
    loaded = ctx.controller.worker.loaded
    norms = ctx.residual_norms
    # Measured on the worker once per model and cached on disk with the model's fingerprint.
    assert norms == residual_norms(loaded).norms and len(norms) == 3
    assert cache_file(loaded.fingerprint).is_file()
    vector = load_vector(entry.path)
    relative = relative_norms(vector, norms, mode="all")
    assert row.norm_label.text() == "‖v‖ / typical residual (all mode): " + ", ".join(
        f"L{layer}: {r:.2f}×" for layer, r in sorted(relative.items())
    )

    # The default scale: a strength in 0.01 steps over ±1.5.
    row.set_strength(0.5)
    assert row.shows_strength() and row.unit.text() == "s"
    assert row.slider.maximum() == round(STRENGTH_LIMIT * STRENGTH_STEPS) and row.spin.singleStep() == 0.01
    assert row.slider.value() == 50 and row.spin.value() == 0.5
    expected = Steer.from_strength(vector, 0.5, norms, mode="all")
    active = window.generate_panel.request().vectors[0]
    assert active.coeff == expected.coeff and active.profile == expected.profile and active.strength == 0.5
    assert set(expected.profile) == {1, 2} and expected.coeff != 0.5
    assert row.readout.text() == f"c = {expected.coeff:.3g}"

    # Dragging the slider is a strength too.
    row.slider.setValue(-40)
    assert row.coefficient() == Steer.from_strength(vector, -0.4, norms, mode="all").coeff

    # The raw c is one click away, and the slider's range follows the scale.
    panel = window.generate_panel
    panel.raw_scale.setChecked(True)
    assert not row.shows_strength() and row.unit.text() == "c"
    assert row.slider.maximum() == 10 * max(10, round(3 * abs(entry.default_coeff)))
    assert row.spin.value() == pytest.approx(row.coefficient(), abs=0.005)
    assert row.readout.text() == "= -0.40 of residual"
    raw = panel.request().vectors[0]
    assert raw.strength is None and raw.profile is None and raw.coeff == row.coefficient()
    row.slider.setValue(25)  # 2.5 in raw c
    assert row.coefficient() == 2.5
    panel.raw_scale.setChecked(False)

    # Generate at strength 0.5: the steered pane is what the engine gives for Steer.from_strength.
    row.set_strength(0.5)
    panel.temperature.setValue(0.0)
    panel.max_tokens.setValue(12)
    panel.prompt.setPlainText("I think that you")
    transcript = run_generation(window)
    assert transcript.vectors[0]["strength"] == 0.5
    assert transcript.vectors[0]["coeff"] == expected.coeff
    sampling = SamplingConfig(**transcript.sampling)
    reference = generate(loaded, "I think that you", [[], [expected]], sampling)
    assert transcript.outputs["steered"] == reference.rows[1].text
    assert transcript.outputs["steered"] != transcript.outputs["unsteered"]
    assert "strength 0.5" in transcript.to_markdown()
    # The exported script replays the same steering: the resolved c and the per-layer profile.
    script = tmp_path / "reproduce.py"
    script.write_text(transcript.to_script(), encoding="utf-8")
    assert "profile={1: 1.0, 2: " in script.read_text(encoding="utf-8")
    texts = run_exported_script(script, timeout=120)
    assert texts["steered"] == transcript.outputs["steered"]


def test_ablate_has_no_strength_and_the_row_says_so(loaded_window, qtbot, capture_in):
    entry = capture_in(loaded_window)
    row = _row_with_scale(qtbot, loaded_window, entry)
    row.set_coefficient(3.0)
    row.mode.setCurrentText("ablate")
    assert row.scale() is None and row.unit.text() == "c" and row.coefficient() == 3.0
    assert "raw c" in row.norm_label.text()
    assert loaded_window.generate_panel.request().vectors[0].strength is None


def test_a_live_change_shows_a_readable_marker(loaded_window, qtbot, capture_in, run_generation):
    window = loaded_window
    entry = capture_in(window)
    row = _row_with_scale(qtbot, window, entry)
    row.set_strength(0.0)
    panel = window.generate_panel
    panel.temperature.setValue(0.0)
    panel.max_tokens.setValue(40)
    controller = window.context.controller
    controller.worker.pace_s = 0.01
    moved = []

    def on_token(event):
        if event.step >= 3 and not moved:
            moved.append(True)
            row.spin.setValue(0.4)  # a user typing a strength while text streams

    run_generation(window, on_token=on_token)
    [change] = panel.transcript.live_changes
    assert change["value"] == 0.4 * row.scale().per_unit
    text = panel.steered.toPlainText()
    marker = "⟨love → 0.40 of residual⟩"
    assert marker in text and "c0=" not in text
    cursor = QTextCursor(panel.steered.document())
    cursor.setPosition(text.index(marker) + 2)
    tip = cursor.charFormat().toolTip()
    assert "love steers at 0.40 of residual" in tip and f"raw c = {change['value']:g}" in tip


def test_renaming_moving_and_deleting_an_active_vector_follow_into_generate(
    loaded_window, qtbot, capture_in, run_generation
):
    window = loaded_window
    entry = capture_in(window)
    library = window.library_panel
    panel = window.generate_panel
    sweep = window.sweep_panel
    row = panel.add_vector(entry)
    row.set_coefficient(3.5)
    row.mode.setCurrentText("all")
    panel.max_tokens.setValue(6)
    assert sweep.set_vector("love")
    statuses = _statuses(window)

    library.rename("love", "moods/love-2")  # a move into a collection and a rename at once
    qtbot.waitUntil(lambda: row.entry.key == "moods/love-2", timeout=10_000)
    qtbot.waitUntil(lambda: "moods/love-2" in library.visible_keys(), timeout=10_000)
    assert row.entry.path.is_file() and row.enabled.text() == "moods/love-2"
    assert sweep._vector.currentData() == "moods/love-2"  # the sweep keeps the same vector chosen
    transcript = run_generation(window)
    assert transcript is not None and transcript.vectors[0]["path"] == str(row.entry.path)
    assert statuses[-1] == "Done"

    # Deleting it removes the row; undoing the delete brings it back as it was.
    assert library.select("moods/love-2")
    library.delete_selected()
    qtbot.waitUntil(lambda: not panel.vector_rows(), timeout=10_000)
    assert any("Removed the deleted vector moods/love-2" in s for s in statuses)
    library.undo_button.click()
    qtbot.waitUntil(lambda: len(panel.vector_rows()) == 1, timeout=10_000)
    [back] = panel.vector_rows()
    assert back.entry.key == "moods/love-2" and back.entry.path.is_file()
    assert back.coefficient() == 3.5 and back.mode.currentText() == "all"
    assert run_generation(window) is not None and statuses[-1] == "Done"


def test_a_failed_generation_never_says_done(loaded_window, qtbot, capture_in, run_generation):
    window = loaded_window
    entry = capture_in(window)
    panel = window.generate_panel
    panel.add_vector(entry)
    panel.max_tokens.setValue(6)
    assert run_generation(window) is not None
    shown = panel.steered.toPlainText()
    statuses = _statuses(window)

    # An unreadable file: the worker fails, the status says so.
    entry.path.write_bytes(b"not a vector")
    run_generation(window)
    assert window.errors[-1][0] == "Generation failed"
    assert panel.transcript is None and statuses[-1] == "Generation failed"

    # A file gone behind the app's back: refused before starting, the panes are kept.
    panel.steered.clear_text("kept")
    shown = panel.steered.toPlainText()
    entry.path.unlink()
    panel.generate_button.click()
    assert window.errors[-1][0] == "A vector's file is missing" and "love" in window.errors[-1][1]
    assert not panel.is_generating() and panel.steered.toPlainText() == shown


def test_the_library_buttons_stay_put_when_the_undo_bar_appears(loaded_window, qtbot, capture_in):
    window = loaded_window
    capture_in(window, "love")
    capture_in(window, "joy", "Joy", "Sorrow")
    library = window.library_panel
    window.tabs.setCurrentWidget(library)
    assert library.select("love")
    qtbot.wait(50)
    from PySide6.QtWidgets import QPushButton

    # the action and transfer buttons (the details pane's own button moves with what it shows: after a
    # delete it shows another vector or none)
    buttons = [
        b for b in library.findChildren(QPushButton) if b.isVisible() and not library.details.isAncestorOf(b)
    ]
    assert len(buttons) >= 12
    before = {b.text(): b.mapTo(library, b.rect().topLeft()) for b in buttons}
    sizes = {b.text(): b.size() for b in buttons}
    assert not library.undo_bar.isVisible()
    library.delete_selected()
    qtbot.waitUntil(library.undo_bar.isVisible, timeout=10_000)
    qtbot.wait(50)
    assert "love" in library._undo_label.text()
    after = {b.text(): b.mapTo(library, b.rect().topLeft()) for b in buttons if b.isVisible()}
    assert after == before
    assert {b.text(): b.size() for b in buttons} == sizes
    library.undo_button.click()
    qtbot.waitUntil(lambda: not library.undo_bar.isVisible(), timeout=10_000)
    qtbot.waitUntil(lambda: "love" in library.visible_keys(), timeout=10_000)


def test_a_vector_captured_under_the_old_bos_rule_is_warned_about(
    window, qtbot, tmp_path, load_model_in, capture_in, run_generation
):
    from tiny_models import build_tiny_llama_with_tokenizer

    # A tokenizer with a BOS that plain text doesn't begin with (SmolLM2's kind).
    load_model_in(window, build_tiny_llama_with_tokenizer("chat-bos", tmp_path / "chat-bos"))
    entry = capture_in(window, "love")
    vector = load_vector(entry.path)
    tokenizer = window.context.model.tokenizer
    provenance = {k: v for k, v in vector.provenance.items() if k not in ("bos_rule", "bos_prepended")}
    provenance["positive_ids"] = [tokenizer.bos_token_id, *provenance["positive_ids"]]
    Library(window.context.library.root).save(
        vector.replace(provenance=provenance, name="old-love"), "old-love"
    )
    window.context.refresh_library()
    qtbot.waitUntil(lambda: window.context.entry("old-love") is not None, timeout=10_000)
    panel = window.generate_panel
    panel.max_tokens.setValue(4)

    panel.add_vector(entry)
    assert run_generation(window) is not None
    assert not panel.warnings_label.isVisibleTo(panel)  # captured under the rule: nothing to say

    panel.add_vector(window.context.entry("old-love"))
    assert run_generation(window) is not None
    assert panel.warnings_label.isVisibleTo(panel)
    warning = panel.warnings_label.text()
    assert "'old-love'" in warning and "position 0 is no longer a shared BOS" in warning
    assert "'love'" not in warning


def test_the_library_details_compare_a_vector_with_the_models_residual(loaded_window, qtbot, capture_in):
    from engine.strength import relative_norm_report

    window = loaded_window
    entry = capture_in(window, "love")
    qtbot.waitUntil(lambda: window.context.residual_norms is not None, timeout=20_000)
    library = window.library_panel
    assert library.select("love")
    report = relative_norm_report(load_vector(entry.path), window.context.residual_norms)
    assert isinstance(report, dict) and list(report) == ["1"]
    expected = f"× typical residual here (the vector's default mode): L1: {report['1']:.2f}"
    qtbot.waitUntil(lambda: expected in library._fields["Norms"].text(), timeout=10_000)


def test_apply_to_generate_takes_over_a_sweep_cells_setting(loaded_window, qtbot, capture_in):
    from gui.context import SteeringChoice

    entry = capture_in(loaded_window, name="applied", layer=1)
    other = capture_in(loaded_window, name="other", layer=1)
    panel = loaded_window.generate_panel
    panel.add_vector(other)
    choice = SteeringChoice(
        vector_key="applied", vector_path=str(entry.path), coeff=-3.5, layer=2, mode="all"
    )
    loaded_window.context.apply_steering.emit(choice)
    rows = panel.vector_rows()
    assert [r.entry.key for r in rows] == ["applied"]  # the cell's vector alone
    active = rows[0].active_vector()
    assert active.coeff == pytest.approx(-3.5) and active.mode == "all" and active.at_layer == 2
    assert loaded_window.tabs.currentWidget() is panel
    statuses = _statuses(loaded_window)
    loaded_window.context.apply_steering.emit(SteeringChoice("gone", "/no/such.safetensors", 1.0))
    assert any("no longer in the library" in m for m in statuses)
    assert [r.entry.key for r in panel.vector_rows()] == ["applied"]  # nothing changed
