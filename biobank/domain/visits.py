"""Visit labels: the one spelling of a visit's name that every front end and import agrees on.

A legacy sheet writes `month_6`, REDCap `month_6_arm_1`, a technician `Month 6`: all name the
visit "month 6" (the canonical label, kept as the visit's label and shown as it is). Labels
stored before this rule may differ from their canonical form; a name finds the visit labelled
exactly as written or exactly in canonical form, else the one visit of the same canonical form.
Two stored visits that are one (`month_6` and `month-6`) are never chosen between silently: the
error names both, and an admin merges them (`biobank visit merge`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import TypeVar

from biobank.errors import ValidationError

Value = TypeVar("Value")

_SEPARATORS = re.compile(r"[\s_-]+")
_ARMS = re.compile(r"( arm \d+)+$")  # REDCap's unique event names end in `_arm_N`


def canonical_visit_label(text: str) -> str:
    """Case-folded, `_`, `-` and runs of spaces made one space, trimmed, without REDCap's arm."""
    return _ARMS.sub("", _SEPARATORS.sub(" ", text.casefold()).strip())


def visit_named(labels: Collection[str], text: str, *, owner: str) -> str | None:
    """Which of `owner`'s visit `labels` `text` names (see the module), or None."""
    canonical = canonical_visit_label(text)
    for exact in (text.strip(), canonical):
        if exact in labels:
            return exact
    same = sorted(label for label in labels if canonical_visit_label(label) == canonical)
    if len(same) > 1:
        raise ValidationError(
            f"participant {owner} has visits {' and '.join(map(repr, same))}, all {canonical!r}: "
            "name one exactly, or have an admin merge them",
            field="visit",
            value=text,
        )
    return same[0] if same else None


def by_canonical_label(
    visits: Mapping[str, Value], *, owner: str
) -> dict[str, Value | ValidationError]:
    """`owner`'s visits (label → value) by canonical label, as an import matches its rows:
    a canonical label two stored labels share, neither written so, maps to the error."""
    found: dict[str, Value | ValidationError] = {}
    for canonical in {canonical_visit_label(label) for label in visits}:
        try:
            named = visit_named(visits, canonical, owner=owner)
            assert named is not None  # one of the labels has this canonical form
            found[canonical] = visits[named]
        except ValidationError as clash:
            found[canonical] = clash
    return found
