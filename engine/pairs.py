"""Contrastive prompt pairs from JSONL (`{"positive": ..., "negative": ...}` per line) or CSV files.

Pair files come from users and strangers alike, so reading is bounded and every defect is reported with
its line number as an `InvalidInputError`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InvalidInputError

MAX_PAIR_FILE_BYTES = 32 * 1024**2
MAX_PAIRS = 100_000
MAX_PROMPT_CHARS = 20_000


@dataclass(frozen=True)
class PromptPair:
    positive: str
    negative: str


def _check(positive: object, negative: object, where: str) -> PromptPair:
    if not isinstance(positive, str) or not isinstance(negative, str):
        raise InvalidInputError(f"{where}: 'positive' and 'negative' must both be strings")
    if len(positive) > MAX_PROMPT_CHARS or len(negative) > MAX_PROMPT_CHARS:
        raise InvalidInputError(f"{where}: a prompt longer than {MAX_PROMPT_CHARS} characters")
    if not positive and not negative:
        raise InvalidInputError(f"{where}: both prompts are empty")
    check_pair(PromptPair(positive, negative), where)
    return PromptPair(positive, negative)


def check_pair(pair: PromptPair, where: str) -> None:
    """Refuse a half-filled pair: one side empty would be captured as a difference from the bare BOS, a
    vector many times the norm of a real one, with nothing saying so. `where` names the row."""
    for side, text in (("positive (p+)", pair.positive), ("negative (p-)", pair.negative)):
        if not text:
            raise InvalidInputError(
                f"{where}: the {side} prompt is empty; fill in both sides of the pair or remove it"
            )


def parse_jsonl(text: str, name: str = "pairs") -> list[PromptPair]:
    pairs = []
    # Lines end at "\n" only: str.splitlines() would also split at U+2028, NEL and other characters that
    # json.dumps(ensure_ascii=False) leaves raw inside strings. A "\r" before the "\n" is JSON whitespace.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{name} line {number}: not valid JSON ({exc.msg})") from exc
        except RecursionError as exc:  # "[[[[..." nested deeper than the parser's recursion limit
            raise InvalidInputError(f"{name} line {number}: JSON nested too deeply") from exc
        if not isinstance(record, dict) or "positive" not in record or "negative" not in record:
            raise InvalidInputError(
                f"{name} line {number}: expected an object with 'positive' and 'negative'"
            )
        pairs.append(_check(record["positive"], record["negative"], f"{name} line {number}"))
        if len(pairs) > MAX_PAIRS:
            raise InvalidInputError(f"{name}: more than {MAX_PAIRS} pairs")
    return pairs


def parse_csv(text: str, name: str = "pairs") -> list[PromptPair]:
    """CSV with a header naming `positive` and `negative` columns, or two unnamed columns."""
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise InvalidInputError(f"{name}: not valid CSV ({exc})") from exc
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    if "positive" in header and "negative" in header:
        pi, ni, body, first = header.index("positive"), header.index("negative"), rows[1:], 2
    else:
        pi, ni, body, first = 0, 1, rows, 1
    if len(body) > MAX_PAIRS:
        raise InvalidInputError(f"{name}: more than {MAX_PAIRS} pairs")
    pairs = []
    for number, row in enumerate(body, start=first):
        if len(row) <= max(pi, ni):
            raise InvalidInputError(f"{name} line {number}: expected a positive and a negative column")
        pairs.append(_check(row[pi], row[ni], f"{name} line {number}"))
    return pairs


def read_pairs(path: Path) -> list[PromptPair]:
    """Read a `.jsonl`/`.json` or `.csv` pair file."""
    path = Path(path)
    try:
        if path.exists() and not path.is_file():  # a FIFO would block the read forever
            raise InvalidInputError(f"{path.name}: not a file")
        if path.stat().st_size > MAX_PAIR_FILE_BYTES:
            raise InvalidInputError(f"{path.name}: larger than {MAX_PAIR_FILE_BYTES // 2**20} MB")
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InvalidInputError(f"cannot read pair file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path.name}: not UTF-8 text") from exc
    pairs = parse_csv(text, path.name) if path.suffix.lower() == ".csv" else parse_jsonl(text, path.name)
    if not pairs:
        raise InvalidInputError(f"{path.name}: holds no pairs")
    return pairs
