"""Phenotype values checked against their dictionary entry, stored and shown the same way
wherever they come from (the CLI, a REDCap import, the demo).

A value is stored in one of three columns: numbers and booleans (1/0) in `number`, choice codes
and text in `text` (several choices joined by `|`), dates in `day`.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from biobank.domain.vocabulary import PhenotypeType
from biobank.errors import ValidationError

TEXT_LIMIT = 2000
TRUE_WORDS = frozenset({"1", "y", "yes", "true", "t", "checked"})
FALSE_WORDS = frozenset({"0", "n", "no", "false", "f", "unchecked"})
YES_NO_WORDS = TRUE_WORDS | FALSE_WORDS  # built once: a boolean is read per cell


@dataclass(frozen=True)
class Spec:
    """What a value is checked against: the parts of a dictionary entry that matter here."""

    name: str
    value_type: PhenotypeType
    min_value: float | None = None
    max_value: float | None = None
    choices: tuple[tuple[str, str], ...] = ()
    unit: str | None = None

    @classmethod
    def of(cls, variable: Any) -> Spec:
        return cls(
            name=variable.name,
            value_type=PhenotypeType(variable.value_type),
            min_value=variable.min_value,
            max_value=variable.max_value,
            choices=tuple((c["code"], c["label"]) for c in variable.choices or ()),
            unit=variable.unit,
        )

    def choice_code(self, given: str) -> str | None:
        """The code a choice is stored under, given its code or its label (any case)."""
        wanted = given.strip().casefold()
        for code, label in self.choices:
            if wanted in (code.casefold(), label.casefold()):
                return code
        return None


@dataclass(frozen=True)
class Stored:
    number: float | None = None
    text: str | None = None
    day: date | None = None


def _fail(spec: Spec, value: object, reason: str, row: int | None) -> ValidationError:
    return ValidationError(f"{spec.name}: {reason}", field=spec.name, value=value, row=row)


def _number(spec: Spec, raw: object, row: int | None, *, whole: bool) -> float:
    if isinstance(raw, bool):
        raise _fail(spec, raw, "expected a number", row)
    try:
        number = float(str(raw).strip()) if not isinstance(raw, int | float) else float(raw)
    except ValueError:
        raise _fail(spec, raw, f"{raw!r} is not a number", row) from None
    if not math.isfinite(number):
        raise _fail(spec, raw, f"{raw!r} is not a finite number", row)
    if whole and not number.is_integer():
        raise _fail(spec, raw, f"{raw!r} is not a whole number", row)
    if spec.min_value is not None and number < spec.min_value:
        raise _fail(spec, raw, f"{raw} is below the minimum {spec.min_value:g}", row)
    if spec.max_value is not None and number > spec.max_value:
        raise _fail(spec, raw, f"{raw} is above the maximum {spec.max_value:g}", row)
    return number


def _choice(spec: Spec, raw: str, row: int | None) -> str:
    code = spec.choice_code(raw)
    if code is None:
        allowed = ", ".join(f"{c} ({label})" if c != label else c for c, label in spec.choices)
        raise _fail(spec, raw, f"{raw!r} is not one of the choices: {allowed}", row)
    return code


def _text(spec: Spec, raw: str, row: int | None) -> str:
    text = unicodedata.normalize("NFC", raw.strip())
    if len(text) > TEXT_LIMIT:
        raise _fail(spec, raw[:40] + "…", f"text is longer than {TEXT_LIMIT} characters", row)
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n" for ch in text):
        raise _fail(spec, raw, "text holds control characters", row)
    return text


def parse_value(spec: Spec, raw: object, *, row: int | None = None) -> Stored:
    """Check `raw` (text from a file or a prompt, or a Python value) and say how it is stored.
    Every error names the variable (as the field), the value and, from a file, the row."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise _fail(spec, raw, "a value is required", row)
    kind = spec.value_type
    if kind is PhenotypeType.integer:
        return Stored(number=_number(spec, raw, row, whole=True))
    if kind is PhenotypeType.decimal:
        return Stored(number=_number(spec, raw, row, whole=False))
    if kind is PhenotypeType.boolean:
        if isinstance(raw, bool):
            return Stored(number=float(raw))
        word = str(raw).strip().casefold()
        if word in YES_NO_WORDS:
            return Stored(number=1.0 if word in TRUE_WORDS else 0.0)
        raise _fail(spec, raw, f"{raw!r} is not yes/no (1/0)", row)
    if kind is PhenotypeType.date:
        if isinstance(raw, date):
            return Stored(day=raw)
        try:
            day = date.fromisoformat(str(raw).strip())
        except ValueError:
            raise _fail(spec, raw, f"{raw!r} is not a date (YYYY-MM-DD)", row) from None
        if day > date.today():
            raise _fail(spec, raw, f"{day} is in the future", row)
        return Stored(day=day)
    if kind is PhenotypeType.choice:
        return Stored(text=_choice(spec, str(raw), row))
    if kind is PhenotypeType.multi_choice:
        parts = raw if isinstance(raw, list | tuple) else str(raw).replace(",", "|").split("|")
        codes = sorted({_choice(spec, str(p), row) for p in parts if str(p).strip()})
        if not codes:
            raise _fail(spec, raw, "a value is required", row)
        return Stored(text="|".join(codes))
    return Stored(text=_text(spec, str(raw), row))


def typed(spec: Spec, stored: Stored) -> Any:
    """The stored value as Python: int, float, bool, str, list of codes or date."""
    return READERS[spec.value_type](stored.number, stored.text, stored.day)


Reader = Callable[[float | None, str | None, date | None], Any]
READERS: dict[PhenotypeType, Reader] = {
    # a value of each type from its three stored columns (number, text, day); read per value,
    # so bulk readers look the function up once per variable
    PhenotypeType.integer: lambda number, _text, _day: None if number is None else int(number),
    PhenotypeType.decimal: lambda number, _text, _day: number,
    PhenotypeType.boolean: lambda number, _text, _day: None if number is None else bool(number),
    PhenotypeType.date: lambda _number, _text, day: day,
    PhenotypeType.multi_choice: lambda _number, text, _day: text.split("|") if text else [],
    PhenotypeType.choice: lambda _number, text, _day: text,
    PhenotypeType.text: lambda _number, text, _day: text,
}


def display(spec: Spec, stored: Stored) -> str:
    """How a person reads it: choice labels, yes/no, numbers with their unit."""
    value = typed(spec, stored)
    if value is None:
        return ""
    labels = dict(spec.choices)
    if spec.value_type is PhenotypeType.choice:
        code: str = value
        return labels.get(code, code)
    if spec.value_type is PhenotypeType.multi_choice:
        return ", ".join(labels.get(code, code) for code in value)
    if spec.value_type is PhenotypeType.boolean:
        return "yes" if value else "no"
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{value} {spec.unit}" if spec.unit else str(value)
