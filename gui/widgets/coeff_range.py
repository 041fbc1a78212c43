"""The Sweep tab's coefficient range: from, to, how many, and in which units.

Units: normalised strengths by default ("× residual norm (n)": `s` adds `s` typical residual norms at each
swept layer, `engine.strength`), so one range suits the demo model and a real one, where a one-token ActAdd
vector's norm differs a hundredfold; "raw c" is one choice away. Until the user edits the numbers the range
follows the sweep's mode (`default_range`); mode ablate has no strength and always sweeps raw c from 0 to 1.
Switching units keeps an edited range, converted at the vector's own first layer (the raw c of a strength
differs by layer).

Settings (`sweep/coeff_from`, `coeff_to`, `coeff_count`, `coeff_units`, `coeff_edited`). A file from before
the units choice has no `coeff_units` and held raw c: its untouched default (-8 to 8) becomes the strength
default that follows the mode, while a range the user had changed stays as it was, in raw c.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QSettings, Qt, Slot
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget

from gui.panels.common import double_spin, int_spin

# The units of the range: settings value -> combo text.
STRENGTH_UNITS, RAW_UNITS = "n", "raw"
UNIT_TEXTS = {STRENGTH_UNITS: "× residual norm (n)", RAW_UNITS: "raw c"}
# Ranges before any edit, per mode, as (first, last, count, units). Front injection replaces a position's
# residual and needs several residual norms to matter; a direction added at every position breaks text at
# about one norm (the CLI's DEFAULT_STRENGTH_TEXT); ablate's c is already a fraction of the direction.
DEFAULT_RANGES = {
    "front": (-16.0, 16.0, 5, STRENGTH_UNITS),
    "direction": (-1.0, 1.0, 5, STRENGTH_UNITS),
    "ablate": (0.0, 1.0, 3, RAW_UNITS),
}
# What settings files from before the units choice hold when nobody edited the range (raw c, -8 to 8).
OLD_RAW_DEFAULT = (-8.0, 8.0, 5)
STRENGTH_TIP = (
    "Normalised strengths: s adds s typical residual norms at each swept layer (the raw c differs by layer; "
    "each cell shows the c it used)"
)
RAW_TIP = "Raw coefficients c: the same multiplier of the vector at every layer"


def default_range(mode: str) -> tuple[float, float, int, str]:
    """(first, last, count, units) of the coefficient range for an effective mode."""
    return DEFAULT_RANGES[mode if mode in ("front", "ablate") else "direction"]


def linspace(first: float, last: float, count: int) -> list[float]:
    if count <= 1:
        return [first]
    step = (last - first) / (count - 1)
    return [round(first + i * step, 6) for i in range(count)]


class CoefficientRange(QWidget):
    """The range's inputs and rules. `mode_of()` gives the sweep's effective mode; `raw_per_strength()` the
    c that one unit of strength is for the chosen vector and mode (None when unknown: no conversion)."""

    def __init__(
        self,
        mode_of: Callable[[], str],
        raw_per_strength: Callable[[], float | None],
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self._mode_of, self._raw_per_strength = mode_of, raw_per_strength
        first, last, count, _ = DEFAULT_RANGES["front"]
        self.coeff_from = double_spin(-1e5, 1e5, "The smallest coefficient", decimals=3, value=first)
        self.coeff_to = double_spin(-1e5, 1e5, "The largest coefficient", decimals=3, value=last)
        self.coeff_count = int_spin(1, 41, "How many evenly spaced coefficients, ends included", value=count)
        self.coeff_units = QComboBox()
        for units, text in UNIT_TEXTS.items():
            self.coeff_units.addItem(text, units)
        self.coeff_units.setItemData(0, STRENGTH_TIP, Qt.ItemDataRole.ToolTipRole)
        self.coeff_units.setItemData(1, RAW_TIP, Qt.ItemDataRole.ToolTipRole)
        self.coeff_units.setToolTip(STRENGTH_TIP)
        self._edited = False  # the user typed a range: it no longer follows the mode
        self._user_units = STRENGTH_UNITS  # the user's units (mode ablate forces raw c while it lasts)
        self._setting = False  # the widget itself is filling the range in
        for spin in (self.coeff_from, self.coeff_to, self.coeff_count):
            spin.valueChanged.connect(self._on_edited)
        self.coeff_units.currentIndexChanged.connect(self._on_units_chosen)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        for widget in (self.coeff_from, QLabel("to"), self.coeff_to, QLabel("×"), self.coeff_count):
            row.addWidget(widget)
        row.addWidget(self.coeff_units)

    def units(self) -> str:
        return str(self.coeff_units.currentData())

    def strengths(self) -> bool:
        return self.units() == STRENGTH_UNITS

    def coeffs(self) -> list[float]:
        return linspace(self.coeff_from.value(), self.coeff_to.value(), self.coeff_count.value())

    def set_units(self, units: str) -> None:
        """Choose the units as the user would (an edited range converts; an untouched one follows the mode)."""
        self.coeff_units.setCurrentIndex(self.coeff_units.findData(units))

    def _set(self, first: float, last: float, count: int, units: str | None = None) -> None:
        self._setting = True
        try:
            if units is not None:
                self.coeff_units.setCurrentIndex(self.coeff_units.findData(units))
                self.coeff_units.setToolTip(STRENGTH_TIP if units == STRENGTH_UNITS else RAW_TIP)
            self.coeff_from.setValue(first)
            self.coeff_to.setValue(last)
            self.coeff_count.setValue(count)
        finally:
            self._setting = False

    @Slot()
    def _on_edited(self) -> None:
        if not self._setting:
            self._edited = True

    @Slot(int)
    def _on_units_chosen(self, _index: int) -> None:
        if self._setting:
            return
        units = self.units()
        self.coeff_units.setToolTip(STRENGTH_TIP if units == STRENGTH_UNITS else RAW_TIP)
        self._user_units = units
        if not self._edited:
            self.follow_mode()
            return
        factor = self._raw_per_strength()  # keep the edited range, in the other units
        if factor is not None:
            scale = factor if units == RAW_UNITS else 1.0 / factor
            first, last = self.coeff_from.value() * scale, self.coeff_to.value() * scale
            self._set(_round(first), _round(last), self.coeff_count.value())

    def follow_mode(self) -> None:
        """The range follows the effective mode until the user edits it; ablate always takes raw c."""
        mode = self._mode_of()
        ablate = mode == "ablate"
        self.coeff_units.model().item(0).setEnabled(not ablate)  # ablate has no strength
        if ablate:
            if not self._edited or self.strengths():
                self._set(*DEFAULT_RANGES["ablate"])
            return
        if self._edited:
            if self.units() != self._user_units:  # back from ablate: the user's units again
                first, last, count = self.coeff_from.value(), self.coeff_to.value(), self.coeff_count.value()
                self._set(first, last, count, self._user_units)
            return
        first, last, count, _ = default_range(mode)
        if self._user_units == RAW_UNITS:
            factor = self._raw_per_strength()
            first, last = (_round(first * factor), _round(last * factor)) if factor else OLD_RAW_DEFAULT[:2]
        self._set(first, last, count, self._user_units)

    # ---- settings -----------------------------------------------------------------------------------------
    def read_settings(self, settings: QSettings) -> None:
        saved = (
            float(settings.value("sweep/coeff_from", OLD_RAW_DEFAULT[0])),
            float(settings.value("sweep/coeff_to", OLD_RAW_DEFAULT[1])),
            int(settings.value("sweep/coeff_count", OLD_RAW_DEFAULT[2])),
        )
        units = settings.value("sweep/coeff_units")
        if units is None:  # from before the units choice: raw c (module doc)
            edited = settings.contains("sweep/coeff_from") and saved != OLD_RAW_DEFAULT
            units = RAW_UNITS if edited else STRENGTH_UNITS
        else:
            edited = _flag(settings.value("sweep/coeff_edited", False))
        self._user_units = units if units in UNIT_TEXTS else STRENGTH_UNITS
        self._edited = edited
        if edited:
            self._set(*saved, self._user_units)
        self.follow_mode()

    def write_settings(self, settings: QSettings) -> None:
        settings.setValue("sweep/coeff_from", self.coeff_from.value())
        settings.setValue("sweep/coeff_to", self.coeff_to.value())
        settings.setValue("sweep/coeff_count", self.coeff_count.value())
        settings.setValue("sweep/coeff_units", self._user_units)
        settings.setValue("sweep/coeff_edited", self._edited)


def _round(value: float) -> float:
    """Three significant digits: a converted range reads 12.3, not 12.34567."""
    return float(f"{value:.3g}")


def _flag(value: object) -> bool:
    """A boolean from the settings file (an ini file gives back "true" / "false")."""
    return value if isinstance(value, bool) else str(value).lower() in ("true", "1")
