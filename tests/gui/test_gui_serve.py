"""The Serve tab: the loaded model behind the OpenAI-compatible endpoint, shared with the worker."""

from __future__ import annotations

import httpx
import pytest

from gui.jobs import NormsRequest

pytestmark = pytest.mark.gui


def _serve(panel, qtbot):
    panel.port.setValue(0)  # any free loopback port
    with qtbot.waitSignal(panel.state_changed, timeout=30_000, check_params_cb=lambda s: s == "serving"):
        panel.serve_button.click()
    assert panel.is_serving()
    return panel.base_url.text()


def _unserve(panel, qtbot):
    with qtbot.waitSignal(panel.state_changed, timeout=30_000, check_params_cb=lambda s: s == "off"):
        panel.serve_button.click()


def test_toggle_serves_logs_a_request_and_stops(loaded_window, qtbot):
    panel = loaded_window.serve_panel
    url = _serve(panel, qtbot)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    server = panel.server
    assert server.lock is loaded_window.context.controller.worker.model_lock  # shared with the worker
    assert server.loaded is loaded_window.context.controller.worker.loaded  # no second copy
    model = panel.model_name.text()
    response = httpx.post(
        url + "/completions", json={"model": model, "prompt": "Hello", "max_tokens": 3, "seed": 1}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 1
    qtbot.waitUntil(lambda: len(panel.log_rows()) == 1, timeout=10_000)
    row = panel.log_rows()[0]
    assert row[1] == "/v1/completions" and row[2] == model and row[3] == "200"
    # A bad request is a 4xx, logged or not, and the server stays up.
    bad = httpx.post(
        url + "/completions", json={"model": model, "prompt": "x", "max_tokens": "many"}, timeout=30
    )
    assert bad.status_code == 400
    assert httpx.get(url + "/models", timeout=30).status_code == 200

    _unserve(panel, qtbot)
    assert panel.server is None and not server.running
    assert panel.base_url.text() == "" and not panel.serve_button.isChecked()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/models", timeout=5)


def test_other_host_needs_an_api_key(loaded_window, qtbot):
    panel = loaded_window.serve_panel
    panel.host.setText("0.0.0.0")
    panel.api_key.clear()
    panel.serve_button.click()
    assert panel.state == "off" and panel.server is None and not panel.serve_button.isChecked()
    assert "API key" in loaded_window.errors[-1][1]
    assert "required" in panel.api_key.placeholderText()


def test_serve_without_a_model_is_refused(window):
    panel = window.serve_panel
    assert not panel.serve_button.isEnabled()
    panel.start()
    assert panel.state == "off" and "Load a model first" in panel.status.text()


def test_loading_another_model_restarts_the_server_on_it(loaded_window, qtbot, load_model_in, model_dirs):
    panel = loaded_window.serve_panel
    url = _serve(panel, qtbot)
    old = panel.server
    other = model_dirs["llama"]
    load_model_in(loaded_window, other)
    qtbot.waitUntil(lambda: panel.is_serving() and panel.server is not old, timeout=30_000)
    assert not old.running
    assert panel.server.loaded is loaded_window.context.controller.worker.loaded
    assert "The model changed" in panel.status.text()
    new_url = panel.base_url.text()
    assert httpx.get(new_url + "/models", timeout=30).status_code == 200
    assert new_url != url or old.bound_port == panel.server.bound_port
    _unserve(panel, qtbot)


def test_closing_the_app_stops_the_server(loaded_window, qtbot):
    panel = loaded_window.serve_panel
    url = _serve(panel, qtbot)
    server = panel.server
    loaded_window.close()
    qtbot.waitUntil(lambda: not server.running, timeout=10_000)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/models", timeout=5)


def test_worker_jobs_wait_for_the_model_lock(loaded_window, qtbot):
    """What the server holds while it generates: a worker job starts, then waits for the lock."""
    controller = loaded_window.context.controller
    lock = controller.worker.model_lock
    lock.acquire()
    try:
        job = controller.submit(NormsRequest())
        done = []
        job.done.connect(done.append)
        with qtbot.waitSignal(job.started, timeout=10_000):
            pass
        qtbot.wait(50)
        assert not done
    finally:
        lock.release()
    qtbot.waitUntil(lambda: bool(done), timeout=30_000)
    # Stop still works while a job waits for the lock.
    lock.acquire()
    try:
        job = controller.submit(NormsRequest())
        with qtbot.waitSignal(job.started, timeout=10_000):
            pass
        with qtbot.waitSignal(job.aborted, timeout=5_000):
            job.stop()
    finally:
        lock.release()


def test_an_abandoned_capture_keeps_the_model_lock_until_it_ends(qtbot):
    """Stop abandons a running capture; the model lock goes with it, so the server still waits for it."""
    import threading

    from engine.errors import CancelledError
    from gui.jobs import Job, UnloadRequest
    from gui.worker import ModelWorker

    worker = ModelWorker()  # not on a thread: driven directly, as its `run` does
    job = Job(UnloadRequest())
    release = threading.Event()
    job.stop()
    with pytest.raises(CancelledError), worker._model_held(Job(UnloadRequest())):
        worker._interruptible(lambda: release.wait(10), job)
    assert worker.model_lock.locked()  # held for the straggler, not released with the job
    release.set()
    worker._straggler.join(10)
    assert not worker.model_lock.locked()
    # A job that finishes normally releases it as before.
    with worker._model_held(Job(UnloadRequest())):
        assert worker._interruptible(lambda: 7, Job(UnloadRequest())) == 7
    assert not worker.model_lock.locked()


def test_serve_defaults_match_the_engine():
    from engine.serve import server
    from gui.panels import serve

    assert (serve.DEFAULT_HOST, serve.DEFAULT_PORT) == (server.DEFAULT_HOST, server.DEFAULT_PORT)
