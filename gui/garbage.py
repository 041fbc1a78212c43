"""Python's cyclic garbage collector, run on the GUI thread only while a window is open."""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer, Slot


class GuiThreadGarbageCollector(QObject):
    """Runs Python's cyclic garbage collector on the GUI thread only, while a window is open.

    Automatic collection runs in whichever thread happens to allocate when the thresholds trip. When that
    is the worker's model-loading thread and the pending garbage holds Qt wrappers (a closed dialog, an old
    window), their C++ objects are destroyed off the GUI thread and Qt crashes (a segfault seen in the GUI
    tests). So automatic collection is off while a window lives, and a timer on the GUI thread collects
    with the same generation thresholds. The last window to close turns it back on after one full
    collection, which runs on the GUI thread's next event-loop pass rather than inside the close (a full
    collection of a heap holding a model can take most of the close's one-second budget on a busy machine).
    """

    _open = 0  # live collectors; automatic collection is off while there is one

    def __init__(self, parent: QObject, interval_ms: int = 500):
        super().__init__(parent)
        self._thresholds = gc.get_threshold()
        GuiThreadGarbageCollector._open += 1
        gc.disable()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.collect_due)
        self._timer.start(interval_ms)

    @Slot()
    def collect_due(self) -> None:
        counts = gc.get_count()
        if counts[0] <= self._thresholds[0]:
            return
        generation = 0  # the oldest generation whose count passed its threshold, as gc itself decides
        while generation < 2 and counts[generation + 1] > self._thresholds[generation + 1]:
            generation += 1
        gc.collect(generation)

    def stop(self) -> None:
        if not self._timer.isActive():  # already stopped
            return
        self._timer.stop()
        GuiThreadGarbageCollector._open -= 1
        if GuiThreadGarbageCollector._open == 0:
            QTimer.singleShot(0, collect_then_enable)  # a plain function: it outlives this QObject


def collect_then_enable() -> None:
    """On the GUI thread, after the last window closed: collect what the windows left, then let Python
    collect automatically again, unless a new window has opened meanwhile."""
    gc.collect()
    if GuiThreadGarbageCollector._open == 0:
        gc.enable()
