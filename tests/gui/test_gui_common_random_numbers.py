"""The Generate tab's two panes differ by steering alone (common random numbers), and "Show the effect"
colours the steered pane by KL(steered || unsteered) on the same text, with the unsteered alternatives."""

from __future__ import annotations

import pytest

from engine import SamplingConfig, Steer, generate, load_vector

pytestmark = pytest.mark.gui
PROMPT = "I think that you"
SAMPLING = SamplingConfig.paper(top_p=0.9, max_new_tokens=16, seed=5)  # sampling on


def _generate_in(window, entry, coeff, run_generation, effect=False):
    panel = window.generate_panel
    for row in panel.vector_rows():
        panel.remove_vector(row)
    row = panel.add_vector(entry)
    row.set_coefficient(coeff)
    row.mode.setCurrentText("all")
    panel.set_sampling(SAMPLING)
    panel.random_seed.setChecked(False)
    panel.effect.setChecked(effect)
    panel.prompt.setPlainText(PROMPT)
    deltas = []
    transcript = run_generation(window, on_token=deltas.append)
    assert (
        transcript.sampling["seed"],
        transcript.sampling["top_p"],
        transcript.sampling["temperature"],
    ) == (5, 0.9, 1)
    return panel, transcript, deltas


def test_panes_agree_at_zero_and_the_steered_pane_is_its_row_alone(loaded_window, capture_in, run_generation):
    entry = capture_in(loaded_window)
    loaded = loaded_window.context.controller.worker.loaded
    panel, zero, _ = _generate_in(loaded_window, entry, 0.0, run_generation)
    assert panel.unsteered.generated_text() == panel.steered.generated_text() == zero.outputs["steered"]
    assert zero.outputs["n_tokens"] == [16, 16]
    assert zero.outputs["unsteered"] == generate(loaded, PROMPT, None, SAMPLING).rows[0].text

    panel, steered, _ = _generate_in(loaded_window, entry, 4.0, run_generation)
    assert steered.outputs["unsteered"] == zero.outputs["unsteered"]  # the unsteered pane doesn't move
    vector = load_vector(entry.path)
    alone = generate(loaded, PROMPT, [[Steer(vector, 4.0, mode="all")]], SAMPLING).rows[0]
    batch = generate(
        loaded, PROMPT, [[Steer(vector, c, mode="all")] for c in (1, -2, 4, 0, 8, 3, -4, 6)], SAMPLING
    ).rows[2]
    assert panel.steered.generated_text() == alone.text == batch.text != steered.outputs["unsteered"]


def test_effect_colours_the_steered_pane_on_the_same_context(loaded_window, capture_in, run_generation):
    entry = capture_in(loaded_window)
    _, _, zero = _generate_in(loaded_window, entry, 0.0, run_generation, effect=True)
    steered = [d for d in zero if d.row == 1 and d.kl is not None]
    assert len(steered) == 16 and all(d.kl == 0.0 for d in steered)
    assert all(d.kl is None for d in zero if d.row == 0)
    panel, _, deltas = _generate_in(loaded_window, entry, 4.0, run_generation, effect=True)
    steered = [d for d in deltas if d.row == 1 and d.kl is not None]
    assert any(d.kl > 0 for d in steered) and all(len(d.top) == 5 for d in steered)
    # The pane shows it: a highlighted token whose tooltip names the unsteered model's alternatives.
    tips = []
    block = panel.steered.document().begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            tips.append(it.fragment().charFormat().toolTip())
            it += 1
        block = block.next()
    assert any("without steering, this would likely be" in tip for tip in tips)
