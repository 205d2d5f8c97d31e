"""Every service against every role. The expected table below is the specification:
technicians accession, move and print; PIs query and export; admins do everything,
including PHI, users and the storage layout."""

from datetime import date

import pytest
import sqlalchemy as sa

from biobank.db import uow
from biobank.errors import PermissionDenied
from biobank.models import Role
from biobank.permissions import MATRIX, Permission
from biobank.services import audit, overview, participants, studies, users

T, P, A = Role.technician, Role.pi, Role.admin
EVERYONE = {T, P, A}

# service call -> roles allowed
EXPECTED = {
    "add_user": ({A}, lambda s, a: users.add_user(s, actor=a, username="newbie", role="pi")),
    "list_users": ({A}, lambda s, a: users.list_users(s, actor=a)),
    "deactivate_user": ({A}, lambda s, a: users.deactivate_user(s, actor=a, username="victim")),
    "set_pin_of_another": (
        {A},
        lambda s, a: users.set_pin(s, actor=a, username="victim", pin="5555"),
    ),
    "add_study": ({A}, lambda s, a: studies.add_study(s, actor=a, code="NEW", title="New")),
    "list_studies": (EVERYONE, lambda s, a: studies.list_studies(s, actor=a)),
    "add_participant": (
        {T, A},
        lambda s, a: participants.add_participant(s, actor=a, study="SLE"),
    ),
    "add_participant_with_phi": (
        {A},
        lambda s, a: participants.add_participant(s, actor=a, study="SLE", mrn="MRN77"),
    ),
    "show_participant": (
        EVERYONE,
        lambda s, a: participants.show_participant(s, actor=a, code="SLE-0001"),
    ),
    "show_participant_identity": (
        {A},
        lambda s, a: participants.show_participant(s, actor=a, code="SLE-0001", with_identity=True),
    ),
    "list_participants": (EVERYONE, lambda s, a: participants.list_participants(s, actor=a)),
    "add_visit": (
        {T, A},
        lambda s, a: participants.add_visit(
            s, actor=a, participant="SLE-0001", label="flare", visit_date=date(2025, 3, 1)
        ),
    ),
    "audit_log": ({A}, lambda s, a: audit.audit_log(s, actor=a)),
    "audit_verify": ({A}, lambda s, a: audit.verify_chain(s, actor=a)),
    "inventory_overview": (EVERYONE, lambda s, a: overview.inventory_overview(s, actor=a)),
}


def _audit_count(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT count(*) FROM audit_entry")).scalar_one()


class _Undo(Exception):
    """Raised after an allowed call so its unit of work rolls back for the next role."""


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_service_against_every_role(engine, actors, service):
    allowed, call = EXPECTED[service]
    with uow(engine) as session:
        studies.add_study(session, actor=actors[A], code="SLE", title="Lupus")
        participants.add_participant(session, actor=actors[A], study="SLE", code="SLE-0001")
        users.add_user(session, actor=actors[A], username="victim", role="pi")
    before = _audit_count(engine)
    for role in (T, P, A):
        if role in allowed:
            with pytest.raises(_Undo), uow(engine) as session:
                call(session, actors[role])
                raise _Undo
        else:
            with pytest.raises(PermissionDenied, match=role.value), uow(engine) as session:
                call(session, actors[role])
        assert _audit_count(engine) == before


def test_matrix_rules_that_matter():
    assert Permission.read_phi not in MATRIX[T]
    assert Permission.export_identified not in MATRIX[T] | MATRIX[P]
    for inventory_change in (Permission.accession, Permission.move, Permission.manage_storage):
        assert inventory_change not in MATRIX[P]
    assert MATRIX[A] == frozenset(Permission)
