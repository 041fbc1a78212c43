"""Background chores on Qt's thread pool (gui/tasks.py)."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import QThreadPool
from shiboken6 import delete

from gui.tasks import TaskRunner

pytestmark = pytest.mark.gui


def test_a_task_that_outlives_its_runner_drops_its_result_quietly(qtbot, caplog):
    """A window closed while its chore runs (e.g. the model picker listing): no error from the pool."""
    runner = TaskRunner()
    started, release = threading.Event(), threading.Event()
    results: list[object] = []

    def slow() -> int:
        started.set()
        release.wait(5)
        return 1

    runner.submit(slow, results.append, results.append)
    assert started.wait(5)
    delete(runner)  # the C++ object goes, as when its window is destroyed
    release.set()
    assert QThreadPool.globalInstance().waitForDone(5000)
    qtbot.wait(50)  # pytest-qt would fail the test on an exception raised in the pool's thread
    assert results == []


def test_a_task_delivers_its_result_and_its_error(qtbot):
    runner = TaskRunner()
    done: list[object] = []
    errors: list[str] = []
    runner.submit(lambda: 41 + 1, done.append, errors.append)
    runner.submit(lambda: open("/no/such/file/anywhere"), done.append, errors.append)  # noqa: SIM115
    qtbot.waitUntil(lambda: len(done) + len(errors) == 2, timeout=5000)
    assert done == [42] and len(errors) == 1 and "No such file" in errors[0]
