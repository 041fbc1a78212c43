"""Monkey test (issue 6): seeded random UI actions on the real window while generations run.

Clicks on whatever button is visible and enabled, slider moves, spin boxes, combo boxes, check boxes, text
(empty, huge, hostile names), tab switches, menu actions and shortcuts, library rows selected and deleted
while in use, the model unloaded and loaded again, and every dialog that opens (message boxes, input
dialogs, the combine and trash dialogs, file dialogs) closed by a timer, accepted or rejected at random.

Fails on any exception that reaches `sys.excepthook` or `threading.excepthook`, on any "unexpected error"
the worker or the task runner caught (their catch-alls turn bugs into dialogs), and unless the window ends
in a usable state: stop works, a model is (re)loaded, a capture and a generation succeed, the library lists
cleanly and no steering hook is left on the model.

100 actions run in the normal suite; the issue's 500 under `slow`.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QItemSelectionModel, QTimer
from PySide6.QtWidgets import (
    QAbstractSlider,
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QInputDialog,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
)

from engine.library import Library
from engine.steering import hook_count

pytestmark = pytest.mark.gui

# "Open folder" hands a folder to the desktop's file manager; "Get SmolLM2" downloads from the network
SKIP_BUTTONS = {"Open folder", "Get SmolLM2 (98 MB)"}
SKIP_ACTIONS = {"Quit", "User guide"}  # closes the window / opens a browser
TEXTS = [
    "",
    " ",
    "love",
    "love-copy",
    "new-name",
    "c/new",
    "/top",
    "../escape",
    ".hidden",
    "a:b",
    "名前",
    "x" * 300,
    "I think that",
    "I went up to my friend and said",
    "\u202eevil",
    "1,2,3",
    "-4, 0, 4",
    "nan",
    "1e400",
]


class Monkey:
    def __init__(self, window, qtbot, tiny_dir: Path, seed: int):
        self.window = window
        self.qtbot = qtbot
        self.tiny_dir = tiny_dir
        self.rng = random.Random(seed)
        self.dialog_rng = random.Random(seed + 1)
        self.log: list[str] = []
        self.dialogs_closed = 0
        self.closer = QTimer()
        self.closer.setInterval(25)
        self.closer.timeout.connect(self.close_dialogs)
        self.actions = [
            (12, self.click_button),
            (8, self.generate),
            (4, self.stop),
            (6, self.move_slider),
            (5, self.set_spin),
            (4, self.toggle_check),
            (4, self.pick_combo),
            (4, self.type_text),
            (6, self.switch_tab),
            (3, self.menu_action),
            (4, self.select_library_rows),
            (3, self.delete_selected),
            (2, self.add_vector),
            (1, self.unload_model),
            (1, self.load_model),
            (4, self.wait),
        ]

    # ---- dialogs -------------------------------------------------------------------------------------
    def close_dialogs(self) -> None:
        for widget in QApplication.topLevelWidgets():
            if not isinstance(widget, QDialog) or not widget.isVisible():
                continue
            rng = self.dialog_rng
            if isinstance(widget, QFileDialog):
                widget.reject()  # never write or read files chosen at random
            elif isinstance(widget, QInputDialog):
                widget.setTextValue(rng.choice(TEXTS))
                widget.accept() if rng.random() < 0.7 else widget.reject()
            elif isinstance(widget, QMessageBox):
                widget.done(0)
            else:  # combine, trash
                widget.accept() if rng.random() < 0.6 else widget.reject()
            self.dialogs_closed += 1

    # ---- helpers ---------------------------------------------------------------------------------------
    def visible(self, kind):
        return [w for w in self.window.findChildren(kind) if w.isVisible() and w.isEnabled()]

    def pick(self, items):
        return self.rng.choice(items) if items else None

    # ---- actions ---------------------------------------------------------------------------------------
    def click_button(self) -> None:
        buttons = [b for b in self.visible(QPushButton) if b.text() not in SKIP_BUTTONS]
        buttons += self.visible(QToolButton)
        if button := self.pick(buttons):
            self.log.append(f"click {button.text()!r}")
            button.click()

    def generate(self) -> None:
        self.log.append("generate")
        self.window.generate()

    def stop(self) -> None:
        self.log.append("stop")
        self.window.stop()

    def move_slider(self) -> None:
        if slider := self.pick(self.visible(QAbstractSlider)):
            value = self.rng.randint(slider.minimum(), slider.maximum())
            self.log.append(f"slider {value}")
            slider.setSliderDown(True)
            slider.setSliderPosition(value)
            slider.setSliderDown(False)

    def set_spin(self) -> None:
        if spin := self.pick(self.visible(QSpinBox) + self.visible(QDoubleSpinBox)):
            low, high = spin.minimum(), spin.maximum()
            near = [low, min(high, low + 1), min(high, low + 3), max(low, min(high, 8))]
            value = self.rng.choice(near) if self.rng.random() < 0.8 else self.rng.uniform(low, high)
            self.log.append(f"spin {value}")
            spin.setValue(type(spin.value())(value))

    def toggle_check(self) -> None:
        if box := self.pick(self.visible(QCheckBox)):
            self.log.append(f"check {box.text()!r}")
            box.click()

    def pick_combo(self) -> None:
        if (combo := self.pick(self.visible(QComboBox))) and combo.count():
            self.log.append(f"combo {combo.count()}")
            combo.setCurrentIndex(self.rng.randrange(combo.count()))

    def type_text(self) -> None:
        edits = self.visible(QLineEdit) + self.visible(QPlainTextEdit)
        edits = [e for e in edits if not e.isReadOnly() and not isinstance(e.parent(), QComboBox)]
        if edit := self.pick(edits):
            text = self.rng.choice(TEXTS)
            self.log.append(f"type {text[:20]!r}")
            edit.setText(text) if isinstance(edit, QLineEdit) else edit.setPlainText(text)

    def switch_tab(self) -> None:
        index = self.rng.randrange(self.window.tabs.count())
        self.log.append(f"tab {index}")
        self.window.tabs.setCurrentIndex(index)

    def menu_action(self) -> None:
        actions = [
            action
            for top in self.window.menuBar().actions()
            if top.menu() is not None
            for action in top.menu().actions()
            if not action.isSeparator()
            and action.isEnabled()
            and action.text().split("\t")[0] not in SKIP_ACTIONS
        ]
        if action := self.pick(actions):
            self.log.append(f"menu {action.text()!r}")
            action.trigger()

    def select_library_rows(self) -> None:
        table = self.window.library_panel.table
        rows = table.model().rowCount()
        if not rows:
            return
        selection = table.selectionModel()
        selection.clearSelection()
        for row in self.rng.sample(range(rows), k=self.rng.randint(1, min(rows, 3))):
            index = table.model().index(row, 0)
            selection.select(
                index, QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
            )
        self.log.append("select rows")

    def delete_selected(self) -> None:
        self.log.append("delete selected")
        self.window.library_panel.delete_selected()

    def add_vector(self) -> None:
        entries = list(self.window.context.listing.entries)
        if entry := self.pick(entries):
            self.log.append(f"add {entry.key}")
            self.window.generate_panel.add_vector(entry)

    def unload_model(self) -> None:
        self.log.append("unload")
        self.window.model_panel.unload()

    def load_model(self) -> None:
        self.log.append("load")
        self.window.model_panel.set_source(str(self.tiny_dir))
        self.window.model_panel.set_device("cpu")
        self.window.model_panel.load()

    def wait(self) -> None:
        self.qtbot.wait(self.rng.choice([1, 10, 50]))

    # ---- the run -----------------------------------------------------------------------------------------
    def run(self, n: int) -> None:
        weights = [w for w, _ in self.actions]
        functions = [f for _, f in self.actions]
        self.closer.start()
        try:
            for _ in range(n):
                self.rng.choices(functions, weights)[0]()
                self.qtbot.wait(self.rng.choice([0, 1, 2, 5]))
        finally:
            self.closer.stop()


@pytest.fixture
def failures(monkeypatch, caplog):
    """Exceptions reaching sys.excepthook / threading.excepthook, and errors the app's catch-alls logged."""
    seen: list[str] = []
    previous = sys.excepthook

    def hook(kind, value, tb):
        seen.append(f"{kind.__name__}: {value}")
        previous(kind, value, tb)

    monkeypatch.setattr(sys, "excepthook", hook)
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(f"thread: {args.exc_value!r}"))
    caplog.set_level(logging.ERROR, logger="gui")
    yield seen
    seen.extend(r.getMessage()[:300] for r in caplog.records if r.levelno >= logging.ERROR)


def finish_in_a_usable_state(window, qtbot, tiny_dir, load_model_in, capture_in, library_dir) -> None:
    controller = window.context.controller
    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, QDialog) and widget.isVisible():
            widget.done(0)
    window.stop()
    qtbot.waitUntil(lambda: not controller.busy, timeout=60_000)
    assert window.context.tasks.wait(10_000)
    qtbot.wait(50)
    if window.context.model is None:
        load_model_in(window, tiny_dir)
    # undo what the monkey typed into the fields that capture_in doesn't set, and the library filters
    capture = window.capture_panel
    capture.collection.setText("")
    capture.tags.setText("")
    capture.notes.setPlainText("")
    library = window.library_panel
    library.search.setText("")
    for combo in (library._method, library._tag):
        combo.setCurrentIndex(0)
    library._fits_only.setChecked(False)
    entry = capture_in(window, "final-check")
    panel = window.generate_panel
    for row in panel.vector_rows():
        panel.remove_vector(row)
    row = panel.add_vector(entry)
    row.set_coefficient(4.0)
    row.mode.setCurrentText("all")
    panel.prompt.setPlainText("I think that you")
    panel.temperature.setValue(0.0)
    panel.max_tokens.setValue(5)
    results = []
    jobs = []
    controller.job_submitted.connect(lambda job: jobs.append(job))
    window.generate()
    [job] = jobs
    job.done.connect(results.append)
    qtbot.waitSignal(job.finished, timeout=30_000).wait()
    assert not controller.busy
    assert results and not results[-1].cancelled and min(len(r.token_ids) for r in results[-1].rows) > 0
    assert hook_count(controller.worker.loaded.blocks) == 0
    listing = Library(library_dir).list()
    keys = listing.keys()  # (a Listing iterates over entries)
    assert listing.bad_files == [] and "final-check" in set(keys)
    for key in keys:
        Library(library_dir).load(key)


def monkey_run(n, seed, loaded_window, qtbot, tiny_dir, capture_in, load_model_in, library_dir, failures):
    window = loaded_window
    capture_in(window, "love")
    capture_in(window, "calm", positive="Calm", negative="Anger", layer=2)
    window.context.controller.worker.pace_s = 0.002  # generations overlap with the actions
    monkey = Monkey(window, qtbot, tiny_dir, seed)
    monkey.run(n)
    kinds = sorted({a.split(" ")[0] for a in monkey.log})
    print(
        f"monkey seed {seed}: {len(monkey.log)} actions ({', '.join(kinds)}), {monkey.dialogs_closed} dialogs "
        f"closed, {len(window.errors)} error messages shown"
    )
    if os.environ.get("ACTADD_MONKEY_VERBOSE"):
        for title, message in sorted(set(window.errors)):
            print(f"    {title}: {message[:200]}")
    unexpected = [m for _, m in window.errors if "unexpected" in m.lower()]
    assert failures == [] and unexpected == [], (failures, unexpected, monkey.log[-30:])
    finish_in_a_usable_state(window, qtbot, tiny_dir, load_model_in, capture_in, library_dir)
    assert failures == [], failures
    assert sum(1 for a in monkey.log if a == "generate") > n // 20


@pytest.mark.parametrize("seed", [1])
def test_monkey_100_actions(
    seed, loaded_window, qtbot, tiny_dir, capture_in, load_model_in, library_dir, failures
):
    monkey_run(100, seed, loaded_window, qtbot, tiny_dir, capture_in, load_model_in, library_dir, failures)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4, 5, 6, 7])
def test_monkey_500_actions(
    seed, loaded_window, qtbot, tiny_dir, capture_in, load_model_in, library_dir, failures
):
    monkey_run(500, seed, loaded_window, qtbot, tiny_dir, capture_in, load_model_in, library_dir, failures)
