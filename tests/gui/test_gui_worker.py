"""The model worker on its thread: the signal protocol, stop, live steering, errors."""

from __future__ import annotations

import threading

import pytest

from engine.generation import SamplingConfig
from gui.jobs import ActiveVector, CaptureRequest, GenerateRequest, LoadRequest

pytestmark = pytest.mark.gui


def _load(qtbot, controller, folder, on_progress=None):
    job = controller.load(LoadRequest(str(folder), device="cpu"))
    if on_progress is not None:
        job.progress.connect(on_progress)
    qtbot.waitSignals(
        [job.started, controller.model_loaded, job.finished], order="strict", timeout=30_000
    ).wait()
    return controller.model_info


def _capture(qtbot, controller, library_dir, name="love", layer=1):
    request = CaptureRequest(
        method="actadd",
        layers=[layer],
        name=name,
        library_root=str(library_dir),
        positive="Love",
        negative="Hate",
    )
    job = controller.capture(request)
    done = []
    job.done.connect(done.append)
    qtbot.waitSignals([job.done, job.finished], order="strict", timeout=20_000).wait()
    return done[-1]


def test_load_reports_progress_and_info(qtbot, controller, tiny_dir):
    stages = []
    info = _load(qtbot, controller, tiny_dir, on_progress=stages.append)
    assert info.architecture == "gpt2" and info.n_layers == 3 and info.hidden_size == 64
    assert stages[0][0] == "resolving" and stages[-1] == ("ready", 1.0)
    assert controller.worker.loaded is not None


def test_a_gguf_file_loads_through_the_worker(qtbot, controller, tmp_path, monkeypatch):
    from gguf_models import write_gguf

    monkeypatch.setenv("ACTADD_CACHE", str(tmp_path / "cache"))
    path = write_gguf(tmp_path / "tiny.gguf", "llama")
    stages = []
    info = _load(qtbot, controller, path, on_progress=lambda progress: stages.append(progress[0]))
    assert info.source == str(path) and info.architecture == "llama" and "converting" in stages


def test_bad_folder_is_errored_with_the_engines_message(qtbot, controller, tmp_path):
    errors = []
    job = controller.load(LoadRequest(str(tmp_path), device="cpu"))
    job.failed.connect(errors.append)
    qtbot.waitSignals([job.failed, job.finished], order="strict", timeout=10_000).wait()
    [message] = errors
    assert isinstance(job.request, LoadRequest) and "config.json" in message
    assert not controller.busy


def test_generate_streams_both_rows_and_stop_aborts(qtbot, controller, tiny_dir, library_dir):
    _load(qtbot, controller, tiny_dir)
    outcome = _capture(qtbot, controller, library_dir)
    rows = set()
    request = GenerateRequest(
        prompt="I think that you",
        vectors=[ActiveVector(outcome.path, "love", 4.0, mode="all")],
        sampling=SamplingConfig(temperature=0, max_new_tokens=20),
    )
    results = []
    job = controller.generate(request)
    job.token.connect(lambda delta: rows.add(delta.row))
    job.done.connect(results.append)
    qtbot.waitSignals([job.done, job.finished], order="strict", timeout=20_000).wait()
    assert rows == {0, 1}
    assert len(results[0].rows[0].token_ids) > 0 and not results[0].cancelled

    controller.worker.pace_s = 0.02
    request.sampling = SamplingConfig(temperature=0, max_new_tokens=100)
    job = controller.generate(request)
    job.token.connect(lambda delta: controller.stop())
    job.done.connect(results.append)
    qtbot.waitSignals([job.aborted, job.finished], order="strict", timeout=20_000).wait()
    assert not controller.busy
    assert results[1].cancelled and len(results[1].rows[1].token_ids) < 100


def test_live_coefficient_steers_from_the_next_token(qtbot, controller, tiny_dir, library_dir):
    """Start at c=0 (rows bit-identical, KL exactly 0), raise c mid-stream: KL turns positive after."""
    _load(qtbot, controller, tiny_dir)
    outcome = _capture(qtbot, controller, library_dir)
    controller.worker.pace_s = 0.01
    events = []
    applied = []
    sent = threading.Event()
    request = GenerateRequest(
        prompt="I think that you",
        vectors=[ActiveVector(outcome.path, "love", 0.0, mode="all", id=7)],
        sampling=SamplingConfig(temperature=0, max_new_tokens=60),
        effect=True,
    )
    job = controller.generate(request)

    def on_token(delta):
        events.append(delta)
        if delta.step >= 3 and not sent.is_set():
            sent.set()
            job.set_coefficient(7, 40.0)  # by the vector's id, as the Generate tab's slider does

    job.token.connect(on_token)
    job.coefficient_applied.connect(applied.append)
    qtbot.waitSignals([job.done, job.finished], order="strict", timeout=30_000).wait()
    assert not controller.busy
    assert len(applied) == 1 and applied[0].value == 40.0 and applied[0].index == 0
    change = applied[0].step
    assert 3 < change < 60
    kl = {d.step: d.kl for d in events if d.row == 1 and d.kl is not None}
    assert all(kl[s] == 0.0 for s in kl if s < change)
    assert any(kl[s] > 0.0 for s in kl if s >= change)


def test_a_bad_folder_keeps_the_loaded_model(qtbot, controller, tiny_dir, tmp_path):
    _load(qtbot, controller, tiny_dir)
    unloaded = []
    controller.model_unloaded.connect(lambda: unloaded.append(True))
    job = controller.load(LoadRequest(str(tmp_path), device="cpu"))
    qtbot.waitSignals([job.failed, job.finished], order="strict", timeout=10_000).wait()
    assert not unloaded and controller.worker.loaded is not None and controller.model_info is not None


def test_token_pane_colours_by_kl_with_a_tooltip(qtbot):
    from PySide6.QtGui import QTextCursor

    from gui.widgets.token_pane import TokenPane

    pane = TokenPane()
    qtbot.addWidget(pane)
    pane.clear_text("Prompt:")
    pane.append_token(" calm", kl=0.0, top=[(" calm", 0.5)])
    pane.append_token(" wedding", kl=1.5, top=[(" wedding", 0.6), (" bride", 0.2)])
    assert pane.generated_text() == " calm wedding"
    qtbot.waitUntil(lambda: pane.toPlainText() == "Prompt: calm wedding", timeout=2000)  # next loop pass
    cursor = pane.textCursor()
    cursor.movePosition(QTextCursor.MoveOperation.End)
    fmt = cursor.charFormat()
    assert "KL 1.500" in fmt.toolTip() and "' bride' 20%" in fmt.toolTip()
    assert fmt.background().color().alpha() > 100


def test_a_stopped_mean_diff_capture_reports_progress_and_stops_at_its_next_pass(
    qtbot, controller, tiny_dir, library_dir, monkeypatch
):
    import time

    import engine.capture
    from engine.pairs import PromptPair

    _load(qtbot, controller, tiny_dir)
    real = engine.capture.resid_pre
    passes: list[float] = []

    def slow(*args, **kwargs):
        passes.append(time.monotonic())
        time.sleep(0.3)  # each forward pass of a much bigger model
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.capture, "resid_pre", slow)
    words = ["rain", "sun", "snow", "fog", "wind", "hail", "dust", "mist", "heat", "cold"]
    pairs = [
        PromptPair(f"I love the {a} and the {b} by the sea", f"I hate the {a}") for a in words for b in words
    ]
    progress: list[tuple[int, int]] = []
    job = controller.capture(
        CaptureRequest(method="mean-diff", layers=[1], name="cut", library_root=str(library_dir), pairs=pairs)
    )
    job.progress.connect(progress.append)
    qtbot.waitUntil(lambda: len(progress) >= 2, timeout=20_000)
    assert all(total == 200 for _, total in progress) and progress[-1][0] < 200
    with qtbot.waitSignals([job.aborted, job.finished], order="strict", timeout=5000):
        controller.stop()
    at_stop = len(passes)
    straggler = controller.worker._straggler
    if straggler is not None:
        straggler.join(5)
        assert not straggler.is_alive()
    assert len(passes) <= at_stop + 1  # only the pass under way when Stop came finished
    assert progress[-1][0] < 200 and not (library_dir / "cut.safetensors").exists()


def test_token_pane_lays_out_tokens_that_arrive_together_once(qtbot):
    """Tokens queued in one pass of the event loop are inserted as one edit: one layout, not one each."""
    from gui.widgets.token_pane import TokenPane

    pane = TokenPane()
    qtbot.addWidget(pane)
    pane.clear_text("Prompt:")
    changes: list[int] = []
    pane.document().contentsChange.connect(lambda position, removed, added: changes.append(added))
    for i in range(500):
        pane.append_token(f" w{i}", kl=0.5 * (i % 3), top=[(" w", 0.5)])
        if i == 250:
            pane.append_marker("⟨c0=2⟩")
    assert pane.toPlainText() == "Prompt:"  # nothing laid out while the tokens keep coming
    qtbot.waitUntil(lambda: len(changes) > 0, timeout=2000)
    expected = "Prompt:" + "".join(f" w{i}" + ("⟨c0=2⟩" if i == 250 else "") for i in range(500))
    assert pane.toPlainText() == expected
    assert len(changes) == 1 and changes[0] == len(expected) - len("Prompt:")
    pane.append_token(" late")
    pane.clear_text("New prompt")  # a token queued before a clear never lands in the new text
    qtbot.wait(50)
    assert pane.toPlainText() == "New prompt" and pane.generated_text() == ""


def test_a_stopped_capture_saves_nothing_and_the_next_job_waits_for_it(
    qtbot, controller, tiny_dir, library_dir, monkeypatch
):
    import time

    import engine.capture

    _load(qtbot, controller, tiny_dir)
    real = engine.capture.resid_pre
    entered = threading.Event()

    def slow(*args, **kwargs):
        entered.set()
        time.sleep(1.5)  # a capture on a much bigger model
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.capture, "resid_pre", slow)
    request = CaptureRequest(
        method="actadd",
        layers=[1],
        name="cut",
        library_root=str(library_dir),
        positive="Love",
        negative="Hate",
    )
    job = controller.capture(request)
    qtbot.waitUntil(entered.is_set, timeout=10_000)
    started = time.monotonic()
    with qtbot.waitSignals([job.aborted, job.finished], order="strict", timeout=5000):
        controller.stop()
    assert time.monotonic() - started < 0.5
    monkeypatch.setattr(engine.capture, "resid_pre", real)
    done = []
    job = controller.generate(GenerateRequest("I think", [], SamplingConfig(temperature=0, max_new_tokens=4)))
    job.done.connect(done.append)
    qtbot.waitSignals([job.done, job.finished], order="strict", timeout=20_000).wait()
    assert len(done[0].rows[0].token_ids) > 0
    assert not (library_dir / "cut.safetensors").exists()
