"""Device choice beyond CUDA (mps, xpu), with the backends mocked: this machine has neither."""

from __future__ import annotations

import logging

import bitsandbytes
import pytest
import torch

from engine import ModelLoadError, load_model
from engine.cli import build_parser, main
from engine.devices import available_devices, device_map_for, on_accelerator


@pytest.fixture
def mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def xpu(monkeypatch):
    monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def no_accelerator(monkeypatch):
    for target in (torch.backends.mps, torch.xpu, torch.cuda):
        monkeypatch.setattr(target, "is_available", lambda: False)


def test_the_choice_lists_mps_and_xpu_only_where_torch_reports_them(no_accelerator, monkeypatch):
    assert available_devices() == ("auto", "cpu", "cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert available_devices() == ("auto", "cpu", "cuda", "mps")
    monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
    assert available_devices() == ("auto", "cpu", "cuda", "mps", "xpu")


def test_cli_device_choices_follow_the_backends(mps, capsys):
    args = build_parser().parse_args(["generate", "--prompt", "x", "--device", "mps"])
    assert args.device == "mps"


def test_cli_refuses_a_device_torch_does_not_report(no_accelerator, capsys):
    assert main(["generate", "--prompt", "x", "--device", "mps"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid choice: 'mps'" in err


@pytest.mark.parametrize("kind", ["mps", "xpu"])
def test_explicit_device_maps_to_it(request, kind):
    request.getfixturevalue(kind)
    assert device_map_for(kind) == {"": kind}
    assert on_accelerator({"": kind})


def test_auto_prefers_an_accelerator_when_there_is_no_cuda(mps, monkeypatch):
    monkeypatch.setattr(bitsandbytes, "supported_torch_devices", {"cpu", "cuda", "mps"})  # as 0.50 does
    assert device_map_for("auto") == {"": "mps"}
    assert device_map_for("auto", "4bit") == {"": "mps"}
    assert device_map_for("mps", "4bit") == {"": "mps"}


def test_quantizing_where_bitsandbytes_cannot_is_refused_explicitly_and_skipped_by_auto(
    mps, monkeypatch, caplog
):
    monkeypatch.setattr(bitsandbytes, "supported_torch_devices", {"cpu", "cuda"})
    with pytest.raises(ModelLoadError, match=r"can't quantize to 4bit on the Apple GPU.*quantization none"):
        device_map_for("mps", "4bit")
    assert device_map_for("mps", "none") == {"": "mps"}  # unquantized is fine
    with caplog.at_level(logging.WARNING, logger="engine.devices"):
        assert device_map_for("auto", "8bit") == "cpu"
    assert "loading on the CPU instead" in caplog.text
    assert not on_accelerator("cpu")


def test_a_missing_device_is_a_clear_error(no_accelerator, model_dirs):
    for kind, name in (("mps", "Apple GPU"), ("xpu", "Intel GPU"), ("cuda", "CUDA GPU")):
        with pytest.raises(ModelLoadError, match=f"device '{kind}'.*no {name}"):
            load_model(model_dirs["gpt2"], device=kind)
    assert device_map_for("auto") == "cpu"


def test_load_model_refuses_unquantizable_device_before_reading_weights(mps, monkeypatch, tmp_path):
    monkeypatch.setattr(bitsandbytes, "supported_torch_devices", {"cpu"})
    # The folder does not even exist: the device is checked first, so nothing is opened.
    with pytest.raises(ModelLoadError, match=r"can't quantize to 4bit"):
        load_model(tmp_path / "nowhere", device="mps", quantize="4bit")
