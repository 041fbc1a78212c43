"""The Library tab: the vector table (gui/widgets/library_table.py) beside the selected vector's details
(gui/widgets/vector_details.py), the action buttons and the undo bar.

The chores themselves (rename, delete, import, ...) are `LibraryChores` (library_chores.py), tasks on the
thread pool after which the table refreshes; this panel asks for a name or a file first (its dialogs are
thin wrappers) and keeps the selection and the buttons in step. Deleting moves to the library's trash and
can be undone. Vectors that don't fit the loaded model are greyed, with the reason as tooltip.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QDialog,
    QGridLayout,
    QHBoxLayout,
    QMenu,
    QWidget,
)

from engine.library import VectorEntry
from gui.context import AppContext
from gui.item_models import INCOMPATIBLE
from gui.panels.common import bare_column, fill_with_splitter
from gui.panels.library_chores import LibraryChores
from gui.widgets.buttons import push_button
from gui.widgets.library_dialogs import (
    CombineDialog,
    TrashDialog,
    ask_export_path,
    ask_import_path,
    ask_name,
)
from gui.widgets.library_table import LibraryTable
from gui.widgets.undo_bar import UndoBar
from gui.widgets.vector_details import VectorDetails


class LibraryPanel(QWidget):
    refreshed = Signal()  # the table shows a fresh listing

    def __init__(self, context: AppContext, parent=None):
        super().__init__(parent)
        self._ctx = context
        self._pending_select: str | None = None
        self.chores = LibraryChores(context, self)
        self.chores.select_after_refresh.connect(self._select_after_refresh)

        # ---- filters and the table ------------------------------------------------------------------------
        self.browser = LibraryTable()
        self.search, self.table = self.browser.search, self.browser.table
        self.model, self.proxy = self.browser.model, self.browser.proxy
        self._method, self._tag = self.browser.method, self.browser.tag
        self._fits_only = self.browser.fits_only
        self.browser.refresh_button.clicked.connect(self._ctx.refresh_library)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.doubleClicked.connect(lambda _: self.use_selected())
        self.table.selectionModel().selectionChanged.connect(self._on_selection)

        # ---- details ------------------------------------------------------------------------------------------
        self.details = VectorDetails()
        self.tags, self.notes = self.details.tags, self.details.notes
        self._fields = self.details.fields
        self._save_meta = self.details.save_button
        self._save_meta.clicked.connect(self.save_tags_and_notes)

        self._use = push_button(
            "Use in Generate",
            "Add the selected vectors to the Generate tab's steered pane",
            self.use_selected,
        )
        self._rename = push_button("Rename…", "Rename (or move with collection/name)", self._ask_rename)
        self._duplicate = push_button("Duplicate…", "Copy under a new name", self._ask_duplicate)
        self._direction = push_button(
            "To direction…",
            "Save the mean over positions of an ActAdd vector as a [hidden] direction",
            self._ask_direction,
        )
        self._combine = push_button(
            "Combine…",
            "Save a weighted sum of the selected vectors (same shape and model)",
            self._ask_combine,
        )
        self._delete = push_button(
            "Delete",
            "Move the selected vectors to the library's trash (undo is possible)",
            self.delete_selected,
        )
        self._trash = push_button("Trash…", "Restore any deleted vector", self._show_trash)
        actions = QGridLayout()
        row = (
            self._use,
            self._rename,
            self._duplicate,
            self._direction,
            self._combine,
            self._delete,
            self._trash,
        )
        for i, button in enumerate(row):
            actions.addWidget(button, i // 4, i % 4)

        self.undo_bar = UndoBar()
        self._undo_label, self.undo_button = self.undo_bar.label, self.undo_bar.button
        self.undo_button.clicked.connect(self.undo_delete)
        self.chores.deleted.connect(self.undo_bar.show_deleted)

        self._import_button = push_button(
            "Import…",
            "Import a .zip bundle, a llama.cpp .gguf, repeng .npy/.npz or a .safetensors vector",
            self._ask_import,
        )
        self._export_bundle = push_button(
            "Export bundle…",
            "Save the selected vectors as a .zip bundle to share",
            lambda: self._ask_export("zip"),
        )
        self._export_gguf = push_button(
            "Export GGUF…",
            "Save the selected vector as a llama.cpp control vector (ActAdd: mean over positions)",
            lambda: self._ask_export("gguf"),
        )
        self._open_folder = push_button(
            "Open folder",
            "Show the library folder in the file manager",
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._ctx.library.root))),
        )
        transfer = QHBoxLayout()
        for button in (self._import_button, self._export_bundle, self._export_gguf, self._open_folder):
            transfer.addWidget(button)

        right, right_layout = bare_column()
        right_layout.addWidget(self.details)
        right_layout.addStretch(1)
        right_layout.addLayout(actions)
        right_layout.addLayout(transfer)
        right_layout.addWidget(self.undo_bar)
        fill_with_splitter(self, self.browser, right, stretch=(3, 2))

        context.library_changed.connect(self._on_library_changed)
        context.residual_norms_changed.connect(lambda _: self._on_selection())
        context.library_root_changed.connect(self.browser.show_root)
        self.browser.show_root(context.library.root)
        self._update_buttons()

    # ---- listing ------------------------------------------------------------------------------------------
    @Slot(str)
    def _select_after_refresh(self, key: str) -> None:
        self._pending_select = key

    @Slot()
    def _on_library_changed(self) -> None:
        selected = self._pending_select or next(iter(self.selected_keys()), None)
        self._pending_select = None
        self.browser.show_listing(self._ctx.listing, self._ctx.fits)
        if selected:
            self.select(selected)
        else:
            self._show_details(None)
        self.refreshed.emit()

    def select(self, key: str) -> bool:
        if self.model.row_of(key) < 0:
            self._show_details(None)
            return False
        return self.browser.select(key)

    def selected_entries(self) -> list[VectorEntry]:
        return self.browser.selected_entries()

    def selected_keys(self) -> list[str]:
        return self.browser.selected_keys()

    def visible_keys(self) -> list[str]:
        return self.browser.visible_keys()

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

    # ---- actions (the chores, on what is selected) ----------------------------------------------------------
    def _one(self) -> VectorEntry | None:
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
        tags = [t.strip() for t in self.tags.text().split(",") if t.strip()]
        self.chores.save_tags_and_notes(entry.key, tags, self.notes.toPlainText())

    @Slot()
    def delete_selected(self) -> None:
        keys = self.selected_keys()
        if keys:
            self.chores.delete(keys)

    @Slot()
    def undo_delete(self) -> None:
        last = self.undo_bar.take()
        if last is None:
            return
        trash_id, key = last
        self.chores.restore(trash_id)
        self._pending_select = key

    # The chores by name, as the dialogs (and scripts) ask for them.
    def rename(self, key: str, new_name: str) -> None:
        self.chores.rename(key, new_name)

    def duplicate(self, key: str, new_name: str) -> None:
        self.chores.duplicate(key, new_name)

    def to_direction(self, key: str, new_name: str) -> None:
        self.chores.to_direction(key, new_name)

    def combine(self, terms: list[tuple[float, str]], new_name: str) -> None:
        self.chores.combine(terms, new_name)

    def restore(self, trash_id: str) -> None:
        self.chores.restore(trash_id)

    def import_file(self, path: str | Path) -> None:
        self.chores.import_file(path)

    def export(self, keys: list[str], path: str | Path) -> None:
        self.chores.export(keys, path)

    # ---- dialogs (thin wrappers over the methods above) -------------------------------------------------
    @Slot()
    def _ask_rename(self) -> None:
        entry = self._one()
        name = entry and ask_name(self, "Rename", "New name (collection/name moves it):", entry.key)
        if entry is not None and name and name != entry.key:
            self.rename(entry.key, name)

    def _ask_new_vector(self, title: str, label: str, suffix: str, make: Callable[[str, str], None]) -> None:
        """Ask for the name of a vector made from the selected one (`make(key, name)`)."""
        entry = self._one()
        if entry is not None and (name := ask_name(self, title, label, entry.name + suffix)):
            make(entry.key, name)

    @Slot()
    def _ask_duplicate(self) -> None:
        self._ask_new_vector("Duplicate", "Name of the copy:", "-copy", self.duplicate)

    @Slot()
    def _ask_direction(self) -> None:
        self._ask_new_vector("To direction", "Name of the direction:", "-dir", self.to_direction)

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
        if path := ask_import_path(self):
            self.import_file(path)

    def _ask_export(self, kind: str) -> None:
        keys = self.selected_keys()
        if keys and (path := ask_export_path(self, keys, kind)):
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
