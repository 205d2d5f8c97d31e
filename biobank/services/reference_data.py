"""The reference data every inventory starts with: the lupus core phenotype dictionary and the
standard consent statements (`biobank/reference/lupus_core.json`).

Installing adds what is missing and never changes an entry already there: a site may have
edited one. It runs whenever a database is opened, so a new release's additions arrive on
their own; each addition is in the audit trail.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlmodel import Session

from biobank.db import flush
from biobank.domain.permissions import SYSTEM
from biobank.models import ConsentStatement, PhenotypeVariable
from biobank.services import audit
from biobank.services.phenotype_variables import VariableRead, check_definition


class StatementData(TypedDict):
    code: str
    text: str


class ReferenceData(TypedDict):
    statements: list[StatementData]
    variables: list[dict[str, Any]]  # each a phenotype variable's definition, as JSON has it


@cache
def lupus_core() -> ReferenceData:
    """The shipped reference data (dictionary and consent statements), read once."""
    core: ReferenceData = json.loads(
        files("biobank").joinpath("reference/lupus_core.json").read_text("utf-8")
    )
    return core


def install_reference_data(session: Session) -> int:
    """Add the missing core statements and variables; return how many were added."""
    core = lupus_core()
    # Core columns, not the ORM's: with nothing to add, a start need not set up the mappers
    have_statements = set(session.scalars(sa.select(ConsentStatement.__table__.c.code)))
    variables = PhenotypeVariable.__table__.c
    have_variables = set()  # a renamed core variable has its core name among its former names
    for name, former in session.execute(sa.select(variables.name, variables.former_names)):
        have_variables |= {name, *(former or ())}
    added: list[ConsentStatement | PhenotypeVariable] = [
        ConsentStatement(**s) for s in core["statements"] if s["code"] not in have_statements
    ]
    added += [
        PhenotypeVariable(**check_definition(VariableRead(**v)).model_dump())
        for v in core["variables"]
        if v["name"] not in have_variables
    ]
    if not added:
        return 0
    session.add_all(added)
    flush(session)
    audit.record_many(
        session,
        actor=SYSTEM,
        entries=[
            {
                "action": f"{row.__tablename__}.add",
                "entity": row.__tablename__,
                "entity_id": row.id,
                "after": audit.snapshot(row),
                "reason": "reference data shipped with biobank",
            }
            for row in added
        ],
    )
    return len(added)
