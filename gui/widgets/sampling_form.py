"""The Generate tab's sampling settings as one form: values in, `SamplingConfig` out."""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QHBoxLayout, QPushButton, QSpinBox, QWidget

from engine.generation import SamplingConfig
from gui.panels.common import double_spin


class SamplingForm(QGroupBox):
    def __init__(self, parent: QWidget | None = None):
        super().__init__("Sampling", parent)
        self.temperature = double_spin(
            0.0, 5.0, "Softmax temperature; 0 picks the most likely token", step=0.05
        )
        self.top_p = double_spin(
            0.01, 1.0, "Nucleus sampling: keep the smallest set with this mass", step=0.05
        )
        self.top_k = QSpinBox()
        self.top_k.setRange(0, 100000)
        self.top_k.setToolTip("Keep only the k most likely tokens (0: off)")
        self.repetition_penalty = double_spin(
            0.01, 5.0, "Multiplicative penalty on repeated tokens (1: off)", step=0.05
        )
        self.frequency_penalty = double_spin(
            0.0, 5.0, "Subtract this × the count of each generated token", step=0.1
        )
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 8192)
        self.max_tokens.setToolTip("How many tokens to generate per pane")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Random seed: the same seed and settings give the same text")
        self.random_seed = QCheckBox("new seed each run")
        self.random_seed.setToolTip("Pick a fresh seed for every Generate (Regenerate reuses the last one)")
        paper = QPushButton("Paper defaults")
        paper.setToolTip("The ActAdd paper's sampling: temperature 1.0, top-p 0.3, frequency penalty 1.0")
        paper.clicked.connect(self.apply_paper_defaults)
        form = QFormLayout(self)
        form.addRow("Temperature:", self.temperature)
        form.addRow("Top-p:", self.top_p)
        form.addRow("Top-k:", self.top_k)
        form.addRow("Repetition penalty:", self.repetition_penalty)
        form.addRow("Frequency penalty:", self.frequency_penalty)
        form.addRow("Max tokens:", self.max_tokens)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.random_seed)
        form.addRow("Seed:", seed_row)
        form.addRow(paper)
        self.apply_paper_defaults()
        self.max_tokens.setValue(48)

    @Slot()
    def apply_paper_defaults(self) -> None:
        self.set_sampling(SamplingConfig.paper(), keep_length=True)

    def set_sampling(self, sampling: SamplingConfig, keep_length: bool = False) -> None:
        self.temperature.setValue(sampling.temperature)
        self.top_p.setValue(sampling.top_p)
        self.top_k.setValue(sampling.top_k)
        self.repetition_penalty.setValue(sampling.repetition_penalty)
        self.frequency_penalty.setValue(sampling.frequency_penalty)
        if not keep_length:
            self.max_tokens.setValue(sampling.max_new_tokens)
        if sampling.seed is not None:
            self.seed.setValue(sampling.seed)

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            temperature=self.temperature.value(),
            top_p=self.top_p.value(),
            top_k=self.top_k.value(),
            repetition_penalty=self.repetition_penalty.value(),
            frequency_penalty=self.frequency_penalty.value(),
            max_new_tokens=self.max_tokens.value(),
            seed=self.seed.value(),
        )
