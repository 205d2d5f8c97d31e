"""Dates as people type them (YYYY-MM-DD), read the same way by the CLI and the TUI."""

from __future__ import annotations

from datetime import date

from biobank.errors import ValidationError


def parse_day(text: str, field: str) -> date:
    """`text` as a date; a ValidationError names `field` when it is not YYYY-MM-DD."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            f"{field} must be a date as YYYY-MM-DD", field=field, value=text
        ) from None
