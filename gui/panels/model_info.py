"""The Model tab's "Loaded model" box: what is loaded, and the memory it takes."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel

from engine.model_stats import format_megabytes as _mb  # the one size format, shared with the status bar
from engine.models import ModelInfo

ROWS = (
    ("source", "Source", "What was asked for"),
    ("path", "Folder", "Where the files were read from"),
    ("architecture", "Architecture", "The Hugging Face model_type"),
    ("layers", "Layers", "Decoder blocks; vectors are added at the input of one or more of them"),
    ("hidden", "Hidden size", "Width of the residual stream, the length of a steering direction"),
    ("params", "Parameters", "Number of weights"),
    ("dtype", "Dtype / device", "Dtype of the hidden states and the device of the embeddings"),
    ("quantize", "Quantization", "bitsandbytes quantization in use"),
    ("blocks", "Blocks at", "Where the decoder blocks were found in the module tree"),
    ("chat", "Chat template", "Whether the tokenizer ships a chat template (Generate can use it)"),
    ("ram", "RAM (process)", "Resident memory of this app"),
    ("weights", "Model weights", "Memory taken by the weights"),
    ("vram", "VRAM", "CUDA memory allocated / reserved by torch"),
)


def display_name(info: ModelInfo) -> str:
    """What to call the loaded model: the file the user opened for a .gguf (not its converted cache folder)."""
    if info.source == "demo":
        return "demo model"
    if info.source.lower().endswith(".gguf"):
        return Path(info.source).name
    return Path(info.path).name


class ModelInfoBox(QGroupBox):
    def __init__(self, parent=None) -> None:
        super().__init__("Loaded model", parent)
        self.labels: dict[str, QLabel] = {}
        form = QFormLayout(self)
        for key, label, tip in ROWS:
            value = QLabel("–")
            value.setToolTip(tip)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.labels[key] = value
            form.addRow(label + ":", value)

    def clear(self) -> None:
        for label in self.labels.values():
            label.setText("–")

    def show_model(self, info: ModelInfo) -> None:
        text = {
            "source": info.source,
            "path": info.path,
            "architecture": info.architecture,
            "layers": f"{info.n_layers}  (0–{info.n_layers - 1})",
            "hidden": str(info.hidden_size),
            "params": f"{info.n_params / 1e6:.2f} M",
            "dtype": f"{info.dtype} on {info.device}",
            "quantize": info.quantize,
            "blocks": info.block_path,
            "chat": "yes" if info.has_chat_template else "no",
        }
        for key, value in text.items():
            self.labels[key].setText(value)

    def show_memory(self, report: dict) -> None:
        self.labels["ram"].setText(_mb(report.get("rss_mb")))
        self.labels["weights"].setText(_mb(report.get("weights_mb")))
        if "vram_allocated_mb" in report:
            self.labels["vram"].setText(
                f"{_mb(report['vram_allocated_mb'])} allocated / {_mb(report['vram_reserved_mb'])} reserved"
            )
        else:
            self.labels["vram"].setText("no CUDA GPU")
