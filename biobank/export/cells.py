"""Spreadsheet-safe cells: a text that a spreadsheet would read as a formula is written with a
leading apostrophe (OWASP's rule against CSV injection), so that opening an export never runs
one. Every CSV writer passes its rows through `safe_rows`, and a header too unless it is made of
column names (snake_case, so safe); the XLSX writer (`export.spreadsheetml`) each text cell
through `safe_text`.

Only text is looked at: numbers, booleans and dates are written as they are. A text that is a
plain number literal ("-5", "+3.2", "-1e-3") is left alone too: a spreadsheet reads it as that
number and runs nothing, and an apostrophe would show before every negative value of a text
column.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def safe_text(text: str) -> str:
    """`text`, with an apostrophe before it if it starts like a formula and is not a number."""
    if text.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def safe_rows(rows: Iterable[Sequence[Any]]) -> Iterator[list[Any]]:
    """Each row as a list whose text cells went through `safe_text`."""
    for row in rows:
        yield [safe_text(value) if isinstance(value, str) else value for value in row]
