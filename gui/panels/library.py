"""The Library tab: a sortable, filterable table of vectors, a detail view, and the library chores.

Every file operation goes through `engine.library.Library` / `engine.interop` on the thread pool
(`AppContext.run_library_task`); the table refreshes when it is done. Deleting moves to the library's trash
and can be undone. Vectors that don't fit the loaded model are greyed, with the reason as tooltip.

Over 400 lines because it wires about twenty library actions, each a thread-pool task with its callbacks;
the widgets themselves are in gui/widgets (vector_details.py, library_dialogs.py).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, Qt, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from engine.library import VectorEntry
from engine.vector import METHODS
from gui.context import AppContext
from gui.item_models import ENTRY_ROLE, INCOMPATIBLE, VectorFilterProxy, VectorTableModel
from gui.widgets.library_dialogs import CombineDialog, TrashDialog
from gui.widgets.vector_details import VectorDetails


class LibraryPanel(QWidget):
    refreshed = Signal()  # the table shows a fresh listing

    def __init__(self, context: AppContext, parent=None):
        super().__init__(parent)
        self._ctx = context
        self._last_trash_id: str | None = None
        self._last_deleted = ""
        self._pending_select: str | None = None

        # ---- filters and the table ------------------------------------------------------------------------
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter by name, tag, notes, prompts…")
        self.search.setClearButtonEnabled(True)
        self.search.setToolTip(
            "Every word must appear somewhere in the vector's name, tags, notes or prompts"
        )
        self._method = QComboBox()
        self._method.addItem("all methods", "")
        for method in METHODS:
            self._method.addItem(method, method)
        self._method.setToolTip("Show only vectors made this way")
        self._tag = QComboBox()
        self._tag.addItem("all tags", "")
        self._tag.setToolTip("Show only vectors with this tag")
        self._fits_only = QCheckBox("fits the model")
        self._fits_only.setToolTip("Hide vectors that can't be used on the loaded model")
        refresh = QPushButton("Refresh")
        refresh.setToolTip("Re-read the library folder")
        refresh.clicked.connect(self._ctx.refresh_library)

        self.model = VectorTableModel(self)
        self.proxy = VectorFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(5, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setAlternatingRowColors(True)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.doubleClicked.connect(lambda _: self.use_selected())
        self.table.selectionModel().selectionChanged.connect(self._on_selection)
        self.search.textChanged.connect(self.proxy.set_text)
        self._method.currentIndexChanged.connect(lambda _: self.proxy.set_method(self._method.currentData()))
        self._tag.currentIndexChanged.connect(lambda _: self.proxy.set_tag(self._tag.currentData() or ""))
        self._fits_only.toggled.connect(self.proxy.set_compatible_only)
        self._root_label = QLabel("")
        self._root_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._bad_label = QLabel("")
        self._bad_label.setWordWrap(True)
        self._bad_label.setStyleSheet("color: #a33;")

        filters = QHBoxLayout()
        filters.addWidget(self.search, 1)
        filters.addWidget(self._method)
        filters.addWidget(self._tag)
        filters.addWidget(self._fits_only)
        filters.addWidget(refresh)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addLayout(filters)
        left_layout.addWidget(self.table, 1)
        left_layout.addWidget(self._bad_label)
        left_layout.addWidget(self._root_label)

        # ---- details ------------------------------------------------------------------------------------------
        self.details = VectorDetails()
        self.tags, self.notes = self.details.tags, self.details.notes
        self._fields = self.details.fields
        self._save_meta = self.details.save_button
        self._save_meta.clicked.connect(self.save_tags_and_notes)

        self._use = QPushButton("Use in Generate")
        self._use.setToolTip("Add the selected vectors to the Generate tab's steered pane")
        self._use.clicked.connect(self.use_selected)
        self._rename = QPushButton("Rename…")
        self._rename.setToolTip("Rename (or move with collection/name)")
        self._rename.clicked.connect(self._ask_rename)
        self._duplicate = QPushButton("Duplicate…")
        self._duplicate.setToolTip("Copy under a new name")
        self._duplicate.clicked.connect(self._ask_duplicate)
        self._direction = QPushButton("To direction…")
        self._direction.setToolTip("Save the mean over positions of an ActAdd vector as a [hidden] direction")
        self._direction.clicked.connect(self._ask_direction)
        self._combine = QPushButton("Combine…")
        self._combine.setToolTip("Save a weighted sum of the selected vectors (same shape and model)")
        self._combine.clicked.connect(self._ask_combine)
        self._delete = QPushButton("Delete")
        self._delete.setToolTip("Move the selected vectors to the library's trash (undo is possible)")
        self._delete.clicked.connect(self.delete_selected)
        self._trash = QPushButton("Trash…")
        self._trash.setToolTip("Restore any deleted vector")
        self._trash.clicked.connect(self._show_trash)
        actions = QGridLayout()
        for i, button in enumerate(
            (
                self._use,
                self._rename,
                self._duplicate,
                self._direction,
                self._combine,
                self._delete,
                self._trash,
            )
        ):
            actions.addWidget(button, i // 4, i % 4)

        # The undo bar sits in space reserved for it (kept when hidden), so showing it moves nothing.
        self.undo_bar = QFrame()
        self.undo_bar.setFrameShape(QFrame.Shape.StyledPanel)
        self.undo_bar.setStyleSheet("QFrame { background: #fff6d5; }")
        self._undo_label = QLabel("")
        self._undo_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Restore the last deleted vector from the trash")
        self.undo_button.clicked.connect(self.undo_delete)
        self.undo_button.setEnabled(False)
        undo_layout = QHBoxLayout(self.undo_bar)
        undo_layout.setContentsMargins(6, 2, 6, 2)
        undo_layout.addWidget(self._undo_label, 1)
        undo_layout.addWidget(self.undo_button)
        policy = self.undo_bar.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.undo_bar.setSizePolicy(policy)
        self.undo_bar.setVisible(False)

        self._import_button = QPushButton("Import…")
        self._import_button.setToolTip(
            "Import a .zip bundle, a llama.cpp .gguf, repeng .npy/.npz or a .safetensors vector"
        )
        self._import_button.clicked.connect(self._ask_import)
        self._export_bundle = QPushButton("Export bundle…")
        self._export_bundle.setToolTip("Save the selected vectors as a .zip bundle to share")
        self._export_bundle.clicked.connect(lambda: self._ask_export("zip"))
        self._export_gguf = QPushButton("Export GGUF…")
        self._export_gguf.setToolTip(
            "Save the selected vector as a llama.cpp control vector (ActAdd: mean over positions)"
        )
        self._export_gguf.clicked.connect(lambda: self._ask_export("gguf"))
        self._open_folder = QPushButton("Open folder")
        self._open_folder.setToolTip("Show the library folder in the file manager")
        self._open_folder.clicked.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._ctx.library.root)))
        )
        transfer = QHBoxLayout()
        for button in (self._import_button, self._export_bundle, self._export_gguf, self._open_folder):
            transfer.addWidget(button)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.details)
        right_layout.addStretch(1)
        right_layout.addLayout(actions)
        right_layout.addLayout(transfer)
        right_layout.addWidget(self.undo_bar)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

        context.library_changed.connect(self._on_library_changed)
        context.residual_norms_changed.connect(lambda _: self._on_selection())
        context.library_root_changed.connect(lambda root: self._root_label.setText(f"Library: {root}"))
        self._root_label.setText(f"Library: {context.library.root}")
        self._update_buttons()

    # ---- listing ------------------------------------------------------------------------------------------
    @Slot()
    def _on_library_changed(self) -> None:
        selected = self._pending_select or (self.selected_keys() or [None])[0]
        self._pending_select = None
        listing = self._ctx.listing
        self.model.set_entries(listing.entries, self._ctx.fits)
        tags = sorted({t for e in listing.entries for t in e.tags}, key=str.casefold)
        current_tag = self._tag.currentData()
        self._tag.blockSignals(True)
        self._tag.clear()
        self._tag.addItem("all tags", "")
        for tag in tags:
            self._tag.addItem(tag, tag)
        index = self._tag.findData(current_tag) if current_tag else 0
        self._tag.setCurrentIndex(max(0, index))
        self._tag.blockSignals(False)
        if listing.bad_files:
            shown = "; ".join(f"{Path(b.path).name}: {b.reason}" for b in listing.bad_files[:3])
            more = f" (+{len(listing.bad_files) - 3} more)" if len(listing.bad_files) > 3 else ""
            self._bad_label.setText(f"Skipped {len(listing.bad_files)} unreadable file(s): {shown}{more}")
        else:
            self._bad_label.setText("")
        self.table.resizeColumnsToContents()
        if selected:
            self.select(selected)
        else:
            self._show_details(None)
        self.refreshed.emit()

    def select(self, key: str) -> bool:
        row = self.model.row_of(key)
        if row < 0:
            self._show_details(None)
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():
            return False
        self.table.selectionModel().select(
            index,
            QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
        )
        self.table.scrollTo(index)
        return True

    def selected_entries(self) -> list:
        rows = {i.row() for i in self.table.selectionModel().selectedRows()}
        return [self.proxy.index(r, 0).data(ENTRY_ROLE) for r in sorted(rows)]

    def selected_keys(self) -> list[str]:
        return [e.key for e in self.selected_entries()]

    def visible_keys(self) -> list[str]:
        return [self.proxy.index(r, 0).data(ENTRY_ROLE).key for r in range(self.proxy.rowCount())]

    @Slot()
    def _on_selection(self) -> None:
        entries = self.selected_entries()
        self._show_details(entries[0] if entries else None)
        self._update_buttons()

    def _update_buttons(self) -> None:
        entries = self.selected_entries()
        one = len(entries) == 1
        fits = all(self._ctx.fit(e).status != INCOMPATIBLE for e in entries)
        for button in (self._rename, self._duplicate, self._save_meta, self._export_gguf):
            button.setEnabled(one)
        self._direction.setEnabled(one and entries[0].is_positional)
        self._use.setEnabled(bool(entries) and fits and self._ctx.model is not None)
        self._combine.setEnabled(len(entries) >= 2)
        self._delete.setEnabled(bool(entries))
        self._export_bundle.setEnabled(bool(entries))

    def _show_details(self, entry: VectorEntry | None) -> None:
        if entry is None:
            self.details.show_entry(None)
            return
        self.details.show_entry(entry, self._ctx.fit(entry))
        library, key, path = self._ctx.library, entry.key, entry.path
        residual = self._ctx.residual_norms if self._ctx.fit(entry).status != INCOMPATIBLE else None

        def work() -> tuple[dict, dict | str | None]:
            from engine.strength import relative_norm_report
            from engine.vector import load_vector

            info = library.show(key)
            relative = relative_norm_report(load_vector(path), residual) if residual is not None else None
            return info, relative

        def show_norms(result: object) -> None:
            if self.selected_keys()[:1] == [key] and isinstance(result, tuple):
                info, relative = result
                self.details.show_norms(info.get("norms", {}), relative)

        # Norms need the tensors: read them off the GUI thread.
        self._ctx.tasks.submit(work, show_norms, lambda message: None)

    # ---- actions --------------------------------------------------------------------------------------------
    def _one(self):
        entries = self.selected_entries()
        return entries[0] if len(entries) == 1 else None

    @Slot()
    def use_selected(self) -> None:
        for entry in self.selected_entries():
            fit = self._ctx.fit(entry)
            if fit.status == INCOMPATIBLE:
                self._ctx.report_error("Can't use this vector", f"{entry.key}: {fit.reason}")
                continue
            self._ctx.use_vector.emit(entry)
            self._ctx.show_status(f"Added {entry.key} to the Generate tab")

    @Slot()
    def save_tags_and_notes(self) -> None:
        entry = self._one()
        if entry is None:
            return
        library, key = self._ctx.library, entry.key
        tags = [t.strip() for t in self.tags.text().split(",") if t.strip()]
        notes = self.notes.toPlainText()

        def work() -> None:
            library.set_tags(key, tags)
            library.set_notes(key, notes)

        self._pending_select = key
        self._ctx.run_library_task(work, lambda _: self._ctx.show_status(f"Saved tags and notes of {key}"))

    def rename(self, key: str, new_name: str) -> None:
        library = self._ctx.library
        collection = key.rpartition("/")[0]
        self._pending_select = new_name if "/" in new_name or not collection else f"{collection}/{new_name}"

        def done(path: Path) -> None:
            new_key = self._key_of(Path(path))
            self._ctx.show_status(f"Renamed {key} to {new_key}")
            self._ctx.vector_moved.emit(key, new_key, str(path))

        self._ctx.run_library_task(lambda: library.rename(key, new_name), done)

    def _key_of(self, path: Path) -> str:
        """The library key of a vector file (`collection/name`, or `name` at the top level)."""
        root = self._ctx.library.root.resolve()
        folder = path.parent.resolve()
        return path.stem if folder == root else f"{folder.name}/{path.stem}"

    def duplicate(self, key: str, new_name: str) -> None:
        library = self._ctx.library
        self._ctx.run_library_task(
            lambda: library.duplicate(key, new_name),
            lambda _: self._ctx.show_status(f"Copied {key} to {new_name}"),
        )

    def to_direction(self, key: str, new_name: str) -> None:
        library = self._ctx.library
        self._ctx.run_library_task(
            lambda: library.to_direction(key, new_name), lambda _: self._ctx.show_status(f"Saved {new_name}")
        )

    def combine(self, terms: list[tuple[float, str]], new_name: str) -> None:
        library = self._ctx.library
        self._pending_select = new_name
        self._ctx.run_library_task(
            lambda: library.combine(terms, new_name),
            lambda _: self._ctx.show_status(f"Saved the combination {new_name}"),
            title="Combine",
        )

    @Slot()
    def delete_selected(self) -> None:
        keys = self.selected_keys()
        if not keys:
            return
        library = self._ctx.library

        def work() -> list[str]:
            return [library.delete(key) for key in keys]

        def done(trash_ids: list[str]) -> None:
            self._last_trash_id = trash_ids[-1] if trash_ids else None
            self._last_deleted = keys[-1]
            self.undo_button.setEnabled(self._last_trash_id is not None)
            self._undo_label.setText(f"Deleted {keys[-1]}")
            self._undo_label.setToolTip(f"Moved {', '.join(keys)} to the library's trash")
            self.undo_bar.setVisible(self._last_trash_id is not None)
            self._ctx.show_status(f"Moved {', '.join(keys)} to the trash (Undo restores)")
            for key, trash_id in zip(keys, trash_ids, strict=True):
                self._ctx.vector_deleted.emit(key, trash_id)

        self._ctx.run_library_task(work, done, title="Delete")

    @Slot()
    def undo_delete(self) -> None:
        if self._last_trash_id is None:
            return
        self.restore(self._last_trash_id)
        self._pending_select = self._last_deleted
        self._last_trash_id = None
        self.undo_button.setEnabled(False)
        self.undo_bar.setVisible(False)

    def restore(self, trash_id: str) -> None:
        library = self._ctx.library

        def done(path: Path) -> None:
            self._ctx.show_status(f"Restored {self._key_of(Path(path))}")
            self._ctx.vector_restored.emit(trash_id, str(path))

        self._ctx.run_library_task(lambda: library.restore(trash_id), done, title="Restore")

    def import_file(self, path: str | Path) -> None:
        from engine.interop import import_file

        library = self._ctx.library
        model = self._ctx.model.fingerprint if self._ctx.model is not None else None

        def done(result) -> None:
            keys = ", ".join(k for k, _ in result.saved)
            self._ctx.show_status(
                f"Imported {keys}" + (f" ({'; '.join(result.warnings)})" if result.warnings else "")
            )
            if result.saved:
                self._pending_select = result.saved[0][0]

        self._ctx.run_library_task(
            lambda: import_file(library, Path(path), model=model), done, title="Import"
        )

    def export(self, keys: list[str], path: str | Path) -> None:
        from engine.interop import export

        library = self._ctx.library
        path = Path(path)
        direction = None
        if path.suffix.lower() == ".gguf":
            entry = self._ctx.entry(keys[0])
            direction = "mean" if entry is not None and entry.is_positional else None

        def done(result) -> None:
            note = f" ({'; '.join(result.warnings)})" if result.warnings else ""
            self._ctx.show_status(f"Exported {len(result.keys)} vector(s) to {result.path}{note}")

        self._ctx.run_library_task(
            lambda: export(library, keys, path, overwrite=True, direction=direction),
            done,
            title="Export",
            refresh=False,
        )

    # ---- dialogs (thin wrappers over the methods above) -------------------------------------------------
    @Slot()
    def _ask_rename(self) -> None:
        entry = self._one()
        if entry is None:
            return
        name, ok = QInputDialog.getText(
            self, "Rename", "New name (collection/name moves it):", text=entry.key
        )
        if ok and name.strip() and name.strip() != entry.key:
            self.rename(entry.key, name.strip())

    @Slot()
    def _ask_duplicate(self) -> None:
        entry = self._one()
        if entry is None:
            return
        name, ok = QInputDialog.getText(self, "Duplicate", "Name of the copy:", text=entry.name + "-copy")
        if ok and name.strip():
            self.duplicate(entry.key, name.strip())

    @Slot()
    def _ask_direction(self) -> None:
        entry = self._one()
        if entry is None:
            return
        name, ok = QInputDialog.getText(
            self, "To direction", "Name of the direction:", text=entry.name + "-dir"
        )
        if ok and name.strip():
            self.to_direction(entry.key, name.strip())

    @Slot()
    def _ask_combine(self) -> None:
        keys = self.selected_keys()
        if len(keys) < 2:
            return
        dialog = CombineDialog(keys, self)
        if dialog.exec() == QDialog.DialogCode.Accepted and dialog.name.text().strip():
            self.combine(dialog.terms(), dialog.name.text().strip())

    @Slot()
    def _show_trash(self) -> None:
        library = self._ctx.library

        def show(entries: list[VectorEntry]) -> None:
            trash_id = TrashDialog.choose(entries, self)
            if trash_id:
                self.restore(trash_id)

        self._ctx.tasks.submit(library.trash, show, lambda message: self._ctx.report_error("Trash", message))

    @Slot()
    def _ask_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Import vectors",
            str(Path.home()),
            "Vector files (*.zip *.gguf *.npy *.npz *.safetensors);;All files (*)",
        )
        if path:
            self.import_file(path)

    def _ask_export(self, kind: str) -> None:
        keys = self.selected_keys()
        if not keys:
            return
        default = (keys[0].replace("/", "-") if len(keys) == 1 else "vectors") + f".{kind}"
        label = "Bundle (*.zip)" if kind == "zip" else "llama.cpp control vector (*.gguf)"
        path, _ = QFileDialog.getSaveFileName(self, "Export", str(Path.home() / default), label)
        if path:
            self.export(keys if kind == "zip" else keys[:1], path)

    @Slot(object)
    def _context_menu(self, position) -> None:
        if not self.selected_entries():
            return
        menu = QMenu(self)
        for text, slot in (
            ("Use in Generate", self.use_selected),
            ("Rename…", self._ask_rename),
            ("Duplicate…", self._ask_duplicate),
            ("Delete", self.delete_selected),
        ):
            menu.addAction(text, slot)
        menu.exec(self.table.viewport().mapToGlobal(position))
