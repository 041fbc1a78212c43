"""Fixtures for the GUI tests: offscreen Qt, a temporary library and settings file, tiny models."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("ACTADD_TORCH_THREADS", "1")


@pytest.fixture
def library_dir(tmp_path, monkeypatch):
    path = tmp_path / "library"
    path.mkdir()
    monkeypatch.setenv("ACTADD_LIBRARY", str(path))
    return path


@pytest.fixture
def settings(tmp_path):
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def tiny_dir(model_dirs):
    """A tiny random-init GPT-2 (3 layers, hidden 64), saved to disk for the real load path."""
    return model_dirs["gpt2"]


@pytest.fixture
def controller(qtbot):
    from gui.worker import WorkerController

    ctl = WorkerController()
    yield ctl
    assert ctl.shutdown(2000)


@pytest.fixture
def window(qtbot, settings, library_dir):
    """The real main window, without the automatic demo-model load."""
    from gui.app import MainWindow

    win = MainWindow(settings=settings, library_root=library_dir, autoload=None)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()


@pytest.fixture
def load_model_in(qtbot):
    """Drive the model panel: type the folder, press Load, wait until the model is in."""

    def load(window, folder, timeout=30_000):
        panel = window.model_panel
        panel.set_source(str(folder))
        panel.set_device("cpu")
        with qtbot.waitSignal(
            window.context.model_changed, timeout=timeout, check_params_cb=lambda handle: handle is not None
        ):
            panel.load_button.click()
        return window.context.model

    return load
