"""`VectorRow`: one active vector of the Generate tab, with its live strength slider.

The slider has two scales (`VectorRow.set_raw`):
- normalised strength `s` (the default once the model's residual norms are measured): the added vector's
  per-position norm is `s` times the typical residual norm at its layer (engine/strength.py), so 0.5 means
  "half a typical residual" on any model. Range ±1.5 in 0.01 steps (`STRENGTH_LIMIT`, `STRENGTH_STEPS`);
- raw coefficient `c`, the engine's multiplier (range ±10 in 0.1 steps, wider for a bigger default).

The row's truth is always the raw `c` the engine gets; a strength is converted with the factor
`StrengthScale.per_unit` that `engine.strength.resolve_strength` computes for the row's mode and layer, so
`c = s * per_unit` is exactly what `Steer.from_strength` would give. Mode ablate has no strength (its c is
already a fraction), and before the norms are known the row shows c only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.library import VectorEntry
from engine.vector import MODES
from gui.jobs import ActiveVector
from gui.panels.common import double_spin

MODE_TIPS = {
    "front": "ActAdd: add c·vector at the first prompt positions only (the paper); live changes can't act on it",
    "all": "Add c·direction at every position, prompt and generated (CAA / repeng style)",
    "generated": "Add c·direction only at generated positions",
    "ablate": "Remove the component along the direction (c = 1: fully)",
}
SLIDER_STEPS = 10  # slider ticks per unit of raw coefficient (0.1 steps)
STRENGTH_STEPS = 100  # slider ticks per unit of normalised strength (0.01 steps)
STRENGTH_LIMIT = 1.5  # the strength slider's default range: ±1.5 typical residual norms
STRENGTH_TIP = (
    "Strength s: the added vector's norm as a fraction of the typical residual norm at its layer "
    "(0.5 = half a typical residual; negative: the opposite way). Measured once per model on neutral text."
)
RAW_TIP = "Coefficient c: the raw multiplier of the vector (negative: the opposite way)"
_ids = itertools.count(1)


@dataclass(frozen=True)
class StrengthScale:
    """How strength maps to c for one (mode, layer) of a vector: `c = s * per_unit`."""

    per_unit: float  # c at strength 1 (resolve_strength(steer, 1.0, norms).coeff)
    profile: dict[int, float] | None  # a multi-layer vector's per-layer factors at that strength
    layers: dict[int, float]  # layer -> ||v_l|| / r_l in this mode: the strength c = 1 amounts to


ScaleKey = tuple[str, int | None]  # (mode, layer for a single-layer vector, None for several layers)


def strength_scales(vector, norms: list[float], depth: int) -> dict[ScaleKey, StrengthScale]:
    """Every (mode, layer) a row can be set to, with its scale; modes without a strength are left out.

    Pure engine math on a loaded vector (no model), so it runs on a pool thread."""
    from engine.errors import ActAddError
    from engine.steering import Steer
    from engine.strength import relative_norms, resolve_strength

    single = len(vector.layer_ids) == 1
    layers: list[int | None] = list(range(min(depth, len(norms)))) if single else [None]
    out: dict[ScaleKey, StrengthScale] = {}
    for mode in MODES:
        if mode == "ablate" or (mode == "front" and not vector.is_positional):
            continue
        for layer in layers:
            try:
                steer = resolve_strength(Steer(vector, 0.0, mode=mode, at_layer=layer), 1.0, norms)
                if single:
                    relative = {int(layer or 0): 1.0 / steer.coeff}
                else:
                    relative = relative_norms(vector, norms, mode=mode)
            except ActAddError:  # a zero vector, or a layer past the model: no strength for it
                continue
            out[(mode, layer)] = StrengthScale(steer.coeff, steer.profile, relative)
    return out


class VectorRow(QFrame):
    """One active vector: enable box, strength (or c) slider + field, layer and mode."""

    # (vector id, effective raw coefficient: c, or 0 when disabled); the id addresses the vector in a
    # running generation, whatever rows are added or removed around it
    coefficient_changed = Signal(int, float)
    remove_requested = Signal()

    def __init__(self, entry: VectorEntry, depth: int, other_model: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.entry = entry
        self.vector_id = next(_ids)
        self._other_model = other_model
        self._coeff = float(entry.default_coeff)  # the truth: the raw c the engine gets
        self._strength: float | None = None  # the strength c was set from, exactly as typed
        self._scales: dict[ScaleKey, StrengthScale] = {}
        self._raw = False  # the user's choice; strength is shown only when a scale exists too
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.enabled = QCheckBox(entry.key)
        self.enabled.setChecked(True)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.spin = double_spin(-1000.0, 1000.0, RAW_TIP, decimals=2, step=0.1)
        self.unit = QLabel("c")
        self.unit.setMinimumWidth(14)
        self.readout = QLabel("")  # the other scale's value, e.g. "c = 6.20" or "= 0.40 of residual"
        self.readout.setStyleSheet("color: #555;")
        self.norm_label = QLabel("")  # ||v|| / typical residual at the row's layer
        self.norm_label.setStyleSheet("color: #555; font-size: 11px;")
        self.layer = QSpinBox()
        self.layer.setToolTip("The layer the vector is added at (a single-layer vector can be moved)")
        if len(entry.layers) == 1:
            self.layer.setRange(0, max(0, depth - 1))
            self.layer.setValue(entry.layers[0])
        else:
            self.layer.setEnabled(False)
            self.layer.setSpecialValueText(f"{entry.layers[0]}–{entry.layers[-1]}")
            self.layer.setToolTip("A multi-layer vector acts at all of its layers")
        self.mode = QComboBox()
        for mode in MODES:
            self.mode.addItem(mode)
            self.mode.setItemData(self.mode.count() - 1, MODE_TIPS[mode], Qt.ItemDataRole.ToolTipRole)
        if not entry.is_positional:  # a [hidden] direction has no positions to put at the front
            self.mode.model().item(0).setEnabled(False)
        self.mode.setCurrentText(entry.default_mode)
        self.mode.setToolTip(MODE_TIPS[entry.default_mode])
        self.mode.currentTextChanged.connect(lambda m: self.mode.setToolTip(MODE_TIPS[m]))
        remove = QToolButton()
        remove.setText("✕")
        remove.setToolTip("Remove from the active vectors")
        remove.clicked.connect(self.remove_requested)

        self.slider.valueChanged.connect(self._slider_moved)
        self.spin.valueChanged.connect(self._spin_changed)
        self.enabled.toggled.connect(lambda _: self._emit_coefficient())
        # Moving to another layer or mode keeps what the user set in the scale shown.
        self.mode.currentTextChanged.connect(lambda _: self._placement_changed())
        self.layer.valueChanged.connect(lambda _: self._placement_changed())
        self._set_label()
        self._show()

        top = QHBoxLayout()
        top.addWidget(self.enabled, 1)
        top.addWidget(QLabel("layer"))
        top.addWidget(self.layer)
        top.addWidget(self.mode)
        top.addWidget(remove)
        bottom = QHBoxLayout()
        bottom.addWidget(self.unit)
        bottom.addWidget(self.slider, 1)
        bottom.addWidget(self.spin)
        bottom.addWidget(self.readout)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addLayout(bottom)
        layout.addWidget(self.norm_label)

    # ---- the two scales -----------------------------------------------------------------------------------
    def scale(self) -> StrengthScale | None:
        """The strength scale of the row's current mode and layer (None: no strength, c only)."""
        layer = self.layer.value() if len(self.entry.layers) == 1 else None
        return self._scales.get((self.mode.currentText(), layer))

    def shows_strength(self) -> bool:
        return not self._raw and self.scale() is not None

    def set_scales(self, scales: dict[ScaleKey, StrengthScale]) -> None:
        """The vector's scales for the loaded model's residual norms ({}: none known)."""
        self._scales = dict(scales)
        self._show()

    def set_raw(self, raw: bool) -> None:
        """Show the raw coefficient c (True) or the normalised strength (False, when it is known)."""
        self._raw = raw
        self._show()

    def coefficient(self) -> float:
        """The raw coefficient c the engine gets."""
        return self._coeff

    def strength(self) -> float | None:
        """The normalised strength of the current c (None when the scale is unknown)."""
        scale = self.scale()
        if scale is None:
            return None
        return self._strength if self._strength is not None else self._coeff / scale.per_unit

    def effective_coefficient(self) -> float:
        return self._coeff if self.enabled.isChecked() else 0.0

    def set_coefficient(self, value: float) -> None:
        """Set the raw c."""
        self._coeff = float(value)
        self._strength = None
        self._show()
        self._emit_coefficient()

    def set_strength(self, value: float) -> None:
        """Set the normalised strength (ignored when the row has no scale)."""
        scale = self.scale()
        if scale is not None:
            self._coeff = float(value) * scale.per_unit  # the engine's c_l = s * r_l / ||v_l||, exactly
            self._strength = float(value)
            self._show()
            self._emit_coefficient()

    def describe(self, value: float | None = None) -> str:
        """A readable value for a live-change marker: "0.40 of residual" or "c 6.2"."""
        c = self._coeff if value is None else value
        scale = self.scale()
        if scale is not None and not self._raw:
            return f"{c / scale.per_unit:.2f} of residual"
        return f"c {c:g}"

    # ---- display --------------------------------------------------------------------------------------
    def _set_label(self) -> None:
        text = self.entry.key + (" ⚠" if self._other_model else "")
        self.enabled.setText(text)
        self.enabled.setToolTip(
            self._other_model or "Include this vector in the steered pane (toggling works live)"
        )

    def _show(self) -> None:
        """Put `_coeff` into the slider and field in the shown scale, without emitting anything."""
        scale = self.scale()
        strength = self.shows_strength()
        steps = STRENGTH_STEPS if strength else SLIDER_STEPS
        shown = (self.strength() or 0.0) if strength else self._coeff
        limit = STRENGTH_LIMIT if strength else max(10.0, 3.0 * abs(self.entry.default_coeff))
        limit = max(limit, abs(shown))
        for widget in (self.slider, self.spin):
            widget.blockSignals(True)
        self.slider.setRange(int(-limit * steps), int(limit * steps))
        self.slider.setValue(round(shown * steps))
        self.spin.setSingleStep(1.0 / steps)
        self.spin.setValue(shown)
        for widget in (self.slider, self.spin):
            widget.blockSignals(False)
        self.unit.setText("s" if strength else "c")
        self.slider.setToolTip(STRENGTH_TIP if strength else RAW_TIP)
        self.spin.setToolTip(STRENGTH_TIP if strength else RAW_TIP)
        if scale is None:
            self.readout.setText("")
            self.norm_label.setText(
                "mode ablate takes a raw c (1 = remove the direction)"
                if self.mode.currentText() == "ablate"
                else ""
            )
            self.norm_label.setToolTip("")
            return
        self.readout.setText(
            f"c = {self._coeff:.3g}" if strength else f"= {self._coeff / scale.per_unit:.2f} of residual"
        )
        relative = ", ".join(f"L{layer}: {r:.2f}×" for layer, r in sorted(scale.layers.items()))
        self.norm_label.setText(f"‖v‖ / typical residual ({self.mode.currentText()} mode): {relative}")
        self.norm_label.setToolTip(
            "The norm of what this row adds, next to the typical residual norm at its layer: the strength "
            "that c = 1 amounts to. Above ~1, c = 1 already outweighs the model's own activations. It "
            "depends on the mode: front adds each position's own row, all and generated add one direction."
        )

    # ---- edits ------------------------------------------------------------------------------------------
    @Slot(int)
    def _slider_moved(self, position: int) -> None:
        steps = STRENGTH_STEPS if self.shows_strength() else SLIDER_STEPS
        self.spin.setValue(position / steps)  # -> _spin_changed

    @Slot(float)
    def _spin_changed(self, value: float) -> None:
        if self.shows_strength():
            self.set_strength(value)
        else:
            self.set_coefficient(value)

    def _placement_changed(self) -> None:
        """A new mode or layer: keep the shown value (strength or c), recompute the other."""
        if self.shows_strength():
            self.set_strength(self.spin.value())
        else:
            self._strength = None
            self._show()

    def _emit_coefficient(self) -> None:
        self.coefficient_changed.emit(self.vector_id, self.effective_coefficient())

    def set_streaming(self, streaming: bool) -> None:
        """Mode and layer shape the steering plan: they can't change while it runs."""
        self.mode.setEnabled(not streaming)
        self.layer.setEnabled(not streaming and len(self.entry.layers) == 1)

    def set_entry(self, entry: VectorEntry) -> None:
        """The same vector under a new key or path (renamed or moved in the library)."""
        self.entry = entry
        self._set_label()

    def state(self) -> dict:
        """What the user set, to re-create the row (e.g. when a deleted vector is restored)."""
        return {
            "coeff": self._coeff,
            "mode": self.mode.currentText(),
            "layer": self.layer.value(),
            "enabled": self.enabled.isChecked(),
        }

    def restore_state(self, state: dict) -> None:
        self.mode.setCurrentText(state["mode"])
        if len(self.entry.layers) == 1:
            self.layer.setValue(state["layer"])
        self.enabled.setChecked(state["enabled"])
        self.set_coefficient(state["coeff"])

    def active_vector(self) -> ActiveVector:
        at_layer = None
        if len(self.entry.layers) == 1 and self.layer.value() != self.entry.layers[0]:
            at_layer = self.layer.value()
        scale = self.scale() if self.shows_strength() else None
        return ActiveVector(
            path=str(self.entry.path),
            name=self.entry.key,
            coeff=self.coefficient(),
            mode=self.mode.currentText(),
            at_layer=at_layer,
            enabled=self.enabled.isChecked(),
            id=self.vector_id,
            method=self.entry.method,
            layers=list(self.entry.layers),
            strength=self.strength() if scale is not None else None,
            profile=dict(scale.profile) if scale is not None and scale.profile else None,
        )


__all__ = ["STRENGTH_LIMIT", "STRENGTH_STEPS", "StrengthScale", "VectorRow", "strength_scales"]
