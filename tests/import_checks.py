"""What an import left in the database, read back with plain SQL for the import tests: the rows
it writes, counted, with the audit chain's tail; each participant's visits and values; and the
audit entries written since a point."""

from __future__ import annotations

import json
from datetime import date
from typing import NamedTuple

import sqlalchemy as sa

WRITTEN = ("participant", "visit", "phenotype_value")


class Entry(NamedTuple):
    action: str
    before: dict | None
    after: dict | None
    reason: str | None


def written_state(engine, tables: tuple[str, ...] = WRITTEN) -> tuple[dict[str, int], str | None]:
    """The rows an import writes, counted, and the audit chain's tail."""
    with engine.connect() as connection:
        counts = {
            t: connection.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables
        }
        tail = connection.execute(
            sa.text("SELECT hash FROM audit_entry ORDER BY id DESC LIMIT 1")
        ).scalar_one_or_none()
    return counts, tail


def value_text(number: float | None, text: str | None, day: object) -> str:
    """A stored value as the records export writes it."""
    if number is not None:
        return str(int(number)) if number == int(number) else str(number)
    return str(text if text is not None else day)


def last_audit_id(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT max(id) FROM audit_entry")).scalar_one()


def audit_since(engine, last_id: int) -> list[Entry]:
    """The changes recorded after `last_id`, in order (a batch's seal records none)."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT action, before, after, reason FROM audit_entry WHERE id > :id "
                "AND action <> 'audit.seal' ORDER BY id"
            ),
            {"id": last_id},
        ).all()
    return [
        Entry(action, json.loads(b) if b else None, json.loads(a) if a else None, reason)
        for action, b, a, reason in rows
    ]


def observation(label: str, instance: int, day: object) -> str:
    """The place of a repeat instance's value, as the checks write it: its visit, instance
    and the day observed."""
    return f"{label} [{instance}] {day}"


def participants_found(engine) -> list[tuple[dict[str, date], set[tuple[str, str, str]]]]:
    """Each participant's visits (label → date) and visit values (label, or a repeat
    instance's `observation`; variable; value)."""
    with engine.connect() as connection:
        visits = connection.execute(
            sa.text("SELECT participant_id, label, visit_date FROM visit")
        ).all()
        values = connection.execute(
            sa.text(
                "SELECT v.participant_id, vi.label, pv.name, v.value_number, v.value_text, "
                "v.value_date, v.instance, v.observed_on "
                "FROM phenotype_value v JOIN visit vi ON vi.id = v.visit_id "
                "JOIN phenotype_variable pv ON pv.id = v.variable_id"
            )
        ).all()
    found: dict[int, tuple[dict[str, date], set[tuple[str, str, str]]]] = {}
    for participant, label, day in visits:
        found.setdefault(participant, ({}, set()))[0][label] = date.fromisoformat(str(day))
    for participant, label, name, number, text, day, instance, observed in values:
        place = (
            observation(label, instance, date.fromisoformat(str(observed))) if instance else label
        )
        found[participant][1].add((place, name, value_text(number, text, day)))
    return list(found.values())


def expect_people(project, found) -> None:
    """Each record of the `redcap_projects` project is one participant with exactly its
    visits, holding its values."""
    by_visits = {frozenset(v.items()): values for v, values in found}
    assert len(by_visits) == len(found) == len(project.visits)
    for record, visits in project.visits.items():
        values = by_visits.get(frozenset(visits.items()))
        assert values is not None, (record, visits, [v for v, _ in found])
        assert project.values[record] <= values, record
