"""Grid positions: labels like `A1` (letters for rows, numbers for columns) or `1..N` (counted
row by row), and the order auto-allocation fills a grid in. Rows and columns are 1-based."""

from __future__ import annotations

import re
from collections.abc import Iterator

from biobank.domain.vocabulary import FillOrder, PositionLabels
from biobank.errors import ValidationError

_LETTER_NUMBER = re.compile(r"^([A-Z]{1,2})0*([0-9]+)$")


def _row_letters(row: int) -> str:
    letters = ""
    while row:
        row, rest = divmod(row - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _row_number(letters: str) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + (ord(letter) - ord("A") + 1)
    return number


def position_label(row: int, col: int, *, cols: int, scheme: PositionLabels) -> str:
    if scheme == PositionLabels.numeric:
        return str((row - 1) * cols + col)
    return f"{_row_letters(row)}{col}"


def parse_position(
    label: str, *, rows: int, cols: int, scheme: PositionLabels, field: str = "position"
) -> tuple[int, int]:
    """`A1`, `A01`, `a1` or (for numeric boxes) `17` → (row, col), checked against the grid.
    Letter labels are accepted on numeric boxes too: scanner files always use them."""
    text = label.strip().upper()
    if text.isascii() and text.isdigit() and scheme == PositionLabels.numeric:
        index = int(text)
        if not 1 <= index <= rows * cols:
            raise ValidationError(
                f"position {label} is outside the {rows}x{cols} grid (1-{rows * cols})",
                field=field,
                value=label,
            )
        return (index - 1) // cols + 1, (index - 1) % cols + 1
    match = _LETTER_NUMBER.match(text)
    if not match:
        example = "17" if scheme == PositionLabels.numeric else "A1"
        raise ValidationError(
            f"{label!r} is not a position (like {example})", field=field, value=label
        )
    row, col = _row_number(match.group(1)), int(match.group(2))
    if not (1 <= row <= rows and 1 <= col <= cols):
        last = position_label(rows, cols, cols=cols, scheme=PositionLabels.letter_number)
        raise ValidationError(
            f"position {label} is outside the {rows}x{cols} grid (A1-{last})",
            field=field,
            value=label,
        )
    return row, col


def fill_sequence(rows: int, cols: int, order: FillOrder) -> Iterator[tuple[int, int]]:
    if order == FillOrder.column_major:
        return ((r, c) for c in range(1, cols + 1) for r in range(1, rows + 1))
    return ((r, c) for r in range(1, rows + 1) for c in range(1, cols + 1))


def parse_grid(text: str, *, field: str = "grid") -> tuple[int, int]:
    """`9x9`, `10x10`, `8x12` → (rows, cols)."""
    match = re.fullmatch(r"\s*([0-9]{1,3})\s*[xX×]\s*([0-9]{1,3})\s*", text)
    if not match or not all(1 <= int(n) <= 702 for n in match.groups()):
        raise ValidationError(f"{text!r} is not a grid like 9x9 or 8x12", field=field, value=text)
    return int(match.group(1)), int(match.group(2))
