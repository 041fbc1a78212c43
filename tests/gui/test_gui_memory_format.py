"""Memory sizes read the same in the status bar and the model panel (one engine format)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui


def test_status_bar_and_model_panel_show_the_same_size(window):
    window.context.controller.memory.emit({"rss_mb": 1468.0, "weights_mb": 300.0})
    assert window.status.memory_label.text() == "RAM 1.43 GB"
    assert window.model_panel._info_labels["ram"].text() == "1.43 GB"
    assert window.model_panel._info_labels["weights"].text() == "300 MB"
