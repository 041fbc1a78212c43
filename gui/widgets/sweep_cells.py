"""A sweep's cells as the Sweep tab shows them: each with its 95% interval, a table to pick one, and the
one cell (if any) that is *clearly* best.

Intervals: the engine's own (`SweepCell.ci_low` / `ci_high`, from the sweep-suggest work) when a cell
carries them; until then a share metric's Wilson interval is computed here from the cell's value and
sample count with `engine.experiments.stats.wilson` (the same function), so switching is deleting the
fallback. Means without their per-prompt values (target-prob, perplexity) show no interval.

"Clearly best": ranked by the pessimistic end of the interval (so 1 hit in 6 samples, 0.17 with Wilson
0.03-0.56, never beats a steady 10 of 24 on luck), and called best only when that end beats the
unsteered cell's optimistic end (c = 0 at the same layer, else any c = 0; for a share without one, what
0 hits would allow). Otherwise the panel says that no cell is clearly better than no steering.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from engine.experiments import stats
from engine.experiments.plots import METRIC_LABELS
from engine.experiments.sweep import OWN_LAYERS, SweepCell, SweepResult, layer_label

SHARE_METRICS = ("target-words", "sentiment")  # a cell's value is hits / samples
NONNEGATIVE_METRICS = (*SHARE_METRICS, "target-prob")  # their axes start at 0


def cell_interval(result: SweepResult, cell: SweepCell) -> tuple[float, float]:
    """The cell's 95% interval of its value; (nan, nan) when unknown."""
    low, high = getattr(cell, "ci_low", math.nan), getattr(cell, "ci_high", math.nan)
    if math.isfinite(low) and math.isfinite(high):
        return low, high
    if result.spec.metric in SHARE_METRICS and cell.samples and math.isfinite(cell.value):
        n = len(cell.samples)
        return stats.wilson(round(cell.value * n), n)
    return math.nan, math.nan


def pessimistic(result: SweepResult, cell: SweepCell) -> float:
    """The interval's worse end (lower for higher-is-better metrics), else the value itself."""
    low, high = cell_interval(result, cell)
    edge = low if result.higher_is_better else high
    return edge if math.isfinite(edge) else cell.value


def optimistic(result: SweepResult, cell: SweepCell) -> float:
    low, high = cell_interval(result, cell)
    edge = high if result.higher_is_better else low
    return edge if math.isfinite(edge) else cell.value


def ranked_best(result: SweepResult) -> SweepCell | None:
    """The top usable cell by the interval's worse end, then value; ties go to the smaller |c|."""
    candidates = [c for c in result.cells if not c.degenerate and math.isfinite(c.value)]
    if not candidates:
        return None
    sign = 1.0 if result.higher_is_better else -1.0
    return max(candidates, key=lambda c: (sign * pessimistic(result, c), sign * c.value, -abs(c.coeff)))


def unsteered_cell(result: SweepResult, layer: int) -> SweepCell | None:
    zeros = [c for c in result.cells if c.coeff == 0 and math.isfinite(c.value)]
    return next((c for c in zeros if c.layer == layer), zeros[0] if zeros else None)


@dataclass
class Verdict:
    best: SweepCell | None  # clearly best, or None
    top: SweepCell | None  # the top-ranked cell, clear or not
    reason: str = ""  # why `top` is not called best


def judge(result: SweepResult) -> Verdict:
    top = ranked_best(result)
    if top is None:
        return Verdict(None, None)
    low, high = cell_interval(result, top)
    if not (math.isfinite(low) and math.isfinite(high)):
        return Verdict(top, top)  # no interval to judge by: the plain best, as before
    sign = 1.0 if result.higher_is_better else -1.0
    reference = unsteered_cell(result, top.layer)
    if reference is top or (reference is not None and top.coeff == 0):
        return Verdict(None, top, "the top cell is the unsteered one (c = 0)")
    if reference is not None:
        bar, against = optimistic(result, reference), f"the unsteered cell's ({reference.value:.2g})"
    elif result.spec.metric in SHARE_METRICS and top.samples:
        bar, against = stats.wilson(0, len(top.samples))[1], "what 0 hits would allow"
    else:
        return Verdict(top, top)
    if sign * pessimistic(result, top) > sign * bar:
        return Verdict(top, top)
    return Verdict(None, top, f"its 95% interval overlaps {against}")


def describe(result: SweepResult, cell: SweepCell) -> str:
    """ "0.17 (1 of 6; 95% CI 0.03–0.56)" for shares, "0.25 (95% CI …, 3 prompts)" for means."""
    low, high = cell_interval(result, cell)
    n = len(cell.samples)
    ci = f"95% CI {low:.2g}–{high:.2g}" if math.isfinite(low) and math.isfinite(high) else "no interval"
    if result.spec.metric in SHARE_METRICS and n:
        return f"{cell.value:.2g} ({round(cell.value * n)} of {n}; {ci})"
    return f"{cell.value:.3g} ({ci}, {n} value{'s' if n != 1 else ''})"


class SweepCellTable(QTableWidget):
    """One row per finished cell; selecting a row (or `select`) emits `cell_chosen(SweepCell)`."""

    cell_chosen = Signal(object)  # SweepCell or None
    HEADERS = ("Layer", "c", "Value", "95% CI", "n", "")

    def __init__(self, parent=None):
        super().__init__(0, len(self.HEADERS), parent)
        self.setHorizontalHeaderLabels(self.HEADERS)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setToolTip("Every finished (layer, c) cell; click one to read its samples")
        self._cells: list[SweepCell] = []
        self.itemSelectionChanged.connect(self._on_selection)

    def show_result(self, result: SweepResult | None, verdict: Verdict | None) -> None:
        chosen = self.chosen()
        key = (chosen.layer, chosen.coeff) if chosen is not None else None
        self.blockSignals(True)
        strengths = result is not None and result.spec.strengths
        self.setHorizontalHeaderItem(1, QTableWidgetItem("s" if strengths else "c"))
        self._cells = list(result.cells) if result is not None else []
        self.setRowCount(len(self._cells))
        for row, cell in enumerate(self._cells):
            low, high = cell_interval(result, cell) if result is not None else (math.nan, math.nan)
            note = "✕ degenerate" if cell.degenerate else ""
            if verdict is not None and cell is verdict.best:
                note = "★ best"
            elif verdict is not None and cell is verdict.top:
                note = "top (not clearly better)"
            texts = [
                "own" if cell.layer == OWN_LAYERS else str(cell.layer),
                result.spec.coeff_text(cell.coeff) if result is not None else f"{cell.coeff:g}",
                f"{cell.value:.3g}",
                f"{low:.2g}–{high:.2g}" if math.isfinite(low) and math.isfinite(high) else "–",
                str(len(cell.samples)),
                note,
            ]
            for column, text in enumerate(texts):
                item = QTableWidgetItem(text)
                setting = result.spec.setting_text(cell) if result is not None else f"c = {cell.coeff:g}"
                item.setToolTip(f"{layer_label(cell.layer)}, {setting}")
                if column in (1, 2, 3, 4):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.setItem(row, column, item)
        self.blockSignals(False)
        if key is not None:
            self.select(*key)

    def cells(self) -> list[SweepCell]:
        return list(self._cells)

    def chosen(self) -> SweepCell | None:
        rows = {index.row() for index in self.selectedIndexes()}
        return self._cells[min(rows)] if rows and min(rows) < len(self._cells) else None

    def select(self, layer: int, coeff: float) -> bool:
        for row, cell in enumerate(self._cells):
            if cell.layer == layer and float(cell.coeff) == float(coeff):
                self.selectRow(row)
                if (item := self.item(row, 0)) is not None:
                    self.scrollToItem(item)
                return True
        return False

    @Slot()
    def _on_selection(self) -> None:
        self.cell_chosen.emit(self.chosen())


def suggest_region(result) -> str:
    """A one-paragraph answer to "which layer, how strong?" from a finished (or partial) sweep; a cell is
    called best only when its 95% interval says so (`gui.widgets.sweep_cells.judge`)."""
    verdict = judge(result)
    best = verdict.best
    degenerate = [c for c in result.cells if c.degenerate]
    if verdict.top is None:
        return "No usable cell yet: every finished cell is degenerate or missing." if result.cells else ""
    label = METRIC_LABELS.get(result.spec.metric, "")
    if best is None:
        top = verdict.top
        text = (
            f"No cell is clearly better than no steering: the top one, {layer_label(top.layer)}, "
            f"{result.spec.setting_text(top)}, has {label} {describe(result, top)}, and {verdict.reason}. "
            "Take more samples or prompts."
        )
    else:
        higher = result.higher_is_better
        values = [c.value for c in result.cells if not c.degenerate and math.isfinite(c.value)]
        spread = (max(values) - min(values)) or 1.0
        near = [
            c
            for c in result.cells
            if c.layer == best.layer
            and not c.degenerate
            and math.isfinite(c.value)
            and (best.value - c.value if higher else c.value - best.value) <= 0.1 * spread
        ]
        coeffs = sorted(c.coeff for c in near)
        text_of, name = result.spec.coeff_text, "s" if result.spec.strengths else "c"
        region = (
            f"{name} = {text_of(coeffs[0])}"
            if len(coeffs) == 1
            else f"{name} from {text_of(coeffs[0])} to {text_of(coeffs[-1])}"
        )
        effect = getattr(best, "effect", float("nan"))  # mean per-token KL on the same context
        text = (
            f"Best: {layer_label(best.layer)}, {result.spec.setting_text(best)} ({label} {describe(result, best)}"
            + (f"; effect {effect:.3g} nats per token" if math.isfinite(effect) else "")
            + f"). Within 10% of it: {layer_label(best.layer)}, {region}."
        )
    if degenerate:
        worst = sorted({abs(c.coeff) for c in degenerate})
        name = "s" if result.spec.strengths else "c"
        text += (
            f" {len(degenerate)} degenerate cell(s) (✕, hatched) from |{name}| = "
            f"{result.spec.coeff_text(worst[0])}: stay below."
        )
    if result.cancelled:
        text += " (partial: the sweep was stopped)"
    return text


class _Shown(SweepResult):
    """A result as the panel draws it: the engine's plots star `best()`, and here that is the clearly
    best cell by its interval (or none), the same cell the text and the table name."""

    _verdict_best: SweepCell | None = None

    def best(self) -> SweepCell | None:
        return self._verdict_best


def shown(result: SweepResult, best: SweepCell | None) -> SweepResult:
    copy = _Shown(**{f.name: getattr(result, f.name) for f in dataclasses.fields(result)})
    copy._verdict_best = best
    return copy
