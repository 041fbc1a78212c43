"""The Library tab's chores: every change to the library folder, each a task on the thread pool.

Each chore goes through `engine.library.Library` / `engine.interop` via `AppContext.run_library_task`, which
refreshes the listing when it is done and reports an error readably; then the chore says what happened in
the status bar and tells the other tabs (`vector_moved`, `vector_deleted`, `vector_restored`) so they follow
a vector that moved, went or came back. The panel reads its widgets and asks; nothing here shows a dialog.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from gui.context import AppContext


class LibraryChores(QObject):
    # The key to select once the refreshed listing is shown (a renamed, combined or imported vector).
    select_after_refresh = Signal(str)
    # (keys, trash ids): moved to the trash, in that order.
    deleted = Signal(object, object)

    def __init__(self, context: AppContext, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ctx = context

    def key_of(self, path: Path) -> str:
        """The library key of a vector file (`collection/name`, or `name` at the top level)."""
        root = self._ctx.library.root.resolve()
        folder = path.parent.resolve()
        return path.stem if folder == root else f"{folder.name}/{path.stem}"

    def save_tags_and_notes(self, key: str, tags: list[str], notes: str) -> None:
        library = self._ctx.library

        def work() -> None:
            library.set_tags(key, tags)
            library.set_notes(key, notes)

        self.select_after_refresh.emit(key)
        self._ctx.run_library_task(work, lambda _: self._ctx.show_status(f"Saved tags and notes of {key}"))

    def rename(self, key: str, new_name: str) -> None:
        library = self._ctx.library
        collection = key.rpartition("/")[0]
        self.select_after_refresh.emit(
            new_name if "/" in new_name or not collection else f"{collection}/{new_name}"
        )

        def done(path: Path) -> None:
            new_key = self.key_of(Path(path))
            self._ctx.show_status(f"Renamed {key} to {new_key}")
            self._ctx.vector_moved.emit(key, new_key, str(path))

        self._ctx.run_library_task(lambda: library.rename(key, new_name), done)

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
        self.select_after_refresh.emit(new_name)
        self._ctx.run_library_task(
            lambda: library.combine(terms, new_name),
            lambda _: self._ctx.show_status(f"Saved the combination {new_name}"),
            title="Combine",
        )

    def delete(self, keys: list[str]) -> None:
        """Move `keys` to the library's trash (each can be restored)."""
        library = self._ctx.library

        def work() -> list[str]:
            return [library.delete(key) for key in keys]

        def done(trash_ids: list[str]) -> None:
            self.deleted.emit(keys, trash_ids)
            self._ctx.show_status(f"Moved {', '.join(keys)} to the trash (Undo restores)")
            for key, trash_id in zip(keys, trash_ids, strict=True):
                self._ctx.vector_deleted.emit(key, trash_id)

        self._ctx.run_library_task(work, done, title="Delete")

    def restore(self, trash_id: str) -> None:
        library = self._ctx.library

        def done(path: Path) -> None:
            self._ctx.show_status(f"Restored {self.key_of(Path(path))}")
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
                self.select_after_refresh.emit(result.saved[0][0])

        self._ctx.run_library_task(
            lambda: import_file(library, Path(path), model=model), done, title="Import"
        )

    def export(self, keys: list[str], path: str | Path) -> None:
        """A .zip bundle of `keys`, or (.gguf) a llama.cpp control vector of the first; an ActAdd vector is
        exported as its mean over positions."""
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
