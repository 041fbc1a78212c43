"""The Serve tab: the loaded model behind the OpenAI-compatible endpoint (`engine.serve.SteeringServer`).

The server shares the worker's loaded model rather than loading a second copy. Its generate calls hold
the worker's `model_lock` (`gui.worker.ModelWorker`), which the worker also holds while it runs a job, so
the two never run a forward pass at the same time. Starting and stopping run on the task pool (a graceful
stop lets open requests finish), so the GUI never waits on the network. The server calls `on_request` on
its own thread; a Qt signal carries each entry to this panel on the GUI thread.

Loading or unloading a model stops the server before the worker touches the model; when a new model is
in, serving resumes on it at the same address, and the status bar says so. Closing the app stops it too.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.errors import ActAddError
from gui.context import AppContext
from gui.jobs import Job, LoadRequest, UnloadRequest

if TYPE_CHECKING:  # FastAPI, uvicorn and pydantic load when serving starts, not with the window
    from engine.serve.app import RequestLog
    from engine.serve.server import SteeringServer

log = logging.getLogger(__name__)
# engine.serve.server's DEFAULT_HOST and DEFAULT_PORT (tests/gui/test_gui_serve.py checks they agree),
# spelled out so that opening the app does not import the web stack: every object it creates is one
# more for the garbage collector to walk when the window closes, within the 1 s closing budget.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_LOG_ROWS = 1000  # oldest rows dropped beyond this: the log never grows without bound
SHUTDOWN_TIMEOUT_S = 5.0  # a graceful stop lets open requests run this long


class _RequestBridge(QObject):
    """Lives on the GUI thread; `logged.emit` from the server's thread is queued to the panel's slot."""

    logged = Signal(object)  # RequestLog


class ServePanel(QWidget):
    state_changed = Signal(str)  # "off" | "starting" | "serving" | "stopping"

    def __init__(self, context: AppContext, parent=None):
        super().__init__(parent)
        self._ctx = context
        self._worker = context.controller.worker
        self.server: SteeringServer | None = None
        self.state = "off"
        self.url = ""
        self._stop_after_start = False
        self._stop_message = ""
        self._model_job: Job | None = None  # a load or unload that stopped the server
        self._model_job_done = False
        self._bridge = _RequestBridge(self)
        self._bridge.logged.connect(self._on_request_logged)

        self.serve_button = QPushButton("Serve")
        self.serve_button.setCheckable(True)
        self.serve_button.setToolTip(
            "Serve the loaded model as an OpenAI-compatible endpoint (per-request steering via 'steering')"
        )
        self.serve_button.toggled.connect(self._on_toggled)
        self.host = QLineEdit(DEFAULT_HOST)
        self.host.setToolTip("127.0.0.1 serves this computer only; any other address needs an API key")
        self.port = QSpinBox()
        self.port.setRange(0, 65535)
        self.port.setValue(DEFAULT_PORT)
        self.port.setToolTip("The TCP port (0: any free port)")
        self.api_key = QLineEdit()
        self.api_key.setEchoMode(QLineEdit.EchoMode.Password)
        self.api_key.setPlaceholderText("required for an address other than 127.0.0.1")
        self.api_key.setToolTip("Clients send it as 'Authorization: Bearer KEY' (OpenAI's api_key)")
        self.host.textChanged.connect(self._update_key_hint)
        self.base_url = QLineEdit()
        self.base_url.setReadOnly(True)
        self.base_url.setPlaceholderText("not serving")
        self.base_url.setToolTip("Point a chat front end or OpenAI's client (base_url) here")
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the base URL")
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.base_url.text()))
        self.copy_button.setEnabled(False)
        self.model_name = QLabel("")
        self.model_name.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.model_name.setToolTip("The model name clients send; add '+vector:coeff' to steer by name")
        self.status = QLabel("Not serving.")
        self.status.setWordWrap(True)

        self.log_table = QTableWidget(0, 7)
        self.log_table.setHorizontalHeaderLabels(
            ["Time", "Route", "Model", "Status", "Steering", "Tokens (prompt / completion)", "Seconds"]
        )
        self.log_table.verticalHeader().setVisible(False)
        self.log_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.log_table.horizontalHeader().setStretchLastSection(True)
        self.log_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.log_table.setToolTip("Every generation request, newest last; errors in the row's tooltip")
        clear_log = QPushButton("Clear log")
        clear_log.clicked.connect(lambda: self.log_table.setRowCount(0))

        settings_box = QGroupBox("Endpoint")
        form = QFormLayout(settings_box)
        form.addRow("Host:", self.host)
        form.addRow("Port:", self.port)
        form.addRow("API key:", self.api_key)
        url_row = QHBoxLayout()
        url_row.addWidget(self.base_url, 1)
        url_row.addWidget(self.copy_button)
        form.addRow("Base URL:", url_row)
        form.addRow("Model name:", self.model_name)
        form.addRow(self.serve_button)
        form.addRow(self.status)
        log_box = QGroupBox("Requests")
        log_layout = QVBoxLayout(log_box)
        log_layout.addWidget(self.log_table, 1)
        log_buttons = QHBoxLayout()
        log_buttons.addStretch(1)
        log_buttons.addWidget(clear_log)
        log_layout.addLayout(log_buttons)
        layout = QVBoxLayout(self)
        layout.addWidget(settings_box)
        layout.addWidget(log_box, 1)

        context.controller.job_submitted.connect(self._on_job_submitted)
        context.model_changed.connect(self._on_model_changed)
        self._on_model_changed(context.model)
        self.read_settings()

    # ---- state ----------------------------------------------------------------------------------------------
    def _set_state(self, state: str, message: str) -> None:
        self.state = state
        self.status.setText(message)
        serving = state == "serving"
        self.base_url.setText(self.url if serving else "")
        self.copy_button.setEnabled(serving)
        for widget in (self.host, self.port, self.api_key):
            widget.setEnabled(state == "off")
        self.serve_button.blockSignals(True)  # the button shows the state; it does not re-trigger it
        self.serve_button.setChecked(state in ("starting", "serving"))
        self.serve_button.blockSignals(False)
        self.serve_button.setEnabled(state in ("off", "serving") and (self._ctx.model is not None or serving))
        self.serve_button.setText({"serving": "Stop serving", "starting": "Starting…", "stopping": "Stopping…"}
                                  .get(state, "Serve"))  # fmt: skip
        self.state_changed.emit(state)

    @Slot(str)
    def _update_key_hint(self, host: str) -> None:
        host = host.strip()
        needs = False
        if host not in ("", DEFAULT_HOST, "localhost"):
            from engine.serve.server import is_loopback  # the engine's one rule

            needs = not is_loopback(host)
        self.api_key.setPlaceholderText(
            "required: this address is reachable from other computers" if needs else "optional on 127.0.0.1"
        )

    # ---- starting and stopping ---------------------------------------------------------------------------
    @Slot(bool)
    def _on_toggled(self, on: bool) -> None:
        if on:
            self.start()
        else:
            self.stop()

    def start(self, note: str = "") -> None:
        """Serve the loaded model on the chosen address (the bind happens on the task pool)."""
        if self.state != "off":
            return
        loaded = self._worker.loaded  # the worker's model, shared; every use of it holds model_lock
        if self._ctx.model is None or loaded is None:
            self._refuse("Load a model first.")
            return
        host, key = self.host.text().strip() or DEFAULT_HOST, self.api_key.text().strip() or None
        from engine.serve.server import SteeringServer, check_bind

        try:
            check_bind(host, key)
            server = SteeringServer(
                loaded,
                self._ctx.library,
                host=host,
                port=self.port.value(),
                api_key=key,
                lock=self._worker.model_lock,
                on_request=self._bridge.logged.emit,  # the server's thread -> queued to the GUI thread
                shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
            )
        except ActAddError as exc:
            self._refuse(str(exc))
            return
        self.server = server
        self.model_name.setText(server.model_id)
        self._set_state("starting", "Starting…")
        self._ctx.tasks.submit(server.start, lambda url: self._on_started(server, url, note),
                               lambda message: self._on_start_failed(server, message))  # fmt: skip

    def _refuse(self, message: str) -> None:
        self._set_state("off", message)
        self._ctx.report_error("Serve", message)

    def _on_started(self, server: SteeringServer, url: object, note: str) -> None:
        if server is not self.server:  # shut down meanwhile
            return
        self.url = str(url)
        if self._stop_after_start:  # Stop (or a model change) came while it was starting
            self._stop_after_start = False
            self.state = "serving"
            self.stop(self._stop_message)
            return
        self._set_state("serving", (note + " " if note else "") + f"Serving {server.model_id} at {self.url}")
        self._ctx.show_status(f"Serving at {self.url}")

    def _on_start_failed(self, server: SteeringServer, message: str) -> None:
        if server is self.server:
            self.server = None
            self._refuse(message)

    def stop(self, message: str = "Stopped.") -> None:
        """Stop gracefully on the task pool: stop listening, let open requests finish, free the batcher."""
        server = self.server
        if self.state == "starting":
            self._stop_after_start, self._stop_message = True, message
            return
        if server is None or self.state == "stopping":
            if self.state != "stopping":
                self._set_state("off", message)
            return
        self._set_state("stopping", "Stopping… (open requests may finish)")

        def stopped(_=None) -> None:
            if self.server is server:
                self.server = None
                self.url = ""
                self._set_state("off", message)
                self._maybe_resume()

        self._ctx.tasks.submit(server.stop, stopped, lambda error: stopped())

    def shutdown(self, timeout_ms: int = 300) -> None:
        """On closing the app: stop without the event loop, waiting at most `timeout_ms` (a daemon thread
        finishes the graceful stop if open requests take longer; it never keeps the process alive)."""
        server, self.server = self.server, None
        self._model_job = None
        if server is None:
            return
        thread = threading.Thread(target=server.stop, name="actadd-serve-stop", daemon=True)
        thread.start()
        thread.join(timeout_ms / 1000)

    def is_serving(self) -> bool:
        return self.state == "serving" and self.server is not None and self.server.running

    # ---- the model changing under the server -----------------------------------------------------------
    @Slot(object)
    def _on_job_submitted(self, job: Job) -> None:
        """A load or unload frees the shared model: stop serving before the worker gets to it, and after
        a load serve again on whatever model is then loaded (the new one, or the old one if it failed)."""
        if not isinstance(job.request, (LoadRequest, UnloadRequest)) or self.server is None:
            return
        if isinstance(job.request, LoadRequest):
            self._model_job, self._model_job_done = job, False
            job.finished.connect(self._on_model_job_finished)
        else:
            self._model_job = None
        self.stop("The model is changing: the server stopped.")
        self._ctx.show_status("The model is changing: the server stopped")

    @Slot()
    def _on_model_job_finished(self) -> None:
        self._model_job_done = True
        self._maybe_resume()

    def _maybe_resume(self) -> None:
        """Serve again once both the stop and the load are over (they finish in either order)."""
        if self._model_job is None or not self._model_job_done or self.state != "off" or self.server:
            return
        self._model_job = None
        if self._ctx.model is None:
            return
        info = self._ctx.model.info
        name = "the demo model" if info.source == "demo" else info.path
        self.start(note=f"The model changed: serving {name} now.")
        self._ctx.show_status("The model changed: the server restarted on the loaded model")

    @Slot(object)
    def _on_model_changed(self, handle) -> None:
        if self.state in ("off", "serving"):
            self._set_state(self.state, self.status.text())

    # ---- the request log -------------------------------------------------------------------------------
    @Slot(object)
    def _on_request_logged(self, entry: RequestLog) -> None:
        table = self.log_table
        if table.rowCount() >= MAX_LOG_ROWS:
            table.removeRow(0)
        row = table.rowCount()
        table.insertRow(row)
        cells = [
            time.strftime("%H:%M:%S"),
            entry.path,
            entry.model,
            str(entry.status),
            ", ".join(entry.steering) or "–",
            f"{entry.prompt_tokens} / {entry.completion_tokens}",
            f"{entry.seconds:.2f}",
        ]
        for column, text in enumerate(cells):
            item = QTableWidgetItem(text)
            tip = entry.error or entry.finish_reason
            if tip:
                item.setToolTip(tip)
            table.setItem(row, column, item)
        table.scrollToBottom()

    def log_rows(self) -> list[list[str]]:
        table = self.log_table
        return [
            [
                item.text() if (item := table.item(r, c)) is not None else ""
                for c in range(table.columnCount())
            ]
            for r in range(table.rowCount())
        ]

    # ---- settings -----------------------------------------------------------------------------------------
    def read_settings(self) -> None:
        settings = self._ctx.settings
        self.host.setText(str(settings.value("serve/host", DEFAULT_HOST)))
        self.port.setValue(int(str(settings.value("serve/port", DEFAULT_PORT))))

    def write_settings(self) -> None:
        # The API key is a secret: it is not written to the settings file.
        self._ctx.settings.setValue("serve/host", self.host.text().strip() or DEFAULT_HOST)
        self._ctx.settings.setValue("serve/port", self.port.value())
