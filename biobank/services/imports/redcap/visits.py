"""Which visit a row of a REDCap records export is, from its event, repeating instrument and
repeat instance.

A classic project (no `redcap_event_name` column) has one visit per record, "enrolment" unless
the mapping's `classic_label` names it; a longitudinal project has one per record and event.
A repeat instance is, as the mapping's `[repeats]` says:

- instance N of a repeating instrument (by default) a dated observation within its event's
  visit: its values are instance N of their variables there, observed on the form's first
  date filled, else on the visit's date;
- instance N of a repeating instrument listed as "visit" the visit "<event label> <form> #N"
  (in a classic project, "<classic label> <form> #N"), dated by the form's first date field
  when it is filled, else by the date of its event's visit; instance 1 is the event's visit
  itself, so making a form repeating later renames no visit;
- instance N of a repeating event the visit "<event label> #N" (instance 1: the event's).

A repeating instrument's row holds only that form's fields: its other cells are blank because
they are not in this row, and never say that a value is gone."""

from __future__ import annotations

from dataclasses import dataclass

from biobank.domain.visits import canonical_visit_label


@dataclass(frozen=True)
class RowVisit:
    """The visit a row's values go to, the visit of its event (`base`: the same, but for a
    repeat instance that is a visit of its own), the form a repeating instrument's row holds,
    and the instance its values are (0: the visit's own, N: a dated observation)."""

    label: str
    base: str
    form: str | None = None
    instance: int = 0


def row_visit(base: str, *, form: str | None, instance: int | None, observed: bool) -> RowVisit:
    """The visit of a row of the event whose visit is `base`; `form`: the row's repeating
    instrument (None: the row is the event's, or a repeating event's instance), whose instances
    are `observed` (dated observations) or visits."""
    if form is not None and observed:
        return RowVisit(base, base, form, instance or 1)
    if instance is None or instance == 1:
        return RowVisit(base, base, form)
    suffix = f"{form} #{instance}" if form else f"#{instance}"
    return RowVisit(canonical_visit_label(f"{base} {suffix}"), base, form)
