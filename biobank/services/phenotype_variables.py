"""The phenotype data dictionary: its variables, named as REDCap names fields.

Admins rename and retire variables rather than delete them: a variable keeps the names it had
(saved queries, recorded exports and re-imports that use one still find it, and none is ever
given to another variable), and a retired one keeps its values but takes no new ones.
"""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, select

from biobank.db import flush
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import PhenotypeScope, PhenotypeType
from biobank.errors import AlreadyExists, InvalidTransition, NotFound, ValidationError
from biobank.models import PhenotypeVariable, utcnow
from biobank.services import audit

VARIABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class VariableRead(BaseModel):
    name: str
    label: str
    value_type: PhenotypeType
    scope: PhenotypeScope
    unit: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    choices: list[dict[str, str]] | None = None
    code_system: str | None = None
    code: str | None = None
    category: str | None = None
    description: str | None = None
    former_names: list[str] | None = None  # set by `rename_variable`, never by a definition
    retired_at: datetime | None = None  # set by `retire_variable`


def variable_read(row: PhenotypeVariable) -> VariableRead:
    """A dictionary entry as returned to callers."""
    return VariableRead.model_validate(row, from_attributes=True)


def get_variable(session: Session, name: str) -> PhenotypeVariable:
    """The variable with this name (any case), or NotFound naming it."""
    row = session.exec(
        select(PhenotypeVariable).where(PhenotypeVariable.name == name.strip().lower())
    ).first()
    if row is None:
        raise NotFound(f"no phenotype variable {name!r}", field="variable", value=name)
    return row


def list_variables(
    session: Session,
    *,
    actor: Actor,
    category: str | None = None,
    include_retired: bool = False,
) -> list[VariableRead]:
    """The data dictionary, optionally one category; retired variables only if asked."""
    require(actor, Permission.view_inventory)
    query = select(PhenotypeVariable).order_by(col(PhenotypeVariable.id))
    if category:
        query = query.where(PhenotypeVariable.category == category.strip().lower())
    if not include_retired:
        query = query.where(col(PhenotypeVariable.retired_at).is_(None))
    return [variable_read(r) for r in session.exec(query)]


def variables_by_name(
    session: Session, *, include_retired: bool = False
) -> dict[str, PhenotypeVariable]:
    """Every variable under its name and under each name it had, so that what names it by an
    old name (a saved query, a recorded export, a re-import) still finds it. Retired ones only
    when asked: the REDCap import must know their names to leave them alone."""
    rows = session.exec(select(PhenotypeVariable).order_by(col(PhenotypeVariable.id))).all()
    rows = [r for r in rows if include_retired or r.retired_at is None]
    found = {r.name: r for r in rows}
    for row in rows:
        found |= {old: row for old in row.former_names or () if old not in found}
    return found


def _check_name(name: str, *, field: str = "name") -> str:
    """A variable name as REDCap writes a field's."""
    if not VARIABLE_NAME.match(name):
        raise ValidationError(
            "a variable name is 1-64 of a-z, 0-9 and '_', starting with a letter",
            field=field,
            value=name,
        )
    return name


def _refuse_taken(session: Session, name: str, *, field: str, renaming: int | None = None) -> None:
    """A name is never reused: not another variable's, nor one another variable had (what
    named that one by it would find this one)."""
    for variable_id, current, former in session.execute(
        sa.select(
            col(PhenotypeVariable.id),
            col(PhenotypeVariable.name),
            col(PhenotypeVariable.former_names),
        )
    ):
        if variable_id == renaming:
            continue
        if name == current:
            raise AlreadyExists(f"phenotype variable {name} exists", field=field, value=name)
        if name in (former or ()):
            raise AlreadyExists(
                f"{name} was the name of phenotype variable {current}", field=field, value=name
            )


def check_definition(definition: VariableRead) -> VariableRead:
    """A dictionary entry that makes sense: a name, choices for a choice, a range in order."""
    name = _check_name(definition.name)
    if not definition.label.strip():
        raise ValidationError(f"{name}: a variable needs a label", field="label", value=name)
    choosing = definition.value_type in (PhenotypeType.choice, PhenotypeType.multi_choice)
    if choosing and not definition.choices:
        raise ValidationError(f"{name}: a choice variable lists its choices", field="choices")
    if not choosing and definition.choices:
        raise ValidationError(f"{name}: only a choice variable has choices", field="choices")
    codes = [c.get("code", "") for c in definition.choices or []]
    if any(not c or "|" in c for c in codes) or len(set(codes)) != len(codes):
        raise ValidationError(
            f"{name}: choice codes are non-empty, distinct and without '|'", field="choices"
        )
    low, high = definition.min_value, definition.max_value
    if low is not None and high is not None and low > high:
        raise ValidationError(
            f"{name}: the minimum {low:g} is above the maximum {high:g}", field="min_value"
        )
    return definition


def add_variable(session: Session, *, actor: Actor, definition: VariableRead) -> VariableRead:
    """Add a variable to the data dictionary under a name no variable has or had."""
    require(actor, Permission.record_phenotypes)
    definition = check_definition(definition)
    _refuse_taken(session, definition.name, field="name")
    row = PhenotypeVariable(**definition.model_dump(exclude={"former_names", "retired_at"}))
    session.add(row)
    flush(session)
    audit.record(
        session,
        actor=actor,
        action="phenotype_variable.add",
        entity="phenotype_variable",
        entity_id=row.id,
        after=audit.snapshot(row),
    )
    return variable_read(row)


def _reason(reason: str | None) -> str:
    if not reason or not reason.strip():
        raise ValidationError("a change to the dictionary names its reason", field="reason")
    return reason.strip()


def rename_variable(
    session: Session, *, actor: Actor, name: str, new_name: str, reason: str
) -> VariableRead:
    """Its values follow (they hold its id); the old name joins its former names, so what
    names it so still finds it, and renaming back takes a former name off that list."""
    require(actor, Permission.record_phenotypes)
    reason = _reason(reason)
    row = get_variable(session, name)
    new_name = _check_name(new_name, field="new_name")
    if new_name == row.name:
        raise ValidationError(
            f"{row.name} is the variable's name already", field="new_name", value=new_name
        )
    _refuse_taken(session, new_name, field="new_name", renaming=row.id)
    with audit.audited(session, row, actor=actor, action="phenotype_variable.rename",
                       entity="phenotype_variable", reason=reason):  # fmt: skip
        row.former_names = [n for n in row.former_names or () if n != new_name] + [row.name]
        row.name = new_name
    return variable_read(row)


def retire_variable(session: Session, *, actor: Actor, name: str, reason: str) -> VariableRead:
    """Kept with its values, but no longer recorded, queried or exported."""
    require(actor, Permission.record_phenotypes)
    reason = _reason(reason)
    row = get_variable(session, name)
    if row.retired_at is not None:
        raise InvalidTransition(
            f"phenotype variable {row.name} is retired already", field="variable", value=row.name
        )
    with audit.audited(session, row, actor=actor, action="phenotype_variable.retire",
                       entity="phenotype_variable", reason=reason):  # fmt: skip
        row.retired_at = utcnow()
    return variable_read(row)


def restore_variable(session: Session, *, actor: Actor, name: str, reason: str) -> VariableRead:
    """A retired variable in use again, with the values it kept."""
    require(actor, Permission.record_phenotypes)
    reason = _reason(reason)
    row = get_variable(session, name)
    if row.retired_at is None:
        raise InvalidTransition(
            f"phenotype variable {row.name} is not retired", field="variable", value=row.name
        )
    with audit.audited(session, row, actor=actor, action="phenotype_variable.restore",
                       entity="phenotype_variable", reason=reason):  # fmt: skip
        row.retired_at = None
    return variable_read(row)


def refuse_retired(variable: PhenotypeVariable) -> None:
    """A retired variable takes no new values (nor missing-data codes)."""
    if variable.retired_at is not None:
        raise ValidationError(
            f"{variable.name} is a retired variable: it takes no new values",
            field="variable",
            value=variable.name,
        )
