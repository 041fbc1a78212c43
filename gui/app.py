"""The application: QApplication, the main window and `run(argv)` (what `python main.py` calls)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Qt, QTimer, QUrl, Slot
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDesktopServices,
    QDragEnterEvent,
    QDropEvent,
    QIcon,
    QKeySequence,
    QShortcut,
)
from PySide6.QtWidgets import QApplication, QFileDialog, QLabel, QMainWindow, QMessageBox, QTabWidget

from engine import __version__
from engine.log_filters import install_log_filters
from engine.model_stats import format_megabytes
from engine.resources import resources_dir
from gui.context import AppContext
from gui.controller import wait_for_orphans
from gui.panels.capture import CapturePanel
from gui.panels.chat import ChatPanel
from gui.panels.generate import GeneratePanel
from gui.panels.library import LibraryPanel
from gui.panels.model import ModelPanel
from gui.panels.model_info import display_name
from gui.panels.serve import ServePanel
from gui.panels.sweep import SweepPanel
from gui.qt_platform import warn_if_xcb_broken

APP_NAME = "ActAdd Studio"
RESOURCES = resources_dir()
ICON_PATH = RESOURCES / "icons" / "actadd-studio.svg"
CLOSE_BUDGET_MS = 1000  # closing must never take longer than this, whatever the worker is doing
BUSY_TEXT = {
    "load": "loading the model…",
    "unload": "unloading…",
    "capture": "capturing…",
    "generate": "generating…",
    "sweep": "sweeping…",
    "suggest": "suggesting settings…",
}


def app_icon() -> QIcon:
    for path in (ICON_PATH, ICON_PATH.with_suffix(".png")):
        if path.exists():
            icon = QIcon(str(path))
            if not icon.isNull():
                return icon
    return QIcon()


class GuiThreadGarbageCollector(QObject):
    """Runs Python's cyclic garbage collector on the GUI thread only, while a window is open.

    Automatic collection runs in whichever thread happens to allocate when the thresholds trip. When that
    is the worker's model-loading thread and the pending garbage holds Qt wrappers (a closed dialog, an old
    window), their C++ objects are destroyed off the GUI thread and Qt crashes (a segfault seen in the GUI
    tests). So automatic collection is off while a window lives, and a timer on the GUI thread collects
    with the same generation thresholds. The last window to close collects and turns it back on.
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
        gc.collect()
        GuiThreadGarbageCollector._open -= 1
        if GuiThreadGarbageCollector._open == 0:
            gc.enable()


class MainWindow(QMainWindow):
    def __init__(
        self,
        settings: QSettings | None = None,
        library_root: str | Path | None = None,
        autoload: str | None = "demo",
    ):
        super().__init__()
        self.setWindowTitle(APP_NAME)
        self.setWindowIcon(app_icon())
        self._settings = settings if settings is not None else QSettings()
        root = library_root or self._settings.value("library/path", "") or None
        self.context = AppContext(self._settings, root, self)
        self._error_box: QMessageBox | None = None
        self.garbage_collector = GuiThreadGarbageCollector(self)
        self.errors: list[tuple[str, str]] = []  # every error shown, newest last (tests and the log)

        self.model_panel = ModelPanel(self.context)
        self.capture_panel = CapturePanel(self.context)
        self.generate_panel = GeneratePanel(self.context)
        self.library_panel = LibraryPanel(self.context)
        self.sweep_panel = SweepPanel(self.context)
        self.chat_panel = ChatPanel(self.context, self.generate_panel.vector_rows)  # Generate's vectors
        self.serve_panel = ServePanel(self.context)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        for panel, title, tip in (
            (self.model_panel, "Model", "Load a local model (the demo model works offline)"),
            (self.capture_panel, "Capture", "Make a steering vector from prompts"),
            (self.generate_panel, "Generate", "Steered and unsteered text side by side"),
            (self.library_panel, "Library", "Your saved vectors"),
            (self.sweep_panel, "Sweep", "Which layer, how strong?"),
            (self.chat_panel, "Chat", "Chat under the model's template, steered on every assistant turn"),
            (self.serve_panel, "Serve", "The loaded model as an OpenAI-compatible local endpoint"),
        ):
            self.tabs.addTab(panel, title)
            self.tabs.setTabToolTip(self.tabs.count() - 1, tip)
        self.setCentralWidget(self.tabs)
        self.setAcceptDrops(True)  # drop a .gguf file or a model folder anywhere on the window to open it

        self._model_label = QLabel("No model")
        self._model_label.setToolTip("The loaded model")
        self._memory_label = QLabel("")
        self._memory_label.setToolTip("Resident memory of the app / CUDA memory allocated")
        self._worker_label = QLabel("idle")
        self._worker_label.setToolTip("What the model worker thread is doing")
        bar = self.statusBar()
        bar.addPermanentWidget(self._worker_label)
        bar.addPermanentWidget(self._memory_label)
        bar.addPermanentWidget(self._model_label)

        self._build_menus()
        self._build_shortcuts()

        controller = self.context.controller
        controller.started.connect(self._on_worker_started)
        controller.busy_changed.connect(self._on_busy_changed)
        controller.memory.connect(self._on_memory)
        self.context.error.connect(self.show_error)
        self.context.status.connect(lambda message: self.statusBar().showMessage(message, 6000))
        self.context.model_changed.connect(self._on_model_changed)
        self.context.use_vector.connect(lambda _: self.tabs.setCurrentWidget(self.generate_panel))
        self.context.model_changed.connect(  # the Chat tab is there for models with a chat template
            lambda _: self.tabs.setTabVisible(
                self.tabs.indexOf(self.chat_panel), self.chat_panel.has_template()
            )
        )
        self.tabs.setTabVisible(self.tabs.indexOf(self.chat_panel), False)
        self.context.apply_steering.connect(lambda _: self.tabs.setCurrentWidget(self.generate_panel))

        self.read_settings()
        self.context.refresh_library()
        if autoload:
            QTimer.singleShot(0, lambda: self._autoload(autoload))

    def _autoload(self, source: str) -> None:
        """Load the start-up model; a last-used model that no longer loads falls back to the demo."""
        job = self.model_panel.load_source(source)
        if job is not None and source != "demo":
            job.failed.connect(lambda message: self._fall_back_to_demo(source, message))

    def _fall_back_to_demo(self, source: str, message: str) -> None:
        self.context.show_status(f"Could not reopen {source} ({message}); loaded the demo model instead")
        QTimer.singleShot(0, lambda: self.model_panel.load_source("demo"))

    # ---- menus and shortcuts -----------------------------------------------------------------------------
    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        open_model = QAction("Open model file (.gguf)…", self)
        open_model.setShortcut(QKeySequence.StandardKey.Open)
        open_model.triggered.connect(self._open_model_file)
        open_folder = QAction("Open model folder…", self)
        open_folder.triggered.connect(self._open_model_folder)
        choose_library = QAction("Choose library folder…", self)
        choose_library.triggered.connect(self._choose_library)
        quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        for action in (open_model, open_folder, choose_library):
            file_menu.addAction(action)
        file_menu.addSeparator()
        file_menu.addAction(quit_action)

        run_menu = self.menuBar().addMenu("&Run")
        generate = QAction("Generate\tCtrl+Enter", self)
        generate.triggered.connect(self.generate)
        stop = QAction("Stop\tEsc", self)
        stop.triggered.connect(self.stop)
        run_menu.addAction(generate)
        run_menu.addAction(stop)

        help_menu = self.menuBar().addMenu("&Help")
        docs = QAction("User guide", self)
        docs.triggered.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(RESOURCES.parent / "docs" / "gui.md")))
        )
        about = QAction("About ActAdd Studio", self)
        about.triggered.connect(self._about)
        help_menu.addAction(docs)
        help_menu.addAction(about)

    def _build_shortcuts(self) -> None:
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
            shortcut.activated.connect(self.generate)
        escape = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        escape.setContext(Qt.ShortcutContext.WindowShortcut)
        escape.activated.connect(self.stop)

    @Slot()
    def generate(self) -> None:
        self.tabs.setCurrentWidget(self.generate_panel)
        self.generate_panel.generate()

    @Slot()
    def stop(self) -> None:
        if self.context.controller.busy or self.model_panel.fetching:
            self.model_panel.cancel_fetch()  # a model download is not a worker job
            self.context.controller.stop()
            self.statusBar().showMessage("Stopping…", 3000)

    @Slot()
    def _open_model_file(self) -> None:
        self.tabs.setCurrentWidget(self.model_panel)
        self.model_panel.browse_file()

    @Slot()
    def _open_model_folder(self) -> None:
        self.tabs.setCurrentWidget(self.model_panel)
        self.model_panel.browse_folder()

    # ---- drag and drop --------------------------------------------------------------------------------------
    @staticmethod
    def dropped_model(event: QDragEnterEvent | QDropEvent) -> Path | None:
        """The one local .gguf file or folder being dragged, if that is what it is."""
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        if len(urls) != 1 or not urls[0].isLocalFile():
            return None
        path = Path(urls[0].toLocalFile())
        return path if path.is_dir() or (path.is_file() and path.suffix.lower() == ".gguf") else None

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self.dropped_model(event) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        path = self.dropped_model(event)
        if path is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.tabs.setCurrentWidget(self.model_panel)
        self.model_panel.load_source(str(path))

    @Slot()
    def _choose_library(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Choose the library folder", str(self.context.library.root)
        )
        if folder:
            self.set_library_root(folder)

    def set_library_root(self, folder: str | Path) -> None:
        self.context.set_library_root(folder)
        self._settings.setValue("library/path", str(folder))

    @Slot()
    def _about(self) -> None:
        QMessageBox.about(
            self,
            "About ActAdd Studio",
            f"<b>ActAdd Studio {__version__}</b><br>Activation addition (Turner et al.) for local language "
            "models: capture steering vectors, steer side by side, sweep layers and coefficients.",
        )

    # ---- feedback ---------------------------------------------------------------------------------------
    @Slot(str, str)
    def show_error(self, title: str, message: str) -> None:
        """A readable, non-blocking dialog; nothing typed anywhere is touched."""
        self.errors.append((title, message))
        logging.getLogger(__name__).warning("%s: %s", title, message)
        if self._error_box is not None:
            self._error_box.close()
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle(title)
        box.setText(f"<b>{title}</b>")
        box.setInformativeText(message)
        box.setStandardButtons(QMessageBox.StandardButton.Ok)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _: setattr(self, "_error_box", None))
        self._error_box = box
        box.open()
        self.statusBar().showMessage(f"{title}: {message}", 10000)

    def error_dialog(self) -> QMessageBox | None:
        return self._error_box

    @Slot(str)
    def _on_worker_started(self, kind: str) -> None:
        self._worker_label.setText(BUSY_TEXT.get(kind, kind + "…"))

    @Slot(bool)
    def _on_busy_changed(self, busy: bool) -> None:
        if not busy:
            self._worker_label.setText("idle")

    @Slot(dict)
    def _on_memory(self, report: dict) -> None:
        text = f"RAM {format_megabytes(report.get('rss_mb'))}"
        if "vram_allocated_mb" in report:
            text += f" · VRAM {format_megabytes(report['vram_allocated_mb'])}"
        self._memory_label.setText(text)

    @Slot(object)
    def _on_model_changed(self, handle) -> None:
        if handle is None:
            self._model_label.setText("No model")
            self.setWindowTitle(APP_NAME)
            return
        info = handle.info
        name = display_name(info)  # a .gguf by its file name, not its converted cache folder
        self._model_label.setText(f"{name} · {info.architecture} · {info.n_layers} layers · {info.device}")
        self.setWindowTitle(f"{APP_NAME} — {name}")

    # ---- settings and closing ----------------------------------------------------------------------------
    def read_settings(self) -> None:
        geometry = self._settings.value("window/geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1280, 820)
        state = self._settings.value("window/state")
        if state is not None:
            self.restoreState(state)
        self.tabs.setCurrentIndex(int(self._settings.value("window/tab", 0)))

    def write_settings(self) -> None:
        self._settings.setValue("window/geometry", self.saveGeometry())
        self._settings.setValue("window/state", self.saveState())
        self._settings.setValue("window/tab", self.tabs.currentIndex())
        self._settings.setValue("library/path", str(self.context.library.root))
        for panel in (
            self.model_panel,
            self.capture_panel,
            self.generate_panel,
            self.sweep_panel,
            self.serve_panel,
        ):
            panel.write_settings()
        self._settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        started = time.monotonic()
        self.model_panel.cancel_fetch()  # its thread stops at its next chunk, or with pip
        self.write_settings()
        self.serve_panel.shutdown(200)  # stop listening first; open requests finish on a daemon thread
        # Cancel whatever runs, quit the worker's event loop and wait, all within the budget.
        budget = CLOSE_BUDGET_MS - int((time.monotonic() - started) * 1000)
        self.context.controller.shutdown(max(100, budget - 100))
        remaining = CLOSE_BUDGET_MS - int((time.monotonic() - started) * 1000)
        self.context.tasks.wait(max(0, remaining))
        self.garbage_collector.stop()
        event.accept()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="actadd-studio", description="ActAdd Studio desktop app")
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="model folder, .gguf file or cached hub id to load (default: the demo model)",
    )
    parser.add_argument(
        "--library", metavar="DIR", help="vector library folder (default: $ACTADD_LIBRARY or app data)"
    )
    parser.add_argument("--no-autoload", action="store_true", help="start without loading a model")
    args, _qt_args = parser.parse_known_args(argv)
    return args


def startup_model(args: argparse.Namespace, settings: QSettings) -> str | None:
    """What to load at start: --model, else the last model used (the workspace comes back, with its
    quantization, device and dtype from the Model tab's settings), else the demo model. A last model that
    fails to load falls back to the demo (MainWindow._autoload)."""
    if args.no_autoload:
        return None
    if args.model:
        return args.model
    last = str(settings.value("model/last", "") or "")
    return last or "demo"  # "demo" reports clearly when it is missing


def run(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    install_log_filters()
    if QApplication.instance() is None:  # Qt aborts the process if its platform plugin fails: explain first
        warn_if_xcb_broken(argv, os.environ)
    app = QApplication.instance() or QApplication(
        [sys.argv[0], *[a for a in argv if a.startswith("-platform")]]
    )
    app.setOrganizationName(APP_NAME)
    app.setApplicationName(APP_NAME)
    app.setApplicationVersion(__version__)
    app.setWindowIcon(app_icon())
    settings = QSettings()
    window = MainWindow(settings=settings, library_root=args.library, autoload=startup_model(args, settings))
    window.show()
    code = app.exec()
    wait_for_orphans()
    return code
