"""`ActiveVectors`: the Generate tab's list of active steering vectors, one `VectorRow` each.

It offers the library's vectors that fit the loaded model, gives each row its strength scales once the
model's residual norms are in, follows the library (a renamed, deleted or restored vector moves, leaves or
comes back), and keeps the list across sessions (settings `generate/raw_scale`, `generate/vectors`).
The steering itself stays in the engine: a row only hands its `ActiveVector` to the request.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from PySide6.QtCore import QSettings, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from engine.library import VectorEntry
from gui.context import AppContext, SteeringChoice
from gui.item_models import INCOMPATIBLE, OTHER_MODEL
from gui.jobs import ActiveVector
from gui.widgets.vector_choice import fill_with_fitting_vectors
from gui.widgets.vector_row import VectorRow, strength_scales

LIVE_NOTE = (
    "Live steering: move a slider or toggle a vector while text streams and the steered pane changes "
    "from the next token. Front mode acts on the prompt only, so live changes don't affect front vectors."
)


class ActiveVectors(QGroupBox):
    """The "Steering vectors (steered pane)" box: an add row, the vector rows, and the notes under them."""

    coefficient_changed = Signal(int, float)  # a row's live change: (its vector_id, the raw c)

    def __init__(self, context: AppContext, parent: QWidget | None = None):
        super().__init__("Steering vectors (steered pane)", parent)
        self._ctx = context
        self._streaming = False  # a generation is running: rows steer it live, the list is fixed
        self._rows: list[VectorRow] = []
        self._saved: list = []  # active vectors saved at the last close, restored once listed
        # rows removed because their vector was deleted, by trash id: restoring it re-adds them
        self._deleted_rows: dict[str, list[tuple[VectorEntry, dict]]] = {}

        self.add_combo = QComboBox()
        self.add_combo.setToolTip("Vectors in the library that fit the loaded model")
        self.add_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.add_combo.setMinimumContentsLength(16)
        self.add_button = QPushButton("Add")
        self.add_button.setToolTip("Add the chosen vector to the steered pane")
        self.add_button.clicked.connect(self._add_selected)
        self.raw_scale = QCheckBox("raw c")
        self.raw_scale.setToolTip(
            "Sliders show the raw coefficient c instead of the normalised strength s (the fraction of the "
            "typical residual norm at the vector's layer; the default once the model's norms are measured)"
        )
        self.raw_scale.toggled.connect(self._on_raw_scale)
        self._rows_host = QWidget()
        self._rows_layout = QVBoxLayout(self._rows_host)
        self._rows_layout.setContentsMargins(0, 0, 0, 0)
        self._rows_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self._rows_host)
        scroll.setMinimumHeight(120)
        self._empty_note = QLabel(
            "No active vectors: both panes will be unsteered. Capture one or add one from the library."
        )
        self._empty_note.setWordWrap(True)
        live_note = QLabel(LIVE_NOTE)
        live_note.setWordWrap(True)
        live_note.setStyleSheet("color: #555; font-size: 11px;")
        layout = QVBoxLayout(self)
        add_row = QHBoxLayout()
        add_row.addWidget(self.add_combo, 1)
        add_row.addWidget(self.add_button)
        add_row.addWidget(self.raw_scale)
        layout.addLayout(add_row)
        layout.addWidget(self._empty_note)
        layout.addWidget(scroll, 1)
        layout.addWidget(live_note)

        context.model_changed.connect(self._on_model_changed)
        context.library_changed.connect(self._refresh_choices)
        context.use_vector.connect(self.add_vector)
        context.residual_norms_changed.connect(lambda _: self._load_scales(self._rows))
        context.apply_steering.connect(self.apply_choice)
        context.vector_moved.connect(self._on_vector_moved)
        context.vector_deleted.connect(self._on_vector_deleted)
        context.vector_restored.connect(self._on_vector_restored)
        self._on_model_changed(context.model)

    # ---- what the request reads --------------------------------------------------------------------------
    def rows(self) -> list[VectorRow]:
        return list(self._rows)

    def vectors(self) -> list[ActiveVector]:
        """The rows as the request carries them, in the order shown."""
        return [row.active_vector() for row in self._rows]

    def row_by_id(self, vector_id: int) -> VectorRow | None:
        return next((row for row in self._rows if row.vector_id == vector_id), None)

    def files_present(self) -> bool:
        """False (and the user is told) when an active vector's file is gone: a generation can't start."""
        missing = [row.entry.key for row in self._rows if not Path(row.entry.path).is_file()]
        if missing:
            self._ctx.report_error(
                "A vector's file is missing",
                f"{', '.join(missing)}: the file is gone (moved or deleted outside the app?). Remove it from "
                "the active vectors, or refresh the library and add it again.",
            )
        return not missing

    def set_streaming(self, on: bool) -> None:
        """While text streams, rows steer it live but the list itself stays as the request has it."""
        self._streaming = on
        self.add_button.setEnabled(not on and self.add_combo.count() > 0)
        self.raw_scale.setEnabled(not on)  # the scale decides a multi-layer plan's profile
        for row in self._rows:
            row.set_streaming(on)

    # ---- adding and removing -----------------------------------------------------------------------------
    @Slot()
    def _refresh_choices(self) -> None:
        fill_with_fitting_vectors(self.add_combo, self._ctx)
        self.add_button.setEnabled(self.add_combo.count() > 0 and not self._streaming)

    @Slot()
    def _add_selected(self) -> None:
        entry = self._ctx.entry(self.add_combo.currentData() or "")
        if entry is not None:
            self.add_vector(entry)

    @Slot(object)
    def add_vector(self, entry: VectorEntry) -> VectorRow:
        fit = self._ctx.fit(entry)
        depth = self._ctx.model.info.n_layers if self._ctx.model is not None else max(entry.layers) + 1
        row = VectorRow(entry, depth, fit.reason if fit.status == OTHER_MODEL else "")
        row.coefficient_changed.connect(self.coefficient_changed)
        row.remove_requested.connect(lambda: self.remove_vector(row))
        row.set_streaming(self._streaming)
        row.set_raw(self.raw_scale.isChecked())
        self._rows.append(row)
        self._rows_layout.insertWidget(self._rows_layout.count() - 1, row)
        self._empty_note.setVisible(False)
        self._load_scales([row])
        return row

    @Slot(object)
    def apply_choice(self, choice: SteeringChoice) -> VectorRow | None:
        """Take over a setting chosen elsewhere (a sweep cell): that vector alone, at its layer, c and mode."""
        entry = self._ctx.entry(choice.vector_key)
        if self._streaming:
            self._ctx.show_status("Stop the generation before applying a sweep cell")
            return None
        if entry is None:
            self._ctx.show_status(f"{choice.vector_key} is no longer in the library")
            return None
        for old in list(self._rows):
            self.remove_vector(old, force=True)
        row = self.add_vector(entry)
        state = row.state()
        if choice.mode is not None:
            state["mode"] = choice.mode
        if choice.layer is not None:
            state["layer"] = choice.layer
        state["coeff"] = choice.coeff
        row.restore_state(state)
        if not choice.exact:
            self._ctx.show_status(
                f"{choice.vector_key} moved to layer {choice.layer}: the sweep re-captured it there, so the "
                "text can differ from the sweep's cell"
            )
        return row

    def remove_vector(self, row: VectorRow, force: bool = False) -> None:
        """Remove a row; while text streams only when `force`d (its vector was deleted: the running
        generation keeps its copy, and the row can no longer steer it live)."""
        if self._streaming and not force:
            self._ctx.show_status("Stop the generation before removing a vector (set c to 0 to mute it live)")
            return
        self._rows.remove(row)
        row.setParent(None)
        row.deleteLater()
        self._empty_note.setVisible(not self._rows)

    # ---- strength scales ---------------------------------------------------------------------------------
    def _load_scales(self, rows: list[VectorRow]) -> None:
        """Give rows their strength scales for the loaded model's residual norms (read off the GUI thread)."""
        norms = self._ctx.residual_norms
        depth = self._ctx.model.info.n_layers if self._ctx.model is not None else 0
        for row in list(rows):
            if norms is None or not depth:
                row.set_scales({})
                continue
            path = Path(row.entry.path)

            def work(path: Path = path) -> dict:
                from engine.vector import load_vector

                return strength_scales(load_vector(path), norms, depth)

            def done(scales: object, row: VectorRow = row) -> None:
                if row in self._rows and self._ctx.residual_norms is norms and isinstance(scales, dict):
                    row.set_scales(scales)

            self._ctx.tasks.submit(work, done, lambda message: None)  # no scale: the row shows c

    @Slot(bool)
    def _on_raw_scale(self, raw: bool) -> None:
        for row in self._rows:
            row.set_raw(raw)

    # ---- following the model and the library -------------------------------------------------------------
    @Slot(object)
    def _on_model_changed(self, handle) -> None:
        depth = handle.info.n_layers if handle is not None else 0
        for row in list(self._rows):
            if handle is not None and self._ctx.fit(row.entry).status == INCOMPATIBLE:
                self.remove_vector(row)  # no longer fits: it can't be used on this model
            elif len(row.entry.layers) == 1 and depth:
                row.layer.setRange(0, depth - 1)
        self._refresh_choices()

    @Slot(str, str, str)
    def _on_vector_moved(self, old_key: str, new_key: str, new_path: str) -> None:
        """A renamed or moved vector: its rows follow, so the next generation reads the new file."""
        collection, _, name = new_key.rpartition("/")
        for row in self._rows:
            if row.entry.key == old_key:
                row.set_entry(
                    dataclasses.replace(row.entry, name=name, collection=collection, path=Path(new_path))
                )
        for removed in self._deleted_rows.values():
            for i, (entry, state) in enumerate(removed):
                if entry.key == old_key:
                    removed[i] = (
                        dataclasses.replace(entry, name=name, collection=collection, path=Path(new_path)),
                        state,
                    )

    @Slot(str, str)
    def _on_vector_deleted(self, key: str, trash_id: str) -> None:
        """A deleted vector leaves the active vectors; undoing the delete brings its rows back."""
        rows = [row for row in self._rows if row.entry.key == key]
        if not rows:
            return
        self._deleted_rows[trash_id] = [(row.entry, row.state()) for row in rows]
        for row in rows:
            self.remove_vector(row, force=True)
        self._ctx.show_status(
            f"Removed the deleted vector {key} from Generate (Undo in the Library restores it)"
        )

    @Slot(str, str)
    def _on_vector_restored(self, trash_id: str, path: str) -> None:
        removed = self._deleted_rows.pop(trash_id, None)
        if not removed:
            return
        restored = Path(path)
        root = Path(self._ctx.library.root).resolve()
        collection = "" if restored.parent.resolve() == root else restored.parent.name
        for entry, state in removed:
            row = self.add_vector(
                dataclasses.replace(entry, name=restored.stem, collection=collection, path=restored)
            )
            row.restore_state(state)

    # ---- settings ----------------------------------------------------------------------------------------
    def read_settings(self, settings: QSettings) -> None:
        self.raw_scale.setChecked(bool(settings.value("generate/raw_scale", False, type=bool)))
        try:  # the active vectors come back once the library listing is in (they are found by key)
            self._saved = list(json.loads(str(settings.value("generate/vectors", "[]") or "[]")))
        except (ValueError, TypeError):
            self._saved = []
        if self._saved:
            self._ctx.library_changed.connect(self._restore_vectors)

    @Slot()
    def _restore_vectors(self) -> None:
        """Re-add the vectors active when the app was closed, with their c, mode, layer and on/off."""
        self._ctx.library_changed.disconnect(self._restore_vectors)
        saved, self._saved = self._saved, []
        missing = []
        for item in saved:
            entry = self._ctx.entry(str(item.get("key", ""))) if isinstance(item, dict) else None
            if entry is None:
                missing.append(str(item.get("key", "?")) if isinstance(item, dict) else "?")
                continue
            try:
                row = self.add_vector(entry)
                # Before the model is in, the layer box only knows the vector's own depth.
                row.layer.setMaximum(max(row.layer.maximum(), int(item.get("layer", 0))))
                row.restore_state(item)
            except (KeyError, TypeError, ValueError):
                missing.append(entry.key)
        if missing:
            self._ctx.show_status(f"Not restored (no longer in the library): {', '.join(missing)}")

    def write_settings(self, settings: QSettings) -> None:
        settings.setValue("generate/raw_scale", self.raw_scale.isChecked())
        vectors = [{"key": row.entry.key, **row.state()} for row in self._rows]
        settings.setValue("generate/vectors", json.dumps(vectors))


__all__ = ["LIVE_NOTE", "ActiveVectors"]
