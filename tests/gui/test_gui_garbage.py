"""Cyclic garbage holding Qt objects is collected on the GUI thread, never on the worker's threads."""

from __future__ import annotations

import gc
import threading


class _Witness:
    """Sits in a reference cycle with a Qt widget and records which thread collects it."""

    def __init__(self, seen: list[str]):
        from PySide6.QtWidgets import QLabel

        self.seen = seen
        self.widget = QLabel("in a cycle")
        self.widget.witness = self  # the cycle: only the cyclic collector can free it

    def __del__(self):
        self.seen.append(threading.current_thread().name)


def _allocate_cycles(n: int) -> None:
    for _ in range(n):  # enough container allocations to trip gc's thresholds many times over
        a: list = []
        a.append(a)


def test_automatic_collection_is_off_while_a_window_lives_and_back_on_after(window, qtbot):
    assert not gc.isenabled()
    window.close()
    assert not gc.isenabled()  # the final collection runs on the GUI thread's next pass, not in close()
    qtbot.waitUntil(gc.isenabled, timeout=5000)


def test_cycles_with_qt_objects_die_on_the_gui_thread_not_in_a_worker_thread(window, qtbot):
    seen: list[str] = []
    _Witness(seen)
    worker = threading.Thread(target=_allocate_cycles, args=(200_000,), name="busy-worker")
    worker.start()
    worker.join()
    assert seen == []  # the worker's allocations did not trigger a collection on its thread
    qtbot.waitUntil(lambda: seen != [], timeout=5000)  # the GUI thread's timer collects it
    assert seen == ["MainThread"]
