"""The Model tab's device combo offers mps/xpu exactly where torch reports them (backends mocked)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gui


def _devices(window) -> list[str]:
    combo = window.model_panel._device
    return [combo.itemText(i) for i in range(combo.count())]


def test_device_combo_without_accelerators(monkeypatch, request):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    window = request.getfixturevalue("window")
    assert _devices(window) == ["auto", "cpu", "cuda"]


def test_device_combo_offers_mps_and_xpu_where_torch_has_them(monkeypatch, request):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
    window = request.getfixturevalue("window")
    assert _devices(window) == ["auto", "cpu", "cuda", "mps", "xpu"]
