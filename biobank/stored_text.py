"""Text the database keeps, checked the same way on both engines before it is written.

Every string column of the models is checked as a unit of work flushes: within the column's
declared length (PostgreSQL enforces it with a driver error, SQLite not at all) and free of
control characters (a bell or an escape sequence from a pasted cell or a misconfigured scanner
would be stored and then reprinted on labels and screens). Tabs and line breaks are kept in
the unbounded free-text columns (notes, reasons, descriptions) and refused everywhere else.
Rows written in bulk through Core (imports) check their text where they read it.
"""

from __future__ import annotations

import unicodedata
from functools import cache

import sqlalchemy as sa
from sqlalchemy.orm import Session

from biobank.errors import ValidationError

FREE_TEXT_BREAKS = "\t\n\r"


@cache
def _string_columns(mapper: sa.orm.Mapper) -> tuple[tuple[str, int | None], ...]:
    """(attribute, length) of each string column of a model (enums excluded)."""
    found = []
    for attribute in mapper.column_attrs:
        column_type = attribute.columns[0].type
        text = column_type if isinstance(column_type, sa.String) else None
        text = text or getattr(column_type, "impl", None)
        if isinstance(text, sa.String) and not isinstance(column_type, sa.Enum):
            found.append((attribute.key, getattr(column_type, "length", None)))
    return tuple(found)


def check_text(field: str, value: str, length: int | None) -> None:
    """Refuse a value longer than `length` or holding a control character (a tab or line
    break only where there is no length: free text)."""
    if length is not None and len(value) > length:
        raise ValidationError(
            f"{field} is {len(value):,} characters long; at most {length:,} are kept",
            field=field,
            value=value[:40] + "…",
        )
    if value.isprintable():
        return  # no control character (the common case, checked at C speed)
    allowed = FREE_TEXT_BREAKS if length is None else ""
    for position, character in enumerate(value, start=1):
        if unicodedata.category(character) == "Cc" and character not in allowed:
            raise ValidationError(
                f"{field} holds a control character (U+{ord(character):04X}) at position "
                f"{position}",
                field=field,
                value=value.encode("unicode_escape").decode("ascii"),
            )


def _check_pending(session: Session, _context: object, _instances: object) -> None:
    for instance in (*session.new, *session.dirty):
        check_row(instance, new=instance in session.new)


def check_row(instance: object, *, new: bool = True) -> None:
    """Check the text of a row about to be written: all of a new one, what changed of a
    stored one. A flush checks each; a service writing a row through Core checks it here."""
    state = sa.inspect(instance)
    changed = state.attrs
    for key, length in _string_columns(state.mapper):
        value = getattr(instance, key)
        if not isinstance(value, str):
            continue
        if not new and not changed[key].history.has_changes():
            continue  # only what this unit of work changes
        check_text(key, value, length)


def guard(session_class: type[Session]) -> None:
    """Check the text of every flush of sessions of this class."""
    sa.event.listen(session_class, "before_flush", _check_pending)
