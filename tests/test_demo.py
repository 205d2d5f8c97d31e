"""The demo cohort: realistic, validated like real data, and the same for the same seed."""

import pytest
import sqlalchemy as sa

from biobank.bootstrap import bootstrap
from biobank.db import make_engine, uow
from biobank.errors import PermissionDenied, ValidationError
from biobank.migrate import upgrade
from biobank.models import Role
from biobank.services import audit, demo, participants
from biobank.services.users import actor_for


def _cohort(engine) -> list[tuple]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT p.code, p.sex, p.birth_year, p.enrolled_on, v.label, v.visit_date "
                "FROM participant p JOIN visit v ON v.participant_id = p.id "
                "ORDER BY p.code, v.visit_date"
            )
        ).all()
    return [tuple(str(value) for value in row) for row in rows]  # same text on both engines


def test_same_seed_same_cohort_on_any_engine(engine, admin, tmp_path):
    with uow(engine) as session:
        summary = demo.seed_demo(session, actor=admin, participants=40, seed=11)
    assert summary.participants == 40 and summary.visits >= 40

    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    upgrade(other)
    bootstrap(other)
    with uow(other) as session:
        other_admin = actor_for(session, username="admin", workstation="x")
        demo.seed_demo(session, actor=other_admin, participants=40, seed=11)
    assert _cohort(engine) == _cohort(other)
    with uow(other) as session:
        assert audit.verify_chain(session, actor=other_admin).entries > 40 * 3
    other.dispose()


def test_a_lupus_like_cohort(engine, admin):
    with uow(engine) as session:
        demo.seed_demo(session, actor=admin, participants=200, seed=7)
        listed = participants.list_participants(session, actor=admin, limit=1000)
    women = sum(p.sex.value == "female" for p in listed)
    assert 0.8 < women / len(listed) < 0.97  # SLE affects about nine women for each man
    with uow(engine) as session:
        shown = participants.show_participant(
            session, actor=admin, code=listed[0].code, with_identity=True
        )
    assert shown.identity.mrn.startswith("MRN") and shown.visits[0].label == "baseline"


def test_only_into_an_empty_database_and_only_by_admins(engine, actors):
    with pytest.raises(PermissionDenied), uow(engine) as session:
        demo.seed_demo(session, actor=actors[Role.technician], participants=3)
    with uow(engine) as session:
        demo.seed_demo(session, actor=actors[Role.admin], participants=3)
    with pytest.raises(ValidationError, match="empty database"), uow(engine) as session:
        demo.seed_demo(session, actor=actors[Role.admin], participants=3)


def test_the_demo_freezer_holds_serum_and_aliquots(engine, admin):
    with uow(engine) as session:
        summary = demo.seed_demo(session, actor=admin, participants=20, seed=5, with_specimens=True)
    with engine.connect() as connection:
        kinds = dict(
            connection.execute(sa.text("SELECT kind, count(*) FROM specimen GROUP BY kind")).all()
        )
        unplaced = connection.execute(
            sa.text("SELECT count(*) FROM specimen WHERE box_id IS NULL")
        ).scalar_one()
    assert summary.specimens == sum(kinds.values()) == 4 * kinds["primary"]
    assert kinds["aliquot"] == 3 * kinds["primary"] and unplaced == 0
    with uow(engine) as session:
        assert audit.verify_chain(session, actor=admin).entries > summary.specimens
