"""The Sweep tab sweeps normalised strengths by default ("4n": 4 typical residual norms at each layer), with
raw c one choice away; a cell's raw c is what "Apply to Generate" hands over."""

from __future__ import annotations

import pytest
import torch

from engine.library import Library
from engine.strength import relative_norms
from engine.vector import SteeringVector
from gui.widgets.sweep_form import SweepForm

pytestmark = pytest.mark.gui


def _run(window, qtbot, job_of):
    panel = window.sweep_panel
    job = job_of(window.context.controller, panel.run_button.click)
    qtbot.waitSignal(job.done, timeout=60_000).wait()
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=5000)
    return panel.result


def _range(panel):
    return (panel.coeff_from.value(), panel.coeff_to.value(), panel.coeff_count.value(), panel.form.units())


def test_default_sweep_is_in_strengths_and_apply_uses_the_cells_raw_c(
    loaded_window, qtbot, capture_in, job_of, tmp_path
):
    capture_in(loaded_window, "love", layer=1)
    panel = loaded_window.sweep_panel
    assert panel.set_vector("love")
    assert _range(panel) == (-16.0, 16.0, 5, "n")  # a front vector's default, untouched
    panel.sweep_layers.setChecked(True)
    panel.layer_from.setValue(0)
    panel.layer_to.setValue(2)
    panel.metric.setCurrentText("target-prob")  # no sampling: quick
    panel.targets.setText("love, wedding")
    spec = panel.request().spec
    assert spec.strengths and spec.coeffs == [-16.0, -8.0, 0.0, 8.0, 16.0]

    result = _run(loaded_window, qtbot, job_of)
    assert result.spec.strengths and len(result.cells) == 15
    c = {(cell.layer, cell.coeff): cell.steer_coeff for cell in result.cells}
    assert c[(0, 0.0)] == c[(1, 0.0)] == 0.0
    for layer in (0, 1, 2):
        assert c[(layer, 16.0)] == pytest.approx(2 * c[(layer, 8.0)])  # c = s * r_l / ||v_l||
        assert c[(layer, 16.0)] > 0 > c[(layer, -16.0)]
    # The same strength is a different raw c at each layer (each layer's own residual norm and vector).
    assert len({round(c[(layer, 8.0)], 6) for layer in (0, 1, 2)}) == 3

    # The table and the details read strengths, with the raw c beside them.
    table = panel.cell_table
    assert table.horizontalHeaderItem(1).text() == "s"
    assert {table.item(r, 1).text() for r in range(table.rowCount())} == {"-16n", "-8n", "0", "8n", "16n"}
    assert table.select(2, 8.0)
    cell = panel.chosen_cell()
    assert (cell.layer, cell.coeff) == (2, 8.0) and cell.steer_coeff != pytest.approx(8.0)
    assert panel.cell_samples.toPlainText().startswith(f"layer 2, 8n (c = {cell.steer_coeff:.3g}): ")
    heat_labels = [t.get_text() for t in panel.figure.get_axes()[1].get_xticklabels()]
    assert "16n" in heat_labels

    # Apply to Generate: the raw c this cell applied at its layer, not its strength.
    with qtbot.waitSignal(loaded_window.context.apply_steering, timeout=5000) as blocker:
        panel.apply_button.click()
    assert blocker.args[0].coeff == cell.steer_coeff and blocker.args[0].layer == 2
    (row,) = loaded_window.generate_panel.vector_rows()
    assert row.layer.value() == 2
    assert row.coefficient() == pytest.approx(cell.steer_coeff)

    # The exported script reruns it in strengths.
    panel.export(tmp_path / "sweep.py")
    qtbot.waitUntil(lambda: (tmp_path / "sweep.py").exists(), timeout=20_000)
    qtbot.waitUntil(lambda: loaded_window.context.tasks.pending == 0, timeout=20_000)
    script = (tmp_path / "sweep.py").read_text()
    compile(script, "sweep.py", "exec")
    assert "strengths=True" in script and "coeffs=[-16.0, -8.0, 0.0, 8.0, 16.0]" in script


def test_raw_c_sweeps_raw_coefficients(loaded_window, qtbot, capture_in, job_of, tmp_path):
    capture_in(loaded_window, "love", layer=1)
    panel = loaded_window.sweep_panel
    assert panel.set_vector("love")
    panel.form.set_units("raw")
    panel.coeff_from.setValue(0)
    panel.coeff_to.setValue(4)
    panel.coeff_count.setValue(3)
    panel.metric.setCurrentText("target-prob")
    panel.targets.setText("love")
    result = _run(loaded_window, qtbot, job_of)
    assert not result.spec.strengths
    assert [cell.coeff for cell in result.cells] == [0.0, 2.0, 4.0]
    assert all(cell.steer_coeff == cell.coeff for cell in result.cells)
    assert panel.cell_table.horizontalHeaderItem(1).text() == "c"
    assert panel.cell_table.select(1, 4.0)
    assert panel.cell_samples.toPlainText().startswith("layer 1, c = 4: ")
    panel.export(tmp_path / "sweep.py")
    qtbot.waitUntil(lambda: (tmp_path / "sweep.py").exists(), timeout=20_000)
    qtbot.waitUntil(lambda: loaded_window.context.tasks.pending == 0, timeout=20_000)
    assert "strengths=False" in (tmp_path / "sweep.py").read_text()


def test_the_range_follows_the_mode_until_edited(loaded_window, qtbot, capture_in, library_dir):
    capture_in(loaded_window, "love", layer=1)
    hidden = loaded_window.context.model.info.hidden_size
    Library(library_dir).save(
        SteeringVector({1: torch.ones(hidden)}, method="pca", default_mode="ablate"), "erase"
    )
    loaded_window.context.refresh_library()
    panel = loaded_window.sweep_panel
    qtbot.waitUntil(lambda: panel.set_vector("erase"), timeout=10_000)
    # Ablate has no strength: raw c from 0 (nothing) to 1 (the direction removed), and n can't be chosen.
    assert _range(panel) == (0.0, 1.0, 3, "raw")
    assert not panel.coeff_units.model().item(0).isEnabled()
    assert not panel.request().spec.strengths
    assert panel.set_vector("love")
    assert _range(panel) == (-16.0, 16.0, 5, "n")
    panel.form.mode.setCurrentText("all")  # a direction added everywhere: about one norm
    assert _range(panel) == (-1.0, 1.0, 5, "n")
    panel.form.mode.setCurrentText("front")
    assert _range(panel) == (-16.0, 16.0, 5, "n")
    panel.coeff_to.setValue(10)  # the user's range stays
    panel.form.mode.setCurrentText("all")
    assert _range(panel) == (-16.0, 10.0, 5, "n")
    panel.form.mode.setCurrentText("vector default")
    assert panel.set_vector("erase")  # until ablate (its default mode), which can't take strengths
    assert _range(panel) == (0.0, 1.0, 3, "raw")


def test_switching_units_converts_an_edited_range(loaded_window, qtbot, capture_in):
    capture_in(loaded_window, "love", layer=1)
    context = loaded_window.context
    qtbot.waitUntil(lambda: context.residual_norms is not None, timeout=20_000)
    panel = loaded_window.sweep_panel
    assert panel.set_vector("love")
    vector = context.library.load(str(context.entry("love").path))
    relative = relative_norms(vector, context.residual_norms)[1]  # ||v|| / r at its layer: c = s / relative
    panel.form.set_units("raw")  # untouched: the mode's default range, in c at the vector's own layer
    assert panel.coeff_to.value() == pytest.approx(float(f"{16 / relative:.3g}"), abs=1e-3)
    assert panel.coeff_from.value() == -panel.coeff_to.value() and panel.coeff_count.value() == 5
    panel.form.set_units("n")
    assert _range(panel) == (-16.0, 16.0, 5, "n")
    panel.coeff_from.setValue(-2)
    panel.coeff_to.setValue(4)
    panel.form.set_units("raw")  # the edited range, converted
    assert panel.coeff_to.value() == pytest.approx(float(f"{4 / relative:.3g}"), abs=1e-3)
    assert panel.coeff_from.value() == pytest.approx(float(f"{-2 / relative:.3g}"), abs=1e-3)
    assert not panel.request().spec.strengths
    panel.form.set_units("n")
    assert panel.coeff_to.value() == pytest.approx(4.0, rel=0.01)
    assert panel.request().spec.strengths


def test_units_and_range_round_trip_through_settings(loaded_window, capture_in):
    capture_in(loaded_window, "love", layer=1)
    context, panel = loaded_window.context, loaded_window.sweep_panel
    assert panel.set_vector("love")
    panel.form.set_units("raw")
    panel.coeff_from.setValue(-3)
    panel.coeff_to.setValue(6)
    panel.coeff_count.setValue(4)
    panel.write_settings()
    again = SweepForm(context)
    again.read_settings()
    assert again.set_vector("love")
    assert (again.coeff_from.value(), again.coeff_to.value(), again.coeff_count.value()) == (-3.0, 6.0, 4)
    assert again.units() == "raw" and not again.sweep_request().spec.strengths

    # Untouched strength defaults are saved as such and follow the mode again.
    fresh = SweepForm(context)
    assert fresh.set_vector("love") and fresh.units() == "n"
    fresh.write_settings()
    later = SweepForm(context)
    later.read_settings()
    assert later.set_vector("love")
    later.mode.setCurrentText("all")
    assert (later.coeff_from.value(), later.coeff_to.value(), later.units()) == (-1.0, 1.0, "n")


@pytest.mark.parametrize(
    ("saved", "expected"),
    [
        ((-8.0, 8.0, 5), (-16.0, 16.0, 5, "n")),  # the old untouched raw default: now strengths
        ((-2.0, 3.0, 6), (-2.0, 3.0, 6, "raw")),  # an old range the user chose: still raw c
    ],
)
def test_settings_from_before_the_units_choice(loaded_window, capture_in, saved, expected):
    capture_in(loaded_window, "love", layer=1)
    context = loaded_window.context
    for key, value in zip(("coeff_from", "coeff_to", "coeff_count"), saved, strict=True):
        context.settings.setValue(f"sweep/{key}", value)
    context.settings.remove("sweep/coeff_units")
    context.settings.remove("sweep/coeff_edited")
    form = SweepForm(context)
    form.read_settings()
    assert form.set_vector("love")
    got = (form.coeff_from.value(), form.coeff_to.value(), form.coeff_count.value(), form.units())
    assert got == expected
