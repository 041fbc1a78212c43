"""`SteeringServer`: the OpenAI-compatible server's lifecycle, for the CLI (foreground) and the GUI (background).

    server = SteeringServer(loaded, library, port=0, lock=model_lock, on_request=log_line)
    url = server.start()          # uvicorn in a background thread; returns "http://127.0.0.1:PORT/v1"
    ...
    server.stop()                 # graceful: stop listening, let open requests finish, then stop the batcher

`lock` is any context manager shared with the other users of the loaded model (the GUI worker): every
generate call of the server holds it. `on_request` receives a `RequestLog` per generation request, on the
server's thread; a GUI must hand it over to its own thread.
"""

from __future__ import annotations

import ipaddress
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import uvicorn

from engine.errors import ActAddError, InvalidInputError
from engine.library import Library
from engine.models import LoadedModel
from engine.serve.app import RequestLog, ServeState, create_app
from engine.serve.batcher import Batcher
from engine.serve.steering_spec import VectorResolver

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Loopback by default; any other address serves the network and so needs an API key."""
    if not is_loopback(host) and not api_key:
        raise InvalidInputError(
            f"binding to {host} makes the model reachable from other computers; set an API key (--api-key)"
        )
    if api_key is not None and (not api_key.strip() or not api_key.isprintable() or not api_key.isascii()):
        raise InvalidInputError("the API key must be printable ASCII text")


def served_model_id(loaded: LoadedModel) -> str:
    """The model name clients send: "demo", or the model folder's (or hub id's) last part."""
    source = loaded.info.source
    name = "demo" if source in ("demo", "None") else Path(source).name or "model"
    return name.replace("+", "-")  # '+' starts the steering shorthand


class _Stopped(Exception):
    """SIGTERM, re-raised by uvicorn after its graceful shutdown."""


def _stop_quietly(signum, frame) -> None:
    raise _Stopped


class SteeringServer:
    def __init__(
        self,
        loaded: LoadedModel,
        library: Library | str | Path | None = None,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        api_key: str | None = None,
        *,
        model_id: str | None = None,
        lock: AbstractContextManager | None = None,
        on_request: Callable[[RequestLog], None] | None = None,
        max_batch: int = 8,
        batch_window_ms: float = 10.0,
        max_queue: int = 64,
        max_body_bytes: int = 1024 * 1024,
        default_max_tokens: int = 256,
        shutdown_timeout_s: float = 10.0,
    ):
        check_bind(host, api_key)
        if not 0 <= port <= 65535:
            raise InvalidInputError(f"port {port} is not between 0 and 65535")
        if max_batch < 1 or max_queue < 1 or batch_window_ms < 0:
            raise InvalidInputError(
                "max_batch and max_queue must be at least 1, batch_window_ms not negative"
            )
        self.loaded = loaded
        self.library = library if isinstance(library, Library) else Library(library)
        self.host, self.port, self.api_key = host, port, api_key
        self.model_id = model_id or served_model_id(loaded)
        if "+" in self.model_id:
            raise InvalidInputError(
                "the served model name cannot contain '+' (it starts the steering shorthand)"
            )
        self.lock = lock
        self.on_request = on_request
        self.shutdown_timeout_s = shutdown_timeout_s
        self.max_batch = max_batch
        self.batch_window_s = batch_window_ms / 1000
        self.max_queue = max_queue
        self._max_body_bytes = max_body_bytes
        self._default_max_tokens = default_max_tokens
        self.batcher: Batcher | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._bound_port: int | None = None

    # ---- building -----------------------------------------------------------------------------------
    def _make_server(self) -> uvicorn.Server:
        self.batcher = Batcher(
            self.loaded,
            max_batch=self.max_batch,
            window_s=self.batch_window_s,
            max_queue=self.max_queue,
            lock=self.lock,
        )
        state = ServeState(
            resolver=VectorResolver(self.loaded, self.library),
            batcher=self.batcher,
            model_id=self.model_id,
            api_key=self.api_key,
            default_max_tokens=self._default_max_tokens,
            on_request=self.on_request,
            shutdown_grace_s=max(0.0, self.shutdown_timeout_s - 1),
        )
        app = create_app(state, max_body_bytes=self._max_body_bytes)
        config = uvicorn.Config(
            app,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=int(self.shutdown_timeout_s),
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        return self._server

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.started and not self._server.should_exit

    @property
    def url(self) -> str:
        """The base URL clients use (OpenAI's `base_url`), with the port actually bound."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.bound_port}/v1"

    @property
    def bound_port(self) -> int:
        """The port listened on (the one the system picked for port 0), also after stop()."""
        if self._bound_port is None and self._server is not None and self._server.started:
            for listener in self._server.servers:
                for sock in listener.sockets:
                    self._bound_port = int(sock.getsockname()[1])
        return self._bound_port or self.port

    # ---- background (GUI, tests) ---------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> str:
        """Serve from a background thread; returns the base URL once the port is listening."""
        if self._thread is not None:
            raise InvalidInputError("the server is already running")
        server = self._make_server()
        failed: list[BaseException] = []

        def serve() -> None:
            try:
                server.run()
            except BaseException as exc:  # uvicorn exits with SystemExit when the port is taken
                failed.append(exc)

        self._thread = threading.Thread(target=serve, name="actadd-serve", daemon=True)
        self._thread.start()
        while not server.started and self._thread.is_alive():
            self._thread.join(0.02)
            timeout -= 0.02
            if timeout <= 0:
                self.stop()
                raise ActAddError(f"the server did not start listening on {self.host}:{self.port}")
        if not server.started:
            self._thread = None
            self._close_batcher()
            raise ActAddError(f"cannot listen on {self.host}:{self.port} (is the port in use?)")
        self.bound_port  # noqa: B018  # read it while the socket is open
        return self.url

    def stop(self) -> None:
        """Graceful: stop accepting, let open requests finish (up to the shutdown timeout), then stop."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self.shutdown_timeout_s + 5)
            self._thread = None
        self._close_batcher()

    def _close_batcher(self) -> None:
        if self.batcher is not None:
            self.batcher.close(timeout=self.shutdown_timeout_s)
            self.batcher = None

    # ---- foreground (CLI) ------------------------------------------------------------------------------
    def serve_forever(self, on_started: Callable[[str], None] | None = None) -> None:
        """Serve on this thread until Ctrl-C or SIGTERM, then shut down gracefully and return.

        uvicorn catches the signal, drains open requests, then raises the signal again for the handler
        that was there before; on the main thread that handler ends the wait quietly here.
        """
        server = self._make_server()
        if on_started is not None:
            watcher = threading.Thread(target=self._announce, args=(server, on_started), daemon=True)
            watcher.start()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _stop_quietly)
        try:
            server.run()
        except (KeyboardInterrupt, _Stopped):
            pass  # the signal uvicorn re-raised once it had shut down
        except SystemExit:  # uvicorn exits when it cannot bind: reported below as one line
            if server.started:
                raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self._close_batcher()
        if not server.started:
            raise ActAddError(f"cannot listen on {self.host}:{self.port} (is the port in use?)")

    def _announce(self, server: uvicorn.Server, on_started: Callable[[str], None]) -> None:
        while not server.started and not server.should_exit:
            threading.Event().wait(0.02)
        if server.started:
            on_started(self.url)  # also records bound_port while the socket is open
