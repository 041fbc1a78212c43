"""Out of memory (issue 6): a model that doesn't fit, and memory running out mid-work, end in a clear message;
the app stays usable, and the previous model either keeps working (engine) or is cleanly unloaded (the GUI's
worker frees it before loading another, since two may not fit).

Memory is simulated: a free-memory figure smaller than the weights (the up-front budget check), transformers
raising torch's OutOfMemoryError or MemoryError while loading, and a forward pass raising it mid-generation.
tests/test_models.py already covers a `max_memory` budget that the model exceeds (disk offload refused).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from engine import (
    ActAddError,
    ModelLoadError,
    SamplingConfig,
    Steer,
    capture_actadd,
    generate,
    hook_count,
    load_model,
)

SHORT = SamplingConfig(temperature=0, max_new_tokens=3)


@pytest.fixture
def little_free_memory(monkeypatch):
    """Makes psutil report 1 kB free: less than any model's weights (and no GPU to fall back on)."""

    def shrink():
        monkeypatch.setattr("engine.models.psutil.virtual_memory", lambda: SimpleNamespace(available=1000))
        monkeypatch.setattr("engine.models.torch.cuda.is_available", lambda: False)

    return shrink


def oom_in_forward(blocks, error: BaseException):
    """A forward hook on block 0 that raises `error`, as a GPU running out of memory mid-forward does."""

    def hook(module, args, output):
        raise error

    return blocks[0].register_forward_hook(hook)


def still_works(loaded) -> None:
    assert hook_count(loaded.blocks) == 0
    assert len(generate(loaded, "I think that", None, SHORT).rows[0].token_ids) == 3


# ---- engine ----------------------------------------------------------------------------------------------------
def test_a_model_bigger_than_free_memory_is_refused_up_front(model_dirs, gpt2, little_free_memory):
    little_free_memory()
    with pytest.raises(ModelLoadError, match=r"need about .* GB .* only .* GB is free; try 4-bit") as info:
        load_model(model_dirs["llama"], device="cpu")
    assert str(model_dirs["llama"]) in str(info.value)
    still_works(gpt2)


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError()],
    ids=["torch-oom", "MemoryError"],
)
def test_running_out_of_memory_while_loading_weights(model_dirs, gpt2, monkeypatch, error):
    from transformers import AutoModelForCausalLM

    def from_pretrained(*args, **kwargs):
        raise error

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    with pytest.raises(ModelLoadError, match="not enough memory to load llama"):
        load_model(model_dirs["llama"], device="cpu")
    still_works(gpt2)


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB"), MemoryError()],
    ids=["torch-oom", "MemoryError"],
)
def test_running_out_of_memory_while_generating(gpt2, error):
    vector = capture_actadd(gpt2, "Love", "Hate", 1)
    handle = oom_in_forward(gpt2.blocks, error)
    try:
        with pytest.raises(ActAddError, match="out of memory"):
            generate(gpt2, "I think that", [[], [Steer(vector, 4.0)]], SHORT)
        assert hook_count(gpt2.blocks) == 0, "the steering hooks stayed on the model"
    finally:
        handle.remove()
    still_works(gpt2)


# ---- through the GUI's model worker --------------------------------------------------------------------------------
def _errors(controller) -> list[tuple[str, str]]:
    """(job kind, message) of every job submitted from now on that fails."""
    errors: list[tuple[str, str]] = []
    controller.job_submitted.connect(
        lambda job: job.failed.connect(lambda message: errors.append((job.kind, message)))
    )
    return errors


def _load(qtbot, controller, folder):
    from gui.jobs import LoadRequest

    job = controller.load(LoadRequest(str(folder), device="cpu"))
    qtbot.waitSignal(job.finished, timeout=60_000).wait()
    assert not controller.busy


def _generate(qtbot, controller):
    from gui.jobs import GenerateRequest

    results = []
    job = controller.generate(GenerateRequest(prompt="I think that", vectors=[], sampling=SHORT))
    job.done.connect(results.append)
    qtbot.waitSignal(job.finished, timeout=30_000).wait()
    assert not controller.busy
    return results


@pytest.fixture
def controller(qtbot, monkeypatch):
    monkeypatch.setenv("ACTADD_TORCH_THREADS", "1")
    from gui.controller import WorkerController

    ctl = WorkerController()
    yield ctl
    assert ctl.shutdown(3000)


@pytest.mark.gui
def test_worker_a_model_that_does_not_fit_unloads_the_old_one_cleanly(
    qtbot, controller, model_dirs, monkeypatch
):
    errors = _errors(controller)
    _load(qtbot, controller, model_dirs["gpt2"])
    assert controller.model_info is not None and errors == []

    with monkeypatch.context() as patch:
        patch.setattr("engine.models.psutil.virtual_memory", lambda: SimpleNamespace(available=1000))
        patch.setattr("engine.models.torch.cuda.is_available", lambda: False)
        unloaded = []
        controller.model_unloaded.connect(lambda: unloaded.append(True))
        _load(qtbot, controller, model_dirs["llama"])
    [(kind, message)] = errors
    assert kind == "load" and "GB is free" in message and "try 4-bit" in message
    assert unloaded and controller.model_info is None and controller.worker.loaded is None
    # usable: a generation says what is missing; a model that fits loads and generates
    assert _generate(qtbot, controller) == []
    assert errors[-1][0] == "generate" and "no model is loaded" in errors[-1][1]
    _load(qtbot, controller, model_dirs["gpt2"])
    [result] = _generate(qtbot, controller)
    assert [len(row.token_ids) for row in result.rows] == [3, 3]


@pytest.mark.gui
@pytest.mark.parametrize("job", ["generate", "capture"])
@pytest.mark.parametrize(
    "error", [torch.OutOfMemoryError("CUDA out of memory"), MemoryError()], ids=["torch-oom", "MemoryError"]
)
def test_worker_out_of_memory_mid_work_keeps_the_model(qtbot, controller, model_dirs, tmp_path, job, error):
    from gui.jobs import CaptureRequest

    errors = _errors(controller)
    _load(qtbot, controller, model_dirs["gpt2"])
    blocks = controller.worker.loaded.blocks  # the worker is idle: its model can be touched from here
    handle = oom_in_forward(blocks, error)
    try:
        if job == "generate":
            assert _generate(qtbot, controller) == []
        else:
            request = CaptureRequest(
                "actadd", [1], "love", str(tmp_path / "lib"), positive="Love", negative="Hate"
            )
            qtbot.waitSignal(controller.capture(request).finished, timeout=30_000).wait()
            assert not controller.busy
    finally:
        handle.remove()
    [(kind, message)] = errors
    assert kind == job and "out of memory" in message and "unexpected" not in message
    assert hook_count(blocks) == 0 and controller.model_info is not None
    assert not (tmp_path / "lib").exists() or not list((tmp_path / "lib").glob("*.safetensors"))
    [result] = _generate(qtbot, controller)
    assert [len(row.token_ids) for row in result.rows] == [3, 3]
