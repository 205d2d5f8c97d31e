"""Accession, SPREC codes, IDs that are never reused, and lineage."""

import asyncio
import json
from datetime import timedelta, timezone

import pytest
import sqlalchemy as sa
from inventory import NOW, accession_tube, seed_inventory, serum
from textual.widgets import Static
from tui_helpers import make_app, scan, sign_in
from typer.testing import CliRunner

from biobank.cli import app as cli_app
from biobank.db import uow
from biobank.domain.identifiers import check_specimen_id
from biobank.domain.vocabulary import Role
from biobank.errors import NotFound, PermissionDenied, ValidationError
from biobank.models import StorageUnit
from biobank.services import custody, lineage, participants, specimen_read, specimens, storage
from biobank.services.identity import actor_for
from biobank.services.specimen_read import find_specimen
from tui.screens.specimen import SpecimenScreen


def _count(engine, table: str) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_accession_computes_sprec_and_places(engine, admin):
    layout = seed_inventory(engine, admin)
    with uow(engine) as session:
        tube = specimens.accession(
            session,
            actor=admin,
            participant="sle-0001",
            visit="Baseline",
            specimen_type="ser",
            container_type="sst",
            quantity=2000,
            unit="uL",
            collected_at=NOW - timedelta(hours=5),
            processed_at=NOW - timedelta(hours=2),
            frozen_at=NOW - timedelta(hours=1, minutes=30),
            precentrifugation_temperature="RT",
            postcentrifugation_temperature="2-10C",
            centrifugation="B",
            storage="D",
            destination=layout["boxes"][0],
        )
    assert check_specimen_id(tube.accession_id) == "valid"
    assert tube.accession_id.startswith("SLE-")
    # RT 3 h before centrifugation = C; 30 min at 2-10 °C after = A
    assert tube.sprec_code == "SER-SST-C-B-X-A-D"
    assert (tube.participant_code, tube.visit_label, tube.position) == (
        "SLE-0001",
        "baseline",
        "A1",
    )
    assert (tube.quantity, tube.unit, tube.status, tube.kind) == (
        2000,
        "uL",
        "available",
        "primary",
    )


def test_a_whole_sprec_code_is_checked(engine, admin):
    seed_inventory(engine, admin)
    with uow(engine) as session:
        tube = serum(session, admin, sprec_code="ser-sst-a-b-n-a-d")
    assert tube.sprec_code == "SER-SST-A-B-N-A-D"
    with pytest.raises(ValidationError, match="pre-centrifugation") as caught:
        with uow(engine) as session:
            serum(session, admin, sprec_code="SER-SST-Q-B-N-A-D")
    assert caught.value.field == "sprec_code"
    with pytest.raises(ValidationError, match="for type PL1"), uow(engine) as session:
        serum(session, admin, sprec_code="PL1-SST-A-B-N-A-D")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"specimen_type": "XYZ"}, "specimen_type"),
        ({"container_type": "CUP"}, "container_type"),
        ({"quantity": -5}, "quantity"),
        ({"quantity": float("nan")}, "quantity"),
        ({"quantity": 0}, "quantity"),
        ({"unit": "gallons"}, "unit"),
        ({"visit": "month 99"}, "visit"),
        ({"participant": "SLE-9999"}, "participant"),
        ({"collected_at": NOW + timedelta(days=1)}, "collected_at"),
        ({"processed_at": NOW - timedelta(days=2)}, "processed_at"),
        ({"precentrifugation_temperature": "warm"}, "precentrifugation_temperature"),
        ({"destination": "NOPE"}, "destination"),
        ({"position": "A1"}, "position"),
    ],
)
def test_bad_accession_values_change_nothing(engine, admin, changes, field):
    seed_inventory(engine, admin)
    kwargs = {
        "participant": "SLE-0001",
        "visit": "baseline",
        "specimen_type": "SER",
        "container_type": "SST",
        "quantity": 500,
        "unit": "uL",
        "collected_at": NOW - timedelta(hours=3),
        "processed_at": NOW - timedelta(hours=2),
    } | changes
    audit_before = _count(engine, "audit_entry")
    with pytest.raises((ValidationError, NotFound)) as caught, uow(engine) as session:
        specimens.accession(session, actor=admin, **kwargs)
    assert caught.value.field == field
    assert _count(engine, "specimen") == 0
    assert _count(engine, "audit_entry") == audit_before


def test_ids_are_never_reused_after_a_rollback(engine, admin):
    seed_inventory(engine, admin)
    with uow(engine) as session:
        first = serum(session, admin).accession_id
    with pytest.raises(RuntimeError), uow(engine) as session:
        burned = serum(session, admin).accession_id
        raise RuntimeError("the label printer caught fire")
    with uow(engine) as session:
        after = serum(session, admin).accession_id
    assert len({first, burned, after}) == 3
    assert after > burned > first


def test_pi_cannot_accession(engine, actors):
    seed_inventory(engine, actors[Role.admin])
    with pytest.raises(PermissionDenied), uow(engine) as session:
        serum(session, actors[Role.pi])
    with uow(engine) as session:
        serum(session, actors[Role.technician])


def test_aliquots_draw_from_the_parent(engine, admin):
    layout = seed_inventory(engine, admin)
    with uow(engine) as session:
        parent = serum(session, admin, quantity=1000)
        children = lineage.aliquot(
            session,
            actor=admin,
            parent=parent.accession_id,
            count=4,
            volume=200,
            destination=layout["boxes"][1],
        )
    assert [c.position for c in children] == ["A1", "A2", "A3", "A4"]
    assert {c.parent_accession_id for c in children} == {parent.accession_id}
    assert {(c.participant_code, c.visit_label, c.sprec_code) for c in children} == {
        ("SLE-0001", "baseline", parent.sprec_code)
    }
    with uow(engine) as session:
        shown = specimens.show_specimen(session, actor=admin, accession=parent.accession_id)
    assert shown.specimen.quantity == pytest.approx(200)
    assert shown.children == sorted(c.accession_id for c in children)
    assert [e.event_type for e in shown.events] == ["accessioned", "aliquoted"]
    with pytest.raises(ValidationError, match="has 200 uL left, 250 uL asked"):
        with uow(engine) as session:
            lineage.aliquot(session, actor=admin, parent=parent.accession_id, count=1, volume=250)
    with uow(engine) as session:
        lineage.aliquot(session, actor=admin, parent=parent.accession_id, count=2, volume=100)
        emptied = specimens.show_specimen(session, actor=admin, accession=parent.accession_id)
    assert (emptied.specimen.quantity, emptied.specimen.status) == (0, "depleted")


def test_derivatives_pools_and_lineage(engine, admin):
    seed_inventory(engine, admin)
    with uow(engine) as session:
        buffy = accession_tube(session, admin, visit="baseline", specimen_type="BUF")
        dna = lineage.derive(
            session,
            actor=admin,
            parent=buffy.accession_id,
            specimen_type="dna",
            quantity=25,
            unit="ug",
            used=300,
        )
        a, b = lineage.aliquot(session, actor=admin, parent=dna.accession_id, count=2, volume=5)
        pooled = lineage.pool(
            session, actor=admin, sources=[(a.accession_id, 5), (b.accession_id, 2.5)]
        )
        tree = lineage.trace(session, actor=admin, accession=dna.accession_id)
        pool_tree = lineage.trace(session, actor=admin, accession=pooled.accession_id)
    assert (dna.kind, dna.specimen_type, dna.unit, dna.quantity) == ("derivative", "DNA", "ug", 25)
    assert [x.accession_id for x in tree.ancestors] == [buffy.accession_id]
    assert {x.accession_id for x in tree.descendants} == {
        a.accession_id,
        b.accession_id,
        pooled.accession_id,
    }
    assert {x.accession_id for x in pool_tree.ancestors} == {
        a.accession_id,
        b.accession_id,
        dna.accession_id,
        buffy.accession_id,
    }
    assert (pooled.kind, pooled.quantity, pooled.visit_label) == ("pool", 7.5, "baseline")


def test_pools_stay_within_one_participant(engine, admin):
    from biobank.services import participants

    seed_inventory(engine, admin)
    with uow(engine) as session:
        participants.add_participant(session, actor=admin, study="SLE", code="SLE-0002")
        one = serum(session, admin)
        other = accession_tube(session, admin, "SLE-0002", quantity=100)
    with pytest.raises(ValidationError, match=r"differs .* in participant"):
        with uow(engine) as session:
            lineage.pool(
                session,
                actor=admin,
                sources=[(one.accession_id, 10), (other.accession_id, 10)],
            )


def test_a_participants_specimens_in_the_order_they_were_made(engine, admin):
    layout = seed_inventory(engine, admin)
    with uow(engine) as session:
        participants.add_participant(session, actor=admin, study="SLE", code="SLE-0002")
        parent = serum(session, admin, destination=layout["boxes"][0])
        children = lineage.aliquot(
            session, actor=admin, parent=parent.accession_id, count=2, volume=100
        )
        accession_tube(session, admin, "SLE-0002", quantity=1, unit="mL")
        listed = specimens.list_specimens(session, actor=admin, participant="sle-0001")
        others = specimens.list_specimens(session, actor=admin, participant="SLE-0002")
    assert [s.accession_id for s in listed] == [parent.accession_id] + [
        c.accession_id for c in children
    ]
    assert listed[0].location == "-80 #1 > Shelf 1 > Rack 1 > Box 1 A1"
    assert [s.participant_code for s in others] == ["SLE-0002"]
    with pytest.raises(NotFound), uow(engine, readonly=True) as session:
        specimens.list_specimens(session, actor=admin, participant="SLE-9999")


def test_what_a_change_returns_is_what_a_later_read_finds(engine, admin, monkeypatch):
    """An accession returns the read model built from the rows in hand (aliquots and a move,
    whose sessions do not hold the participant, read theirs); each must be the one a later
    lookup reads, to the offset of each time."""
    layout = seed_inventory(engine, admin)
    elsewhere = timezone(timedelta(hours=-5))
    in_hand = []
    held = specimen_read._held
    monkeypatch.setattr(specimen_read, "_held", lambda *a: in_hand.append(held(*a)) or in_hand[-1])

    def as_read(tubes):
        with uow(engine, lookup=True) as session:
            for tube in tubes:
                found = find_specimen(session, tube.accession_id)
                assert tube.model_dump_json() == found.model_dump_json()
        return tubes

    with uow(engine) as session:
        placed, loose = (
            specimens.accession(
                session, actor=admin, participant="SLE-0001", visit="baseline",
                specimen_type="SER", container_type="SST", quantity=2000, unit="uL",
                collected_at=(NOW - timedelta(hours=3, microseconds=7)).astimezone(elsewhere),
                processed_at=NOW - timedelta(hours=2), destination=layout["boxes"][1],
                notes="Zoë's",
            ),
            specimens.accession(
                session, actor=admin, participant="SLE-0001", specimen_type="URN",
                quantity=5, unit="mL",
            ),
        )  # fmt: skip
    as_read([placed, loose])
    assert placed.collected_at.utcoffset() == timedelta(0)
    assert len(in_hand) == 2 and all(in_hand)
    with uow(engine) as session:
        children = lineage.aliquot(
            session, actor=admin, parent=placed.accession_id, count=2, volume=250,
            destination=layout["freezer"],
        )  # fmt: skip
    assert {c.parent_accession_id for c in as_read(children)} == {placed.accession_id}
    with uow(engine) as session:
        moved = custody.move(
            session, actor=admin, accession=loose.accession_id, destination=layout["boxes"][0],
            position="C3",
        )  # fmt: skip
    assert as_read([moved])[0].location.endswith("C3")


def test_an_accession_shows_its_box_as_the_lock_read_it(pg_engine):
    """Another terminal moved the box after this one had read it and before it locked it: the
    tube's location is where the box is once locked (PostgreSQL: SQLite writers are serial)."""
    with uow(pg_engine) as session:
        admin = actor_for(session, username="admin", workstation="test-bench")
    box = seed_inventory(pg_engine, admin)["boxes"][0]
    with uow(pg_engine) as session:
        held = storage.get_unit(session, box)  # the destination as it was, kept
        with pg_engine.begin() as elsewhere:
            elsewhere.execute(
                sa.update(StorageUnit).where(StorageUnit.barcode == box).values(path="-20 #9 > Box")
            )
        tube = serum(session, admin, destination=box)
    assert tube.location == "-20 #9 > Box A1" and held.path == "-20 #9 > Box"


NOTE = "hémolysé\tclot\nsee \u202eRLO"  # a sheet's comment: tab, line break, bidi override
NOTE_SHOWN = "hémolysé\\tclot\\nsee \\u202eRLO"  # one line, every character still readable


def test_a_tubes_notes_are_shown_wherever_the_tube_is(db_url, admin, monkeypatch):
    """`specimen show`, its `--json` and the workstation's tube screen show the comments an
    import (or an accession) kept, as plain text that cannot drive the terminal."""
    app = make_app(db_url, admin)
    with uow(app.database.engine) as session:
        code = participants.list_participants(session, actor=admin, limit=1)[0].code
        tube = accession_tube(session, admin, code, notes=NOTE).accession_id

    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    runner = CliRunner()
    shown = runner.invoke(cli_app, ["-u", "admin", "specimen", "show", tube])
    assert shown.exit_code == 0, shown.stderr
    assert ["notes", NOTE_SHOWN] in [line.split(None, 1) for line in shown.stdout.splitlines()]
    as_json = runner.invoke(cli_app, ["-u", "admin", "specimen", "show", tube, "--json"]).stdout
    assert json.loads(as_json)["specimen"]["notes"] == NOTE and "\u202e" not in as_json

    async def on_the_tube_screen():
        async with app.run_test(size=(100, 30)) as pilot:
            await sign_in(app, pilot)
            await scan(app, pilot, tube)
            assert isinstance(app.screen, SpecimenScreen)
            detail = app.screen.query_one("#detail", Static).content
            assert f"Notes {NOTE_SHOWN}" in str(detail).splitlines()
        app.database.engine.dispose()

    asyncio.run(on_the_tube_screen())
