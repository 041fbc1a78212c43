"""The Sweep tab's "Suggest settings": the engine's search on the worker, its result applied to Generate,
Stop, and clear messages for what it cannot do."""

from __future__ import annotations

import pytest

from engine.vector import load_vector
from gui.context import SteeringChoice

pytestmark = pytest.mark.gui

PROMPT = "I went up to my friend and said"


@pytest.fixture
def demo_window(window, load_model_in):
    """The main window with the bundled demo model (trained so that ActAdd works) loaded."""
    load_model_in(window, "demo")
    return window


def _configure(window, key, layer, *, tokens=3, samples=2, prompts=(PROMPT,)):
    panel = window.sweep_panel
    assert panel.set_vector(key)
    panel.sweep_layers.setChecked(True)  # search this layer only: the test knows which layer it finds
    panel.layer_from.setValue(layer)
    panel.layer_to.setValue(layer)
    panel.form.prompts.setPlainText("\n".join(prompts))
    panel.samples.setValue(samples)
    panel.max_tokens.setValue(tokens)
    return panel.suggest_box


def _suggest(window, qtbot, job_of, box, timeout=60_000):
    job = job_of(window.context.controller, box.suggest_button.click)
    assert job.kind == "suggest"
    qtbot.waitSignal(job.finished, timeout=timeout).wait()
    return box.suggestion


def test_suggest_names_a_setting_that_generate_uses(demo_window, qtbot, job_of, capture_in, run_generation):
    window = demo_window
    entry = capture_in(window, "weddings", positive=" weddings", negative=" ", layer=1)
    box = _configure(window, "weddings", 1)
    assert window.sweep_panel.metric.currentText() == "target-words"  # followed the pair
    assert box.suggest_button.isEnabled() and not box.apply_button.isEnabled()
    found = _suggest(window, qtbot, job_of, box)
    assert found is not None and window.errors == []
    assert found.layer == 1 and found.mode == "front" and found.metric == "target-words"
    assert found.forward_passes > 0 and len(found.tried) >= 3  # the coarse ratios, at least
    assert (found.layer, found.coeff) in {(t.cell.layer, t.cell.coeff) for t in found.tried}
    text = box.result_label.text()
    assert text.startswith(f"Suggested: layer 1, c = {found.coeff:g}, mode front")
    assert f"(strength {found.strength:g}n" in text
    assert f"target-words {found.score:.2f} (95% CI {found.ci_low:.2f}–{found.ci_high:.2f})" in text
    assert f"unsteered {found.baseline:.2f}" in text
    assert ("a clear effect" in text) == found.clear_effect
    assert ("no clear effect" in text) != found.clear_effect
    assert ("NOT coherent" in text) != found.coherent
    assert f"Cost: {found.forward_passes} forward passes" in text
    assert box.progress.value() == box.progress.maximum() and not box.stop_button.isEnabled()
    assert box.apply_button.isEnabled() and box.suggest_button.isEnabled()

    # The vector's own layer on its own model: Generate steers the stored vector, no copy is saved.
    with qtbot.waitSignal(window.context.apply_steering, timeout=5000) as blocker:
        box.apply_button.click()
    assert blocker.args[0] == SteeringChoice("weddings", str(entry.path), found.coeff, 1, "front")
    [row] = window.generate_panel.vector_rows()
    assert row.entry.key == "weddings" and row.coefficient() == pytest.approx(found.coeff)
    window.generate_panel.prompt.setPlainText(PROMPT)
    window.generate_panel.max_tokens.setValue(4)
    transcript = run_generation(window)
    assert transcript is not None
    assert transcript.vectors[0]["coeff"] == pytest.approx(found.coeff)
    assert transcript.vectors[0]["mode"] == "front"


def test_a_suggestion_at_another_layer_is_saved_and_applied_exactly(loaded_window, qtbot, job_of, capture_in):
    window = loaded_window
    capture_in(window, "weddings", positive=" weddings", negative=" ", layer=0)
    box = _configure(window, "weddings", 2, tokens=2, samples=1)
    found = _suggest(window, qtbot, job_of, box)
    assert found is not None and found.layer == 2
    # The search re-captured the vector at layer 2 from its prompts: that vector is what Generate gets.
    with qtbot.waitSignal(window.context.apply_steering, timeout=20_000) as blocker:
        box.apply_button.click()
    choice = blocker.args[0]
    assert choice.vector_key == "weddings-L2-suggested" and choice.exact
    assert (choice.coeff, choice.layer, choice.mode) == (found.coeff, 2, "front")
    saved = load_vector(choice.vector_path)
    assert saved.layer_ids == [2] and saved.default_coeff == found.coeff
    assert (saved.layers[2] == found.vector.layers[2]).all()
    qtbot.waitUntil(lambda: len(window.generate_panel.vector_rows()) == 1, timeout=5000)
    [row] = window.generate_panel.vector_rows()
    assert row.entry.key == "weddings-L2-suggested" and row.coefficient() == pytest.approx(found.coeff)


def test_stop_abandons_the_search_and_the_tab_stays_usable(loaded_window, qtbot, job_of, capture_in):
    window = loaded_window
    capture_in(window, "weddings", positive=" weddings", negative=" ", layer=1)
    box = _configure(
        window, "weddings", 1, tokens=120, samples=4, prompts=(PROMPT, "The weather today", "Yes")
    )
    job = job_of(window.context.controller, box.suggest_button.click)
    qtbot.waitUntil(lambda: box.progress.value() > 0, timeout=30_000)
    assert box.is_running() and box.stop_button.isEnabled() and not box.suggest_button.isEnabled()
    with qtbot.waitSignal(job.aborted, timeout=20_000):
        box.stop_button.click()
    qtbot.waitUntil(lambda: not box.is_running(), timeout=5000)
    assert box.suggestion is None and box.result_label.text() == "Stopped: nothing suggested."
    assert window.errors == [] and not box.apply_button.isEnabled()
    assert box.suggest_button.isEnabled() and window.sweep_panel.run_button.isEnabled()
    # The worker is free and the model unsteered: the next search runs to its end.
    _configure(window, "weddings", 1, tokens=2, samples=1)
    assert _suggest(window, qtbot, job_of, box) is not None and window.errors == []


def test_closing_the_window_mid_search_ends_the_worker(loaded_window, qtbot, capture_in):
    window = loaded_window
    capture_in(window, "weddings", positive=" weddings", negative=" ", layer=1)
    box = _configure(window, "weddings", 1, tokens=120, samples=4, prompts=(PROMPT, "The weather today"))
    box.suggest_button.click()
    qtbot.waitUntil(lambda: box.progress.value() > 0, timeout=30_000)
    controller = window.context.controller
    window.close()
    assert not controller._thread.isRunning()


def test_without_a_vector_or_a_model_or_a_sampled_metric_it_says_why(window, qtbot, job_of, load_model_in,
                                                                     tiny_dir, capture_in):  # fmt: skip
    box = window.sweep_panel.suggest_box
    assert not box.suggest_button.isEnabled()  # no model, no vector
    box.run()  # as a script would: a message, nothing submitted
    assert window.errors[-1] == ("Suggest settings", "choose a vector")
    assert not box.is_running() and box.suggestion is None

    load_model_in(window, tiny_dir)
    capture_in(window, "weddings", positive=" weddings", negative=" ", layer=1)
    with qtbot.waitSignal(window.context.model_changed, timeout=20_000):
        window.model_panel.unload_button.click()
    assert window.sweep_panel.set_vector("weddings") and not box.suggest_button.isEnabled()
    job = job_of(window.context.controller, box.run)  # the worker refuses: no model
    qtbot.waitSignal(job.finished, timeout=20_000).wait()
    assert window.errors[-1] == ("Suggest settings", "no model is loaded; load one in the Model tab first")
    assert box.result_label.text().startswith("The search failed: no model is loaded")
    assert not box.is_running() and not box.stop_button.isEnabled() and box.suggestion is None

    window.sweep_panel.metric.setCurrentText("perplexity")
    box.run()
    title, message = window.errors[-1]
    assert title == "Suggest settings" and "target-words or sentiment" in message
    assert not box.is_running()
