"""The Model/View models, checked with pytest-qt's qtmodeltester."""

from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import QModelIndex, Qt

from engine.fingerprint import ModelFingerprint
from engine.library import Library
from engine.pairs import PromptPair
from engine.vector import SteeringVector
from gui.item_models import (
    COMPAT_ROLE,
    ENTRY_ROLE,
    INCOMPATIBLE,
    OK,
    Fit,
    PairTableModel,
    VectorFilterProxy,
    VectorTableModel,
)

pytestmark = pytest.mark.gui


def _library(tmp_path) -> Library:
    library = Library(tmp_path / "lib")
    fp = ModelFingerprint("gpt2", 8, 4, "abc", "tiny")
    library.save(
        SteeringVector(
            {1: torch.ones(3, 8)},
            name="love",
            fingerprint=fp,
            tags=("mood",),
            created="2025-01-02T00:00:00+00:00",
        ),
        "love",
    )
    library.save(
        SteeringVector(
            {0: torch.ones(8), 2: torch.ones(8)}, method="mean-diff", default_mode="all", fingerprint=fp
        ),
        "calm",
        collection="moods",
    )
    library.save(SteeringVector({5: torch.ones(16)}, method="pca", default_mode="all"), "wide")
    return library


def test_vector_table_model(qtmodeltester, tmp_path):
    library = _library(tmp_path)
    model = VectorTableModel()
    model.set_entries(library.list().entries, {"wide": Fit(INCOMPATIBLE, "hidden size 16, the model has 8")})
    qtmodeltester.check(model, force_py=True)
    assert model.rowCount() == 3 and model.columnCount() == 6
    row = model.row_of("wide")
    assert model.index(row, 0).data(COMPAT_ROLE) == INCOMPATIBLE
    assert model.index(row, 0).data(Qt.ItemDataRole.ToolTipRole) == "hidden size 16, the model has 8"
    assert model.index(row, 0).data(Qt.ItemDataRole.ForegroundRole) is not None  # greyed
    assert model.index(model.row_of("love"), 0).data(COMPAT_ROLE) == OK
    assert model.index(model.row_of("moods/calm"), 0).data() == "moods/calm"
    assert model.index(model.row_of("moods/calm"), 2).data() == "0, 2"
    assert model.index(0, 0).data(Qt.ItemDataRole.DecorationRole) is None  # unknown role -> None
    assert model.data(QModelIndex()) is None


def test_filter_proxy(qtmodeltester, tmp_path):
    library = _library(tmp_path)
    model = VectorTableModel()
    model.set_entries(library.list().entries, {"wide": Fit(INCOMPATIBLE, "too wide")})
    proxy = VectorFilterProxy()
    proxy.setSourceModel(model)
    qtmodeltester.check(proxy, force_py=True)

    def keys():
        return sorted(proxy.index(r, 0).data(ENTRY_ROLE).key for r in range(proxy.rowCount()))

    proxy.set_text("love")
    assert keys() == ["love"]
    proxy.set_text("")
    proxy.set_method("mean-diff")
    assert keys() == ["moods/calm"]
    proxy.set_method("")
    proxy.set_tag("mood")
    assert keys() == ["love"]
    proxy.set_tag("")
    proxy.set_compatible_only(True)
    assert keys() == ["love", "moods/calm"]
    proxy.set_compatible_only(False)
    proxy.sort(2, Qt.SortOrder.AscendingOrder)
    assert proxy.index(0, 0).data(ENTRY_ROLE).key == "moods/calm"  # layer 0 first


def test_pair_table_model(qtmodeltester):
    model = PairTableModel([PromptPair("Love", "Hate"), PromptPair("Joy", "Sad")])
    qtmodeltester.check(model, force_py=True)
    assert model.insertRows(1, 2)
    assert model.rowCount() == 4
    assert model.setData(model.index(1, 0), "Calm")
    assert model.index(1, 0).data() == "Calm"
    assert model.flags(model.index(1, 1)) & Qt.ItemFlag.ItemIsEditable
    assert model.pairs() == [PromptPair("Love", "Hate"), PromptPair("Calm", ""), PromptPair("Joy", "Sad")]
    assert model.removeRows(0, 2)
    assert not model.removeRows(5, 1)
    assert model.pairs() == [PromptPair("Joy", "Sad")]
    qtmodeltester.check(model, force_py=True)
