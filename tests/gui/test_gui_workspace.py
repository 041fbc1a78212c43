"""A workspace that comes back (issue 16): the last model, the active vectors, the pair table; a last
model that no longer loads falls back to the demo, with a message."""

from __future__ import annotations

import argparse

import pytest

from engine.pairs import PromptPair
from gui.app import startup_model
from gui.main_window import MainWindow

pytestmark = pytest.mark.gui


def _args(model=None, no_autoload=False) -> argparse.Namespace:
    return argparse.Namespace(model=model, no_autoload=no_autoload)


def test_the_start_up_model_is_the_last_one_used(settings):
    assert startup_model(_args(), settings) == "demo"  # nothing used yet
    settings.setValue("model/last", "/models/smollm2.gguf")
    assert startup_model(_args(), settings) == "/models/smollm2.gguf"
    assert startup_model(_args(model="/other"), settings) == "/other"  # --model wins
    assert startup_model(_args(no_autoload=True), settings) is None


def test_vectors_pairs_and_model_settings_come_back(
    qtbot, settings, library_dir, tiny_dir, load_model_in, capture_in
):
    first = MainWindow(settings=settings, library_root=library_dir, autoload=None)
    qtbot.addWidget(first)
    load_model_in(first, tiny_dir)
    entry = capture_in(first, name="kept", layer=1)
    row = first.generate_panel.add_vector(entry)
    first.generate_panel.raw_scale.setChecked(True)
    row.restore_state({"coeff": -2.5, "mode": "all", "layer": 2, "enabled": False})
    pairs = [PromptPair("I love it", "I hate it"), PromptPair("Great", "")]  # a half-filled row stays as is
    first.capture_panel.pairs_model.set_pairs(pairs)
    first.model_panel.set_device("cpu")
    first.close()

    second = MainWindow(settings=settings, autoload=None)
    qtbot.addWidget(second)
    qtbot.waitUntil(lambda: len(second.generate_panel.vector_rows()) == 1, timeout=10_000)
    restored = second.generate_panel.vector_rows()[0]
    assert restored.entry.key == "kept"
    assert restored.state() == {"coeff": -2.5, "mode": "all", "layer": 2, "enabled": False}
    assert second.capture_panel.pairs_model.pairs() == pairs
    assert second.model_panel.source() == str(tiny_dir)
    assert startup_model(_args(), settings) == str(tiny_dir)
    second.close()


def test_a_vector_gone_from_the_library_is_named_not_restored(
    qtbot, settings, library_dir, tiny_dir, load_model_in, capture_in
):
    first = MainWindow(settings=settings, library_root=library_dir, autoload=None)
    qtbot.addWidget(first)
    load_model_in(first, tiny_dir)
    first.generate_panel.add_vector(capture_in(first, name="doomed", layer=1))
    first.close()
    (library_dir / "doomed.safetensors").unlink()

    second = MainWindow(settings=settings, autoload=None)
    qtbot.addWidget(second)
    messages: list[str] = []
    second.context.status.connect(messages.append)
    qtbot.waitUntil(lambda: any("Not restored" in m for m in messages), timeout=10_000)
    assert "doomed" in next(m for m in messages if "Not restored" in m)
    assert second.generate_panel.vector_rows() == []
    second.close()


def test_a_last_model_that_no_longer_loads_falls_back_to_the_demo(qtbot, settings, library_dir, tmp_path):
    missing = tmp_path / "moved-away-model"
    window = MainWindow(settings=settings, library_root=library_dir, autoload=str(missing))
    qtbot.addWidget(window)
    messages: list[str] = []
    window.context.status.connect(messages.append)
    window.model_panel.set_device("cpu")
    qtbot.waitUntil(
        lambda: window.context.model is not None and window.context.model.info.source == "demo",
        timeout=60_000,
    )
    assert any("Could not reopen" in m and str(missing) in m and "demo" in m for m in messages)
    window.close()
