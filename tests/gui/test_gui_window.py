"""The real main window, driven offscreen: load, capture, generate, stop, live steering, close, errors."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import QApplication
from signal_waits import wait_for_emission

from engine.steering import hook_count
from gui.main_window import MainWindow

pytestmark = pytest.mark.gui


def _setup_generation(window, entry, *, coeff=4.0, mode="all", max_tokens=20, effect=False):
    panel = window.generate_panel
    for row in panel.vector_rows():
        panel.remove_vector(row)
    panel.raw_scale.setChecked(True)  # the slider in raw c, whenever the residual norms arrive
    row = panel.add_vector(entry)
    row.set_coefficient(coeff)
    row.mode.setCurrentText(mode)
    panel.temperature.setValue(0.0)
    panel.max_tokens.setValue(max_tokens)
    panel.effect.setChecked(effect)
    panel.prompt.setPlainText("I think that you")
    return row


def test_load_model_shows_its_info(loaded_window):
    panel = loaded_window.model_panel
    text = {key: label.text() for key, label in panel._info_labels.items()}
    assert text["architecture"] == "gpt2"
    assert text["layers"].startswith("3")
    assert text["hidden"] == "64"
    assert panel.progress.value() == 100
    assert loaded_window.capture_panel.layer_to.maximum() == 2  # the layer picker knows the depth
    assert panel.recent()[0] == loaded_window.context.model.info.source


def test_bad_model_folder_shows_a_readable_error_and_keeps_typed_text(
    window, qtbot, tmp_path, tiny_dir, load_model_in
):
    window.generate_panel.prompt.setPlainText("my carefully typed prompt")
    window.capture_panel.positive.setText("Weddings")
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    window.model_panel.set_source(str(bad))
    window.model_panel.load_button.click()
    qtbot.waitUntil(lambda: window.error_dialog() is not None, timeout=10_000)
    dialog = window.error_dialog()
    assert dialog.isVisible()
    assert "config.json" in dialog.informativeText()
    assert window.errors[-1][0] == "Could not load the model"
    assert window.generate_panel.prompt.toPlainText() == "my carefully typed prompt"
    assert window.capture_panel.positive.text() == "Weddings"
    assert window.model_panel.source() == str(bad)
    dialog.close()
    # Still usable: a good folder loads.
    assert load_model_in(window, tiny_dir) is not None
    assert window.model_panel.load_button.isEnabled()


def test_capture_saves_into_the_library_table(loaded_window, capture_in, library_dir):
    entry = capture_in(loaded_window, "love-hate", layer=2)
    assert entry.method == "actadd" and entry.layers == [2]
    assert (library_dir / "love-hate.safetensors").exists()
    preview = loaded_window.capture_panel.preview_rows()
    assert preview[0][0] == "0" and len(preview) >= 2
    # The generate and sweep panels offer it too.
    assert loaded_window.generate_panel._add_combo.findData("love-hate") >= 0
    assert loaded_window.sweep_panel.set_vector("love-hate")


def test_alignment_preview_shows_space_padding(loaded_window, qtbot):
    panel = loaded_window.capture_panel
    panel.positive.setText("Love")
    panel.negative.setText("Hate and anger")
    panel.update_preview()
    rows = panel.preview_rows()
    assert rows[-1][1] == "␣"  # p+ is shorter: padded with the space token
    assert "space pad" in panel._preview_note.text()


def test_capture_mean_diff_from_an_imported_jsonl(loaded_window, qtbot, tmp_path, job_of):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        '{"positive": "I love it", "negative": "I hate it"}\n{"positive": "Joy", "negative": "Sad"}\n',
        encoding="utf-8",
    )
    panel = loaded_window.capture_panel
    panel.import_pairs(pairs)
    qtbot.waitUntil(lambda: len(panel.pairs_model.pairs()) == 2, timeout=5000)
    assert panel.method() == "mean-diff"
    panel.name.setText("md")
    panel.set_layers(0, 1)
    shown: list[str] = []
    controller = loaded_window.context.controller
    with qtbot.waitSignal(loaded_window.library_panel.refreshed, timeout=20_000):
        job = job_of(controller, panel.capture_button.click)
        job.progress.connect(lambda progress: shown.append(panel._result.text()))
    qtbot.waitUntil(lambda: loaded_window.context.entry("md") is not None, timeout=5000)
    entry = loaded_window.context.entry("md")
    assert entry.method == "mean-diff" and entry.layers == [0, 1] and entry.shape == [64]
    assert "Capturing… 4 of 4 prompts" in shown  # the panel's slot ran before this one
    assert panel._result.text().startswith("Saved 'md'")


def test_generate_streams_into_both_panes(loaded_window, qtbot, capture_in, run_generation):
    entry = capture_in(loaded_window)
    _setup_generation(loaded_window, entry, max_tokens=24)
    deltas = []
    transcript = run_generation(loaded_window, on_token=lambda d: deltas.append((d.row, d.step)))
    panel = loaded_window.generate_panel
    assert {row for row, _ in deltas} == {0, 1}
    assert len({step for _, step in deltas}) > 1  # many token events, not one final blob
    assert panel.unsteered.generated_text() == transcript.outputs["unsteered"]
    assert panel.steered.generated_text() == transcript.outputs["steered"]
    assert transcript.outputs["unsteered"] and transcript.outputs["steered"]
    assert "tokens/s" in panel.speed.text()
    assert panel.generate_button.isEnabled() and not panel.stop_button.isEnabled()
    assert panel.regenerate_button.isEnabled()


def test_the_status_bar_follows_the_worker(loaded_window, qtbot, capture_in, job_of):
    """`job_started` names what the worker does; `busy_changed(False)` brings back "idle"."""
    entry = capture_in(loaded_window)
    _setup_generation(loaded_window, entry, max_tokens=8)
    label = loaded_window.status.worker_label
    qtbot.waitUntil(lambda: label.text() == "idle", timeout=10_000)
    controller = loaded_window.context.controller
    job = job_of(controller, loaded_window.generate_panel.generate_button.click)
    finished = qtbot.waitSignal(job.finished, timeout=30_000)  # before the loop runs: misses nothing
    qtbot.waitSignal(job.started, timeout=10_000).wait()
    assert label.text() == "generating…" and controller.busy
    finished.wait()
    assert label.text() == "idle" and not controller.busy


def test_regenerate_reuses_the_seed(loaded_window, qtbot, capture_in, run_generation, job_of):
    entry = capture_in(loaded_window)
    _setup_generation(loaded_window, entry, max_tokens=16)
    panel = loaded_window.generate_panel
    panel.temperature.setValue(1.0)
    panel.random_seed.setChecked(True)
    first = run_generation(loaded_window)
    seed = first.sampling["seed"]
    panel.seed.setValue(seed + 1)
    job = job_of(loaded_window.context.controller, panel.regenerate_button.click)
    qtbot.waitSignal(job.finished, timeout=30_000).wait()
    assert panel.transcript.sampling["seed"] == seed
    assert panel.transcript.outputs == first.outputs


def test_stop_mid_stream(loaded_window, qtbot, capture_in, job_of):
    entry = capture_in(loaded_window)
    _setup_generation(loaded_window, entry, max_tokens=100)
    controller = loaded_window.context.controller
    controller.worker.pace_s = 0.02
    panel = loaded_window.generate_panel
    job = job_of(controller, panel.generate_button.click)
    wait_for_emission(qtbot, job.token, timeout=20_000)
    assert panel.stop_button.isEnabled()
    with qtbot.waitSignals([job.aborted, job.finished], order="strict", timeout=10_000):
        panel.stop_button.click()
    assert panel.transcript.cancelled
    assert max(panel.transcript.outputs["n_tokens"]) < 100
    assert not panel.is_generating() and panel.generate_button.isEnabled()
    assert hook_count(controller.worker.loaded.blocks) == 0


def test_live_coefficient_change_during_streaming_changes_the_steering(
    loaded_window, qtbot, capture_in, run_generation
):
    """c = 0 keeps the steered row bit-identical (KL exactly 0); moving the slider mid-stream steers it."""
    entry = capture_in(loaded_window)
    row = _setup_generation(loaded_window, entry, coeff=0.0, mode="all", max_tokens=60, effect=True)
    controller = loaded_window.context.controller
    controller.worker.pace_s = 0.01
    kls = {}
    moved = []

    def on_token(delta):
        if delta.row == 1 and delta.kl is not None:
            kls[delta.step] = delta.kl
        if delta.step >= 3 and not moved:
            moved.append(delta.step)
            row.slider.setValue(100)  # c = 10, as a user dragging the slider

    transcript = run_generation(loaded_window, on_token=on_token)
    assert row.coefficient() == 10.0
    [change] = transcript.live_changes
    assert change["index"] == 0 and change["value"] == 10.0
    assert 3 < change["step"] < 60
    assert all(kl == 0.0 for step, kl in kls.items() if step < change["step"])
    assert any(kl > 0.0 for step, kl in kls.items() if step >= change["step"])
    assert transcript.outputs["steered"] != transcript.outputs["unsteered"]
    assert "⟨love → c 10⟩" in loaded_window.generate_panel.steered.toPlainText()


def test_close_during_generation_is_clean_and_fast(loaded_window, qtbot, capture_in, job_of):
    entry = capture_in(loaded_window)
    _setup_generation(loaded_window, entry, max_tokens=120)
    controller = loaded_window.context.controller
    controller.worker.pace_s = 0.05
    loaded = controller.worker.loaded
    job = job_of(controller, loaded_window.generate_panel.generate_button.click)
    wait_for_emission(qtbot, job.token, timeout=20_000)
    assert hook_count(loaded.blocks) > 0  # steering is live
    started = time.monotonic()
    loaded_window.close()
    elapsed = time.monotonic() - started
    assert elapsed < 1.0
    assert not controller._thread.isRunning()
    assert hook_count(loaded.blocks) == 0


def test_close_during_a_model_load_is_fast(window, qtbot, tiny_dir, monkeypatch, job_of):
    import engine.models

    release = threading.Event()
    real = engine.models.load_model

    def slow_load(*args, **kwargs):
        release.wait(20)  # a from_pretrained that takes a long time
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.models, "load_model", slow_load)
    controller = window.context.controller
    window.model_panel.set_source(str(tiny_dir))
    job = job_of(controller, window.model_panel.load_button.click)
    qtbot.waitSignal(job.started, timeout=5000).wait()
    started = time.monotonic()
    window.close()
    assert time.monotonic() - started < 1.0
    assert not controller._thread.isRunning()
    release.set()


def test_event_loop_never_stalls_during_generation(loaded_window, qtbot, capture_in, run_generation):
    """A 10 ms QTimer keeps ticking while tokens stream; the worst gap stays under 100 ms."""
    entry = capture_in(loaded_window)
    _setup_generation(loaded_window, entry, max_tokens=100, effect=True)
    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    try:
        run_generation(loaded_window)
    finally:
        timer.stop()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 5
    assert max(gaps) < 0.1, f"worst stall {max(gaps) * 1000:.0f} ms"


def test_shortcuts_generate_and_stop(loaded_window, qtbot, capture_in, job_of):
    entry = capture_in(loaded_window)
    _setup_generation(loaded_window, entry, max_tokens=100)
    controller = loaded_window.context.controller
    controller.worker.pace_s = 0.02
    loaded_window.activateWindow()
    loaded_window.generate_panel.prompt.setFocus()
    job = job_of(
        controller,
        lambda: qtbot.keyClick(
            loaded_window.generate_panel.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier
        ),
    )
    wait_for_emission(qtbot, job.token, timeout=20_000)
    assert loaded_window.tabs.currentWidget() is loaded_window.generate_panel
    assert loaded_window.generate_panel.prompt.toPlainText() == "I think that you"  # no newline typed
    with qtbot.waitSignal(job.aborted, timeout=10_000):
        qtbot.keyClick(loaded_window.generate_panel.prompt, Qt.Key.Key_Escape)


def test_settings_persist_across_windows(qtbot, settings, library_dir, tiny_dir, load_model_in):
    first = MainWindow(settings=settings, library_root=library_dir, autoload=None)
    qtbot.addWidget(first)
    load_model_in(first, tiny_dir)
    first.generate_panel.temperature.setValue(0.7)
    first.generate_panel.max_tokens.setValue(33)
    first.generate_panel.prompt.setPlainText("persist me")
    first.resize(700, 500)  # the offscreen screen is 800x600
    first.tabs.setCurrentWidget(first.sweep_panel)
    first.close()
    second = MainWindow(settings=settings, autoload=None)
    qtbot.addWidget(second)
    assert second.generate_panel.temperature.value() == pytest.approx(0.7)
    assert second.generate_panel.max_tokens.value() == 33
    assert second.generate_panel.prompt.toPlainText() == "persist me"
    assert second.model_panel.source() == str(tiny_dir)
    assert str(second.context.library.root) == str(library_dir)
    assert second.tabs.currentWidget() is second.sweep_panel
    assert second.size().width() == 700
    second.close()


def test_run_opens_the_window_and_loads_the_model(qtbot, tmp_path, tiny_dir, library_dir):
    """`python main.py --model PATH --library DIR` (the no-argument form loads the demo model the same way)."""
    import gui.app

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "config"))
    seen = {}

    def check_and_close():
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if not windows or windows[0].context.model is None:
            QTimer.singleShot(50, check_and_close)
            return
        seen["model"] = windows[0].context.model.info.architecture
        seen["library"] = str(windows[0].context.library.root)
        windows[0].close()

    QTimer.singleShot(50, check_and_close)
    assert gui.app.run(["--model", str(tiny_dir), "--library", str(library_dir)]) == 0
    assert seen == {"model": "gpt2", "library": str(library_dir)}


def test_chat_template_toggle_follows_the_model(
    window, qtbot, tiny_dir, tmp_path, load_model_in, run_generation
):
    import json
    import shutil

    chat_dir = tmp_path / "chat-model"
    shutil.copytree(tiny_dir, chat_dir)
    config_path = chat_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = "{% for m in messages %}<|endoftext|>{{ m['content'] }} Answer:{% endfor %}"
    config_path.write_text(json.dumps(config))
    load_model_in(window, tiny_dir)
    assert not window.generate_panel.chat.isEnabled()
    load_model_in(window, chat_dir)
    panel = window.generate_panel
    assert panel.chat.isEnabled()
    panel.chat.setChecked(True)
    panel.max_tokens.setValue(8)
    panel.temperature.setValue(0.0)  # greedy: the two rows must then agree
    transcript = run_generation(window)
    assert transcript.chat and transcript.outputs["unsteered"] == transcript.outputs["steered"]  # no vectors
