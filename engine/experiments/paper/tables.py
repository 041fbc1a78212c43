"""How the experiments write their results: Markdown tables, CSV files, numbers with their intervals."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from engine.experiments import stats


def ci_text(share: float, n: int) -> str:
    """A share with its 95% Wilson interval, e.g. '0.80 [0.49, 0.94]'."""
    if not n or not math.isfinite(share):
        return fmt(share)
    low, high = stats.wilson(round(share * n), n)
    return f"{share:.2f} [{low:.2f}, {high:.2f}]"


def fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
