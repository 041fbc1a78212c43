"""The Capture tab: p+/p− (ActAdd) or a table of pairs (mean-diff, PCA), layers, a token preview, save.

This panel owns the capture request and its job; its parts are gui/widgets: alignment_preview.py (the
p+/p− tokens), pair_table.py, layer_range.py and layer_profile.py (the residual norm per layer).
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from engine.errors import ActAddError
from engine.pairs import PromptPair
from engine.residual_norms import ResidualNorms
from gui.context import AppContext
from gui.jobs import CaptureOutcome, CaptureRequest, Job
from gui.panels.common import bare_column, double_spin, fill_with_splitter
from gui.widgets.alignment_preview import AlignmentPreview
from gui.widgets.layer_profile import LayerProfile
from gui.widgets.layer_range import LayerRange
from gui.widgets.pair_table import PairTable

METHOD_TIPS = {
    "actadd": "ActAdd (Turner et al.): resid_pre(p+) − resid_pre(p−) at every position of one prompt pair",
    "mean-diff": "Mean difference (CAA): the average last-token difference over many pairs, one direction",
    "pca": "PCA (repeng): the first principal component of the pair differences, one direction",
}


class CapturePanel(QWidget):
    def __init__(self, context: AppContext, parent=None):
        super().__init__(parent)
        self._ctx = context
        self._controller = context.controller
        self._capturing = False

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
        self._preview = AlignmentPreview()
        self._preview_note = self._preview.note
        actadd_page = QWidget()
        actadd_form = QFormLayout(actadd_page)
        actadd_form.addRow("p+ (positive):", self.positive)
        actadd_form.addRow("p− (negative):", self.negative)
        actadd_form.addRow(self._preview_note)
        actadd_form.addRow(self._preview)

        # Pairs page: an editable table, importable from JSONL or CSV.
        self.pair_table = PairTable(context)
        self.pair_table.imported.connect(self._on_pairs_imported)
        self.pairs_model, self._pairs_note = self.pair_table.model, self.pair_table.note

        self._pages = QStackedWidget()
        self._pages.addWidget(actadd_page)
        self._pages.addWidget(self.pair_table)

        # Where and what to save.
        self.layer_range = LayerRange()
        self.layer_from, self.layer_to = self.layer_range.first, self.layer_range.last
        self.layer_count = self.layer_range.count
        self.layer_profile = LayerProfile(context)
        self.layer_profile.layer_clicked.connect(self.set_layers)
        self.layer_range.changed.connect(self._on_layers_changed)
        self._on_layers_changed()
        self.profile_figure, self.profile_canvas = self.layer_profile.figure, self.layer_profile.canvas
        self.profile_button, self.profile_note = self.layer_profile.button, self.layer_profile.note
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
        save_form.addRow("Layers:", self.layer_range)
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
        save_column_layout.addWidget(self.layer_profile)
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

    def layers(self) -> list[int]:
        return self.layer_range.layers()

    def set_layers(self, first: int, last: int | None = None) -> None:
        self.layer_range.set_layers(first, last)

    @Slot(object)
    def _on_model_changed(self, handle) -> None:
        self.layer_profile.set_model(handle, visible=self.isVisible())
        self.layer_range.set_depth(handle.info.n_layers if handle is not None else 0)
        self.capture_button.setEnabled(handle is not None and not self._capturing)
        self.update_preview()

    # ---- the per-layer residual-norm profile (LayerProfile) ---------------------------------------------
    @property
    def profile(self) -> ResidualNorms | None:
        """The loaded model's layer profile, once measured."""
        return self.layer_profile.profile

    @property
    def _profile_job(self) -> Job | None:
        return self.layer_profile.job

    @Slot()
    def measure_profile(self) -> None:
        self.layer_profile.measure()

    def profile_colors(self) -> list[str]:
        return self.layer_profile.colors()

    @Slot()
    def _on_layers_changed(self) -> None:
        self.layer_profile.set_chosen(self.layers())

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.layer_profile.measure_if_missing()

    # ---- preview (AlignmentPreview) and pairs (PairTable) -------------------------------------------------
    @Slot()
    def update_preview(self) -> None:
        handle = self._ctx.model
        self._preview.show_pair(
            handle.tokenizer if handle is not None else None, self.positive.text(), self.negative.text()
        )

    def preview_rows(self) -> list[tuple[str, str, str]]:
        return self._preview.rows()

    def import_pairs(self, path: str | Path) -> None:
        self.pair_table.import_pairs(path)

    @Slot()
    def _on_pairs_imported(self) -> None:
        if self.method() == "actadd":
            self.set_method("mean-diff")

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
                self.pair_table.check_pairs()
            except ActAddError as exc:
                self._result.setText("Not captured: " + str(exc))
                self._ctx.report_error("Capture", str(exc))
                self.pair_table.view.setFocus()
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
