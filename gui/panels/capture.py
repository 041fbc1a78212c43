"""The Capture tab: p+/p− (ActAdd) or a table of pairs (mean-diff, PCA), layers, a token preview, save."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.errors import ActAddError
from engine.pairs import PromptPair, check_pair, read_pairs
from engine.residual_norms import ResidualNorms
from engine.tokens import alignment_preview
from gui.context import AppContext, ModelHandle
from gui.item_models import PairTableModel
from gui.jobs import CaptureOutcome, CaptureRequest, Job, NormsRequest
from gui.panels.common import bare_column, double_spin, fill_with_splitter

METHOD_TIPS = {
    "actadd": "ActAdd (Turner et al.): resid_pre(p+) − resid_pre(p−) at every position of one prompt pair",
    "mean-diff": "Mean difference (CAA): the average last-token difference over many pairs, one direction",
    "pca": "PCA (repeng): the first principal component of the pair differences, one direction",
}
PAD_BRUSH = QBrush(QColor("#fff2b3"))


def token_label(tokenizer, token: str) -> str:
    """A readable form of one token: byte-level markers decoded, spaces shown as '␣'."""
    try:
        text = tokenizer.convert_tokens_to_string([token])
    except Exception:
        text = token
    return text.replace(" ", "␣").replace("\n", "↵") or token


class CapturePanel(QWidget):
    def __init__(self, context: AppContext, parent=None):
        super().__init__(parent)
        self._ctx = context
        self._controller = context.controller
        self._capturing = False
        self.profile: ResidualNorms | None = None  # the loaded model's layer profile, once measured
        self._profile_job: Job | None = None
        self._profile_model: ModelHandle | None = None  # the model the profile was measured on

        self._method = QComboBox()
        for method, tip in METHOD_TIPS.items():
            self._method.addItem(method)
            self._method.setItemData(self._method.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self._method.setToolTip("How the vector is computed from the prompts")
        self._method.currentTextChanged.connect(self._on_method_changed)

        # ActAdd page: one pair and the aligned tokens.
        self.positive = QLineEdit("Love")
        self.positive.setToolTip("p+: the prompt whose direction you want (e.g. 'Love')")
        self.negative = QLineEdit("Hate")
        self.negative.setToolTip("p−: the contrast prompt (e.g. 'Hate'); the difference is the vector")
        self._preview = QTableWidget(0, 3)
        self._preview.setHorizontalHeaderLabels(["Pos", "p+ token", "p− token"])
        self._preview.verticalHeader().setVisible(False)
        self._preview.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self._preview.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self._preview.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self._preview.setToolTip(
            "How p+ and p− line up token by token; yellow cells are the space tokens that pad the shorter one"
        )
        self._preview_note = QLabel("Load a model to preview the tokens.")
        self._preview_note.setWordWrap(True)
        actadd_page = QWidget()
        actadd_form = QFormLayout(actadd_page)
        actadd_form.addRow("p+ (positive):", self.positive)
        actadd_form.addRow("p− (negative):", self.negative)
        actadd_form.addRow(self._preview_note)
        actadd_form.addRow(self._preview)

        # Pairs page: an editable table, importable from JSONL or CSV.
        self.pairs_model = PairTableModel(parent=self)
        self._pairs_view = QTableView()
        self._pairs_view.setModel(self.pairs_model)
        self._pairs_view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self._pairs_view.setToolTip("Contrastive pairs; double-click a cell to edit it")
        add_row = QPushButton("Add pair")
        add_row.setToolTip("Append an empty pair to edit")
        add_row.clicked.connect(lambda: self.pairs_model.insertRows(self.pairs_model.rowCount(), 1))
        remove_row = QPushButton("Remove")
        remove_row.setToolTip("Remove the selected pairs")
        remove_row.clicked.connect(self._remove_selected_pairs)
        import_button = QPushButton("Import JSONL/CSV…")
        import_button.setToolTip(
            'A .jsonl with {"positive": ..., "negative": ...} per line, or a 2-column CSV'
        )
        import_button.clicked.connect(self._choose_pair_file)
        self._pairs_note = QLabel("0 pairs")
        pairs_page, pairs_layout = bare_column()
        pairs_layout.addWidget(self._pairs_view, 1)
        pair_buttons = QHBoxLayout()
        for widget in (add_row, remove_row, import_button):
            pair_buttons.addWidget(widget)
        pair_buttons.addStretch(1)
        pair_buttons.addWidget(self._pairs_note)
        pairs_layout.addLayout(pair_buttons)
        for signal in (
            self.pairs_model.rowsInserted,
            self.pairs_model.rowsRemoved,
            self.pairs_model.modelReset,
            self.pairs_model.dataChanged,  # every edit of a cell, not only added or removed rows
        ):
            signal.connect(self._update_pair_count)

        self._pages = QStackedWidget()
        self._pages.addWidget(actadd_page)
        self._pages.addWidget(pairs_page)

        # Where and what to save.
        self.layer_from = QSpinBox()
        self.layer_from.setToolTip("The first decoder layer to capture at (resid_pre of that block)")
        self.layer_to = QSpinBox()
        self.layer_to.setToolTip("The last layer; equal to the first for a single-layer vector")
        self._last_from = 0
        self.layer_from.valueChanged.connect(self._on_first_layer_changed)
        self.layer_to.valueChanged.connect(self._on_last_layer_changed)
        self._depth = QLabel("(no model)")
        self.layer_count = QLabel("")
        self.layer_count.setToolTip("How many layers the captured vector will have")
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. love-hate")
        self.name.setToolTip("The vector's name in the library (letters, digits, - and _ are safest)")
        self.collection = QLineEdit()
        self.collection.setPlaceholderText("optional folder, e.g. sentiment")
        self.collection.setToolTip("A collection is a subfolder of the library")
        self.tags = QLineEdit()
        self.tags.setPlaceholderText("comma-separated, e.g. sentiment, demo")
        self.tags.setToolTip("Tags to filter the library by")
        self.notes = QPlainTextEdit()
        self.notes.setPlaceholderText("What this vector is for, what worked…")
        self.notes.setFixedHeight(64)
        self._coeff = double_spin(
            -1000,
            1000,
            "The coefficient c suggested when the vector is activated (the slider's start)",
            step=0.5,
        )
        self._use_default_coeff = QCheckBox("method default")
        self._use_default_coeff.setToolTip("ActAdd suggests 4, mean-diff and PCA 1")
        self._use_default_coeff.setChecked(True)
        self._use_default_coeff.toggled.connect(lambda on: self._coeff.setEnabled(not on))
        self._coeff.setEnabled(False)
        self._overwrite = QCheckBox("Overwrite a vector of the same name")
        self._overwrite.setToolTip("Without this, a name that exists is refused")

        self.capture_button = QPushButton("Capture and save to library")
        self.capture_button.setToolTip(
            "Run p+ and p− through the model and save the difference (worker thread)"
        )
        self.capture_button.clicked.connect(self.capture)
        self._result = QLabel("")
        self._result.setWordWrap(True)
        self._result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        source_box = QGroupBox("Prompts")
        source_layout = QVBoxLayout(source_box)
        method_row = QHBoxLayout()
        method_row.addWidget(QLabel("Method:"))
        method_row.addWidget(self._method)
        self._method_tip = QLabel(METHOD_TIPS["actadd"])
        self._method_tip.setWordWrap(True)
        self._method_tip.setStyleSheet("color: palette(mid);")
        method_row.addWidget(self._method_tip, 1)
        source_layout.addLayout(method_row)
        source_layout.addWidget(self._pages, 1)

        save_box = QGroupBox("Vector")
        save_form = QFormLayout(save_box)
        layer_row = QHBoxLayout()
        layer_row.addWidget(self.layer_from)
        layer_row.addWidget(QLabel("to"))
        layer_row.addWidget(self.layer_to)
        layer_row.addWidget(self._depth)
        layer_row.addStretch(1)
        save_form.addRow("Layers:", layer_row)
        save_form.addRow("", self.layer_count)
        save_form.addRow("Name:", self.name)
        save_form.addRow("Collection:", self.collection)
        save_form.addRow("Tags:", self.tags)
        save_form.addRow("Notes:", self.notes)
        coeff_row = QHBoxLayout()
        coeff_row.addWidget(self._coeff)
        coeff_row.addWidget(self._use_default_coeff)
        coeff_row.addStretch(1)
        save_form.addRow("Default c:", coeff_row)
        save_form.addRow(self._overwrite)
        save_form.addRow(self.capture_button)
        save_form.addRow(self._result)

        save_column, save_column_layout = bare_column()
        save_column_layout.addWidget(save_box)
        save_column_layout.addWidget(self._build_profile_box())
        save_column_layout.addStretch(1)
        fill_with_splitter(self, source_box, save_column, stretch=(3, 2))

        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(150)
        self._preview_timer.timeout.connect(self.update_preview)
        self.positive.textChanged.connect(self._preview_timer.start)
        self.negative.textChanged.connect(self._preview_timer.start)

        context.model_changed.connect(self._on_model_changed)
        self._on_model_changed(context.model)
        self.read_settings()

    # ---- method and layers -----------------------------------------------------------------------------
    def method(self) -> str:
        return self._method.currentText()

    def set_method(self, method: str) -> None:
        self._method.setCurrentText(method)

    @Slot(str)
    def _on_method_changed(self, method: str) -> None:
        self._pages.setCurrentIndex(0 if method == "actadd" else 1)
        self._method_tip.setText(METHOD_TIPS.get(method, ""))

    @Slot(int)
    def _on_first_layer_changed(self, first: int) -> None:
        """A single-layer range moves with its first layer ("from 6" with "to 7" left behind silently made
        a 2-layer vector); a wider range keeps its last layer, clamped so it never ends before it starts."""
        last = self.layer_to.value()
        if last == self._last_from or last < first:
            last = first
        self._last_from = first
        self.layer_to.setValue(last)
        self._update_layer_count()

    @Slot(int)
    def _on_last_layer_changed(self, last: int) -> None:
        if last < self.layer_from.value():
            self.layer_from.setValue(last)  # moves "to" along with it (a single layer)
        self._update_layer_count()

    def _update_layer_count(self) -> None:
        first, last = self.layer_from.value(), self.layer_to.value()
        n = last - first + 1
        self.layer_count.setText(
            f"→ a single-layer vector at layer {first}"
            if n == 1
            else f"→ a {n}-layer vector (layers {first}–{last}, each its own direction)"
        )

    def layers(self) -> list[int]:
        return list(range(self.layer_from.value(), self.layer_to.value() + 1))

    def set_layers(self, first: int, last: int | None = None) -> None:
        self.layer_from.setValue(first)
        self.layer_to.setValue(last if last is not None else first)
        self._update_layer_count()

    @Slot(object)
    def _on_model_changed(self, handle) -> None:
        if handle is not self._profile_model:
            self.profile, self._profile_model = None, None
            self.profile_note.setText(
                "Measure the layer profile of this model."
                if handle
                else "Load a model, then measure its layer profile."
            )
            self.profile_button.setEnabled(handle is not None and self._profile_job is None)
            self._draw_profile()
            if handle is not None and self.isVisible():
                self.measure_profile()
        depth = handle.info.n_layers if handle is not None else 0
        for spin in (self.layer_from, self.layer_to):
            spin.setRange(0, max(0, depth - 1))
        if handle is None:
            self._depth.setText("(no model)")
        else:
            self._depth.setText(f"of 0–{depth - 1}")
            if self.layer_from.value() == 0 and self.layer_to.value() == 0 and depth > 2:
                self.set_layers(min(depth - 1, max(1, depth // 4)))
        self.capture_button.setEnabled(handle is not None and not self._capturing)
        self.update_preview()

    # ---- the per-layer residual-norm profile -------------------------------------------------------------
    def _build_profile_box(self) -> QGroupBox:
        self.profile_figure = Figure(figsize=(4, 1.8), layout="constrained")
        self.profile_canvas = FigureCanvasQTAgg(self.profile_figure)
        self.profile_canvas.setMinimumHeight(150)
        self.profile_canvas.setToolTip(
            "Typical residual-stream norm entering each layer, on neutral text; the chosen layers are "
            "orange. Click a bar to capture at that layer."
        )
        self.profile_canvas.mpl_connect("button_press_event", self._on_profile_click)
        self.profile_button = QPushButton("Measure layer profile")
        self.profile_button.setToolTip(
            "One forward pass over a neutral text on the worker (cached per model afterwards)"
        )
        self.profile_button.clicked.connect(self.measure_profile)
        self.profile_note = QLabel("Load a model, then measure its layer profile.")
        self.profile_note.setWordWrap(True)
        box = QGroupBox("Layer profile (residual norm)")
        layout = QVBoxLayout(box)
        layout.addWidget(self.profile_canvas)
        row = QHBoxLayout()
        row.addWidget(self.profile_button)
        row.addWidget(self.profile_note, 1)
        layout.addLayout(row)
        self.layer_from.valueChanged.connect(self._draw_profile)
        self.layer_to.valueChanged.connect(self._draw_profile)
        self._draw_profile()
        return box

    @Slot()
    def measure_profile(self) -> None:
        if self._ctx.model is None or self._profile_job is not None:
            return
        self.profile_button.setEnabled(False)
        self.profile_note.setText("Measuring…")
        model = self._ctx.model
        job = self._profile_job = self._controller.submit(NormsRequest())
        job.done.connect(lambda norms: self._on_profile(model, norms))
        job.failed.connect(lambda message: self.profile_note.setText("Could not measure: " + message))
        job.aborted.connect(lambda: self.profile_note.setText("Measurement stopped."))
        job.finished.connect(self._on_profile_finished)

    def _on_profile(self, model: ModelHandle | None, norms: ResidualNorms) -> None:
        if model is not self._ctx.model:  # another model was loaded meanwhile
            return
        self.profile, self._profile_model = norms, model
        where = "from the cache" if norms.cached else f"measured on {norms.n_tokens} tokens"
        self.profile_note.setText(f"{len(norms.norms)} layers, {where}.")
        self._draw_profile()

    @Slot()
    def _on_profile_finished(self) -> None:
        self._profile_job = None
        self.profile_button.setEnabled(self._ctx.model is not None)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        # Measured when first needed: opening the tab with a model that has no profile yet.
        if self._ctx.model is not None and self._profile_model is not self._ctx.model:
            self.measure_profile()

    @Slot()
    def _draw_profile(self) -> None:
        fig = self.profile_figure
        fig.clear()
        ax = fig.add_subplot()
        if self.profile is None:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "no profile yet", ha="center", va="center", color="grey")
        else:
            norms = self.profile.norms
            chosen = set(self.layers())
            colors = ["tab:orange" if layer in chosen else "tab:blue" for layer in range(len(norms))]
            ax.bar(range(len(norms)), norms, color=colors)
            ax.set_xlabel("layer", fontsize=8)
            ax.set_ylabel("‖resid_pre‖", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_ylim(bottom=0)
        self.profile_canvas.draw_idle()

    def profile_colors(self) -> list[str]:
        """The bars' colours, layer by layer (orange: chosen), as drawn."""
        from matplotlib.colors import to_hex

        axes = self.profile_figure.get_axes()
        return [to_hex(bar.get_facecolor()) for bar in axes[0].patches] if axes else []

    def _on_profile_click(self, event) -> None:
        if self.profile is None or event.inaxes is None or event.xdata is None:
            return
        layer = round(event.xdata)
        if 0 <= layer < len(self.profile.norms):
            self.set_layers(layer)

    # ---- preview ------------------------------------------------------------------------------------------
    @Slot()
    def update_preview(self) -> None:
        self._preview.setRowCount(0)
        handle = self._ctx.model
        if handle is None:
            self._preview_note.setText("Load a model to preview the tokens.")
            return
        try:
            rows = alignment_preview(handle.tokenizer, self.positive.text(), self.negative.text())
        except ActAddError as exc:
            self._preview_note.setText(str(exc))
            return
        tokenizer = handle.tokenizer
        self._preview.setRowCount(len(rows))
        pads = 0
        for i, row in enumerate(rows):
            cells = [
                (str(row.position), False),
                (token_label(tokenizer, row.positive), row.positive_is_pad),
                (token_label(tokenizer, row.negative), row.negative_is_pad),
            ]
            for column, (text, is_pad) in enumerate(cells):
                item = QTableWidgetItem(text)
                if is_pad:
                    pads += 1
                    item.setBackground(PAD_BRUSH)
                    item.setToolTip("space padding: the shorter prompt is padded with ' ' (the paper's rule)")
                self._preview.setItem(i, column, item)
        note = f"{len(rows)} positions (position 0 is the shared BOS, so the vector is 0 there)"
        if pads:
            note += f"; {pads} space pad{'s' if pads > 1 else ''} (yellow)"
        self._preview_note.setText(note)

    def preview_rows(self) -> list[tuple[str, str, str]]:
        return [
            tuple(self._preview.item(r, c).text() for c in range(3))  # type: ignore[misc]
            for r in range(self._preview.rowCount())
        ]

    # ---- pairs --------------------------------------------------------------------------------------------
    @Slot()
    def _update_pair_count(self) -> None:
        pairs = self.pairs_model.pairs()
        half = len(self.half_filled_rows())
        text = f"{len(pairs)} pair{'s' if len(pairs) != 1 else ''}"
        if half:
            text += f" ({half} half-filled)"
        self._pairs_note.setText(text)

    def pair_rows(self) -> list[tuple[int, PromptPair]]:
        """(the row number the table shows, its pair) for every row with any text; blank rows are skipped."""
        model = self.pairs_model
        rows = []
        for row in range(model.rowCount()):
            positive, negative = (str(model.data(model.index(row, c)) or "") for c in (0, 1))
            if positive.strip() or negative.strip():
                number = int(model.headerData(row, Qt.Orientation.Vertical) or row + 1)
                rows.append((number, PromptPair(positive, negative)))
        return rows

    def half_filled_rows(self) -> list[int]:
        """The shown row numbers of pairs with one side empty (or only spaces)."""
        return [n for n, p in self.pair_rows() if not (p.positive.strip() and p.negative.strip())]

    def check_pairs(self) -> None:
        """Refuse a half-filled row, naming it as the table numbers it (the engine's one rule)."""
        for number, pair in self.pair_rows():
            blanked = PromptPair(
                pair.positive.strip() and pair.positive, pair.negative.strip() and pair.negative
            )
            check_pair(blanked, f"pair row {number}")

    @Slot()
    def _remove_selected_pairs(self) -> None:
        rows = sorted({i.row() for i in self._pairs_view.selectionModel().selectedIndexes()}, reverse=True)
        for row in rows:
            self.pairs_model.removeRows(row, 1)

    @Slot()
    def _choose_pair_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import prompt pairs", str(Path.home()), "Pair files (*.jsonl *.json *.csv);;All files (*)"
        )
        if path:
            self.import_pairs(path)

    def import_pairs(self, path: str | Path) -> None:
        def done(pairs) -> None:
            self.pairs_model.set_pairs(pairs)
            if self.method() == "actadd":
                self.set_method("mean-diff")
            self._ctx.show_status(f"Imported {len(pairs)} pairs from {Path(path).name}")

        # Reading a file is I/O: off the GUI thread.
        self._ctx.tasks.submit(
            lambda: read_pairs(Path(path)),
            done,
            lambda message: self._ctx.report_error("Import pairs", message),
        )

    # ---- capture ------------------------------------------------------------------------------------------
    def request(self) -> CaptureRequest:
        tags = tuple(t.strip() for t in self.tags.text().split(",") if t.strip())
        method = self.method()
        return CaptureRequest(
            method=method,
            layers=self.layers(),
            name=self.name.text().strip(),
            library_root=str(self._ctx.library.root),
            positive=self.positive.text(),
            negative=self.negative.text(),
            pairs=self.pairs_model.pairs() if method != "actadd" else [],
            tags=tags,
            notes=self.notes.toPlainText(),
            default_coeff=None if self._use_default_coeff.isChecked() else self._coeff.value(),
            collection=self.collection.text().strip(),
            overwrite=self._overwrite.isChecked(),
        )

    @Slot()
    def capture(self) -> None:
        if self.method() != "actadd":
            try:
                self.check_pairs()
            except ActAddError as exc:
                self._result.setText("Not captured: " + str(exc))
                self._ctx.report_error("Capture", str(exc))
                self._pairs_view.setFocus()
                return
        request = self.request()
        if not request.name:
            request.name = self._suggest_name()
            self.name.setText(request.name)
        self._capturing = True
        self.capture_button.setEnabled(False)
        self._result.setText("Capturing…")
        job = self._controller.submit(request)
        job.progress.connect(self._on_capture_progress)
        job.done.connect(self._on_capture_done)
        job.failed.connect(self._on_failed)
        job.finished.connect(self._on_finished)

    def _suggest_name(self) -> str:
        if self.method() == "actadd":
            base = f"{self.positive.text().strip()}-{self.negative.text().strip()}".strip("-") or "vector"
        else:
            base = f"{self.method()}-{len(self.pairs_model.pairs())}-pairs"
        clean = "".join(ch if ch.isalnum() or ch in "-_ " else "-" for ch in base).strip().replace(" ", "-")
        return f"{clean.lower()}-L{self.layer_from.value()}"[:120]

    @Slot(object)
    def _on_capture_progress(self, progress: tuple[int, int]) -> None:
        done, total = progress
        self._result.setText(f"Capturing… {done} of {total} prompts")

    @Slot(object)
    def _on_capture_done(self, outcome: CaptureOutcome) -> None:
        self._result.setText(
            f"Saved {outcome.name!r}: {outcome.method}, layers {outcome.layers}, shape {outcome.shape}\n{outcome.path}"
        )
        self._ctx.show_status(f"Captured {outcome.name} into the library")
        self._ctx.refresh_library()

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._result.setText("Capture failed: " + message)
        self._ctx.report_error("Capture failed", message)

    @Slot()
    def _on_finished(self) -> None:
        self._capturing = False
        self.capture_button.setEnabled(self._ctx.model is not None)

    # ---- settings -----------------------------------------------------------------------------------------
    def read_settings(self) -> None:
        settings = self._ctx.settings
        self.positive.setText(str(settings.value("capture/positive", self.positive.text())))
        self.negative.setText(str(settings.value("capture/negative", self.negative.text())))
        method = str(settings.value("capture/method", "actadd"))
        if method in METHOD_TIPS:
            self.set_method(method)
        try:  # the pair table comes back as it was left (half-filled rows too: they are refused on capture)
            saved = json.loads(str(settings.value("capture/pairs", "[]") or "[]"))
            pairs = [PromptPair(str(p), str(n)) for p, n in saved]
        except (ValueError, TypeError):
            pairs = []
        if pairs:
            self.pairs_model.set_pairs(pairs)

    def write_settings(self) -> None:
        settings = self._ctx.settings
        settings.setValue("capture/positive", self.positive.text())
        settings.setValue("capture/negative", self.negative.text())
        settings.setValue("capture/method", self.method())
        settings.setValue(
            "capture/pairs", json.dumps([[p.positive, p.negative] for p in self.pairs_model.pairs()])
        )
