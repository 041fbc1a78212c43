"""Numbers on the command line: finite floats, comma-separated lists, and amounts that are either a raw
coefficient c ("4") or a normalised strength ("0.5n": that fraction of the typical residual norm at the
vector's layer, engine/strength.py). One rule for `generate --steer V:AMOUNT` and `sweep --coeffs`."""

from __future__ import annotations

import math

from engine.errors import InvalidInputError

STRENGTH_HINT = "a coefficient (e.g. 4) or a normalised strength (e.g. 0.5n)"


def finite_float(text: str) -> float:
    """argparse type for a float flag: a finite number, else one clear error."""
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidInputError(f"{text!r} is not a number") from exc
    if not math.isfinite(value):
        raise InvalidInputError(f"coefficient {text!r} is not a finite number")
    return value


def is_strength_text(text: str) -> bool:
    """Whether an amount is written as a strength: a lowercase n after the number ("nan" is a number)."""
    return text.endswith("n") and text.lstrip("+-") != "nan"


def parse_amount(text: str) -> tuple[float, bool]:
    """(value, is_strength) of one amount: "2.5" -> (2.5, False), "0.5n" -> (0.5, True)."""
    if is_strength_text(text):
        try:
            value = float(text[:-1])
        except ValueError:
            raise InvalidInputError(
                f"{text!r} is neither a coefficient (e.g. 4) nor a normalised strength (e.g. 0.5n)"
            ) from None
        if not math.isfinite(value):
            raise InvalidInputError(f"strength {text!r} is not a finite number")
        return value, True
    try:
        return finite_float(text), False
    except InvalidInputError as exc:
        raise InvalidInputError(f"{exc}; expected {STRENGTH_HINT}") from exc


def number_list(text: str, kind: type, what: str) -> list:
    """The values of a --WHAT list such as "0,4,8" (ints or finite floats); empty parts are skipped."""
    values = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            value = kind(part)
        except ValueError as exc:
            raise InvalidInputError(f"--{what}: {part!r} is not a valid {kind.__name__}") from exc
        if kind is float and not math.isfinite(value):
            raise InvalidInputError(f"--{what}: {part!r} is not a finite number")
        values.append(value)
    if not values:
        raise InvalidInputError(f"--{what} is empty")
    return values


def coefficient_list(text: str) -> tuple[list[float], bool]:
    """(values, strengths) of a --coeffs list: all raw coefficients, or all normalised strengths ("2n");
    0 may be written bare in either."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if not parts:
        raise InvalidInputError("--coeffs is empty")
    amounts = []
    for part in parts:
        try:
            amounts.append(parse_amount(part))
        except InvalidInputError as exc:
            raise InvalidInputError(f"--coeffs: {exc}") from exc
    strengths = any(is_strength for _, is_strength in amounts)
    if strengths and (raw := [p for p, (v, s) in zip(parts, amounts, strict=True) if not s and v != 0.0]):
        raise InvalidInputError(
            f"--coeffs mixes raw coefficients ({raw[0]}) with normalised strengths; write every one with n, or none"
        )
    return [value for value, _ in amounts], strengths
