"""The main window: the tabs, menus and shortcuts, drag and drop, error dialogs, settings and closing."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, QUrl, Slot
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
from PySide6.QtWidgets import QFileDialog, QMainWindow, QMessageBox, QTabWidget

from engine import __version__
from engine.resources import resources_dir
from gui.context import AppContext
from gui.garbage import GuiThreadGarbageCollector
from gui.panels.capture import CapturePanel
from gui.panels.chat import ChatPanel
from gui.panels.generate import GeneratePanel
from gui.panels.library import LibraryPanel
from gui.panels.model import ModelPanel
from gui.panels.model_info import display_name
from gui.panels.serve import ServePanel
from gui.panels.sweep import SweepPanel
from gui.status_bar import WorkerStatus

APP_NAME = "ActAdd Studio"
RESOURCES = resources_dir()
ICON_PATH = RESOURCES / "icons" / "actadd-studio.svg"
CLOSE_BUDGET_MS = 1000  # closing must never take longer than this, whatever the worker is doing


def app_icon() -> QIcon:
    for path in (ICON_PATH, ICON_PATH.with_suffix(".png")):
        if path.exists():
            icon = QIcon(str(path))
            if not icon.isNull():
                return icon
    return QIcon()


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

        self.status = WorkerStatus(self.statusBar(), self.context)

        self._build_menus()
        self._build_shortcuts()

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

    @Slot(object)
    def _on_model_changed(self, handle) -> None:
        self.setWindowTitle(APP_NAME if handle is None else f"{APP_NAME} — {display_name(handle.info)}")

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
