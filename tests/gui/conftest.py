"""Fixtures for the GUI tests: offscreen Qt, a temporary library and settings file, tiny models."""

from __future__ import annotations

import gc
import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("ACTADD_TORCH_THREADS", "1")


@pytest.fixture(autouse=True)
def collect_garbage_on_the_gui_thread():
    """After each test's widgets are closed, free their reference cycles here, on the GUI thread."""
    yield
    gc.collect()
    assert gc.isenabled(), "a main window was left open: automatic garbage collection is still off"


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
    from gui.controller import WorkerController

    ctl = WorkerController()
    yield ctl
    assert ctl.shutdown(2000)


@pytest.fixture
def window(qtbot, settings, library_dir):
    """The real main window, without the automatic demo-model load."""
    from gui.main_window import MainWindow

    win = MainWindow(settings=settings, library_root=library_dir, autoload=None)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()


@pytest.fixture
def load_model_in(qtbot, job_of):
    """Drive the model panel: type the folder, press Load, wait until the model is in and the load job has
    finished (the panel counts a load as running until then, and ignores another Load click meanwhile)."""

    def load(window, folder, timeout=30_000):
        panel = window.model_panel
        panel.set_source(str(folder))
        panel.set_device("cpu")
        finished: list[bool] = []
        with qtbot.waitSignal(
            window.context.model_changed, timeout=timeout, check_params_cb=lambda handle: handle is not None
        ):
            job = job_of(window.context.controller, panel.load_button.click)
            job.finished.connect(lambda: finished.append(True))  # before the event loop runs again
        qtbot.waitUntil(lambda: bool(finished), timeout=timeout)
        return window.context.model

    return load


@pytest.fixture
def loaded_window(window, load_model_in, tiny_dir):
    """The main window with the tiny GPT-2 loaded through the model panel."""
    load_model_in(window, tiny_dir)
    return window


@pytest.fixture
def capture_in(qtbot):
    """Drive the capture panel (ActAdd p+/p-) and wait until the vector is in the library table."""

    def capture(window, name="love", positive="Love", negative="Hate", layer=1):
        panel = window.capture_panel
        panel.set_method("actadd")
        panel.positive.setText(positive)
        panel.negative.setText(negative)
        panel.set_layers(layer)
        panel.name.setText(name)
        with qtbot.waitSignal(window.library_panel.refreshed, timeout=20_000):
            panel.capture_button.click()
        qtbot.waitUntil(lambda: name in window.library_panel.visible_keys(), timeout=10_000)
        return window.context.entry(name)

    return capture


@pytest.fixture
def job_of():
    """Do `action` (a click) and return the one `Job` it submitted to `controller`.

    `job_submitted` comes before the worker gets the job, so connecting to the job afterwards (before the
    event loop runs again) misses none of its signals."""

    def submitted(controller, action):
        jobs = []

        def record(job):
            jobs.append(job)

        controller.job_submitted.connect(record)
        try:
            action()
        finally:
            controller.job_submitted.disconnect(record)
        assert len(jobs) == 1, f"the action submitted {len(jobs)} jobs, not one"
        return jobs[0]

    return submitted


@pytest.fixture
def run_generation(qtbot, job_of):
    """Click Generate and wait until the worker reports the generation finished (`on_token` gets every
    streamed TokenEvent)."""

    def run(window, timeout=30_000, on_token=None):
        job = job_of(window.context.controller, window.generate_panel.generate_button.click)
        if on_token is not None:
            job.token.connect(on_token)
        qtbot.waitSignal(job.finished, timeout=timeout).wait()
        return window.generate_panel.transcript

    return run
