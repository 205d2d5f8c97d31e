"""The storage tree, templates, grids and position labels."""

import json
from datetime import UTC, datetime

import pytest
from inventory import accession_tube, one_shelf_freezer, seed_inventory, serum
from sqlmodel import select
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.domain.positions import fill_sequence, parse_grid, parse_position, position_label
from biobank.domain.vocabulary import FillOrder, PositionLabels, Role
from biobank.errors import (
    AlreadyExists,
    NotFound,
    PermissionDenied,
    PositionOccupied,
    ValidationError,
)
from biobank.models import StorageUnit
from biobank.services import lineage, specimens, storage


def test_position_labels_round_trip():
    for scheme in PositionLabels:
        for rows, cols in [(9, 9), (10, 10), (8, 12), (30, 2)]:
            for row, col in fill_sequence(rows, cols, FillOrder.row_major):
                label = position_label(row, col, cols=cols, scheme=scheme)
                assert parse_position(label, rows=rows, cols=cols, scheme=scheme) == (row, col)
    assert position_label(27, 1, cols=2, scheme=PositionLabels.letter_number) == "AA1"
    assert parse_position(" a01 ", rows=9, cols=9, scheme=PositionLabels.letter_number) == (1, 1)
    assert parse_position("I9", rows=9, cols=9, scheme=PositionLabels.numeric) == (9, 9)
    assert position_label(2, 3, cols=12, scheme=PositionLabels.numeric) == "15"


@pytest.mark.parametrize("label", ["J1", "A10", "A0", "82", "0", "1A", "", "A-1"])
def test_positions_outside_the_grid_name_the_grid(label):
    with pytest.raises(ValidationError) as caught:
        parse_position(label, rows=9, cols=9, scheme=PositionLabels.numeric)
    assert caught.value.field == "position"


def test_fill_orders():
    assert list(fill_sequence(2, 3, FillOrder.row_major))[:4] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    assert list(fill_sequence(2, 3, FillOrder.column_major))[:3] == [(1, 1), (2, 1), (1, 2)]
    assert parse_grid("8x12") == (8, 12) and parse_grid("10 × 10") == (10, 10)
    with pytest.raises(ValidationError):
        parse_grid("9by9")


def test_freezer_template_builds_the_tree(engine, admin):
    with uow(engine) as session:
        freezer = storage.add_freezer(
            session,
            actor=admin,
            name="-80 #3",
            shelves=5,
            racks_per_shelf=4,
            boxes_per_rack=12,
            box_grid=(9, 9),
        )
        nodes = storage.storage_tree(session, actor=admin, root=freezer.barcode)
    kinds = [n.unit.kind for n in nodes]
    assert kinds.count("shelf") == 5 and kinds.count("rack") == 20 and kinds.count("box") == 240
    assert nodes[0].unit.name == "-80 #3" and nodes[0].depth == 0
    box = nodes[3].unit
    assert (nodes[3].depth, box.path) == (3, "-80 #3 > Shelf 1 > Rack 1 > Box 1")
    assert (box.capacity, box.free_slots, box.grid) == (81, 81, "9x9")
    # physical order: shelf 1 rack 1 boxes 1..12, then rack 2
    boxes = [n.unit for n in nodes if n.unit.kind == "box"]
    assert [b.path.split(" > ")[2:] for b in boxes[11:13]] == [
        ["Rack 1", "Box 12"],
        ["Rack 2", "Box 1"],
    ]


def test_units_by_hand_and_their_rules(engine, admin):
    with uow(engine) as session:
        site = storage.add_unit(session, actor=admin, kind="site", name="Main lab")
        freezer = storage.add_unit(
            session,
            actor=admin,
            kind="freezer",
            name="LN2 tank",
            parent=site.barcode,
            grid=(2, 1),
            temperature_class="LN2",
        )
        box = storage.add_unit(
            session,
            actor=admin,
            kind="box",
            name="PBMC 1",
            parent=freezer.barcode,
            position="B1",
            grid=(10, 10),
            barcode="pbmc-0001",
            allowed_types=["cel"],
            position_labels="numeric",
        )
    assert box.barcode == "PBMC-0001" and box.position == "B1"
    assert box.allowed_types == ["CEL"] and box.path == "Main lab > LN2 tank > PBMC 1"
    cases = [
        ({"kind": "box", "name": "x", "parent": freezer.barcode, "position": "B1",
          "grid": (9, 9)}, "position"),
        ({"kind": "box", "name": "PBMC 1", "parent": freezer.barcode, "grid": (9, 9)}, "name"),
        ({"kind": "box", "name": "y", "parent": freezer.barcode, "position": "C1",
          "grid": (9, 9)}, "position"),
        ({"kind": "rack", "name": "z", "parent": box.barcode}, "parent"),
        ({"kind": "box", "name": "w"}, "grid"),
        ({"kind": "box", "name": "v", "grid": (9, 9), "barcode": "PBMC-0001"}, "barcode"),
        ({"kind": "box", "name": "u", "grid": (9, 9), "parent": "NOPE"}, "parent"),
    ]  # fmt: skip
    for kwargs, field in cases:
        with pytest.raises((ValidationError, AlreadyExists, NotFound, PositionOccupied)) as caught:
            with uow(engine) as session:
                storage.add_unit(session, actor=admin, **kwargs)
        assert field in (caught.value.field or ""), (kwargs, caught.value)


def test_only_admins_change_the_layout(engine, actors):
    for role in (Role.technician, Role.pi):
        with pytest.raises(PermissionDenied), uow(engine) as session:
            storage.add_unit(session, actor=actors[role], kind="site", name="x")


def test_box_view_shows_occupancy(engine, admin):
    layout = seed_inventory(engine, admin)
    with uow(engine) as session:
        tube = serum(session, admin, destination=layout["boxes"][0], position="C4")
        view = storage.box_view(session, actor=admin, barcode=layout["boxes"][0])
    assert (view.rows, view.cols, len(view.cells)) == (9, 9, 81)
    occupied = [c for c in view.cells if c.accession_id]
    assert [(c.label, c.accession_id, c.status) for c in occupied] == [
        ("C4", tube.accession_id, "available")
    ]
    assert view.unit.free_slots == 80
    with pytest.raises(ValidationError, match="not a box"), uow(engine) as session:
        storage.box_view(session, actor=admin, barcode=layout["freezer"])


def test_a_box_moves_with_its_tubes(engine, admin):
    layout = seed_inventory(engine, admin)
    box = layout["boxes"][0]
    with uow(engine) as session:
        tube = serum(session, admin, destination=box, position="B3")
        other = one_shelf_freezer(session, admin, "-80 #2")
        rack = next(
            n.unit
            for n in storage.storage_tree(session, actor=admin, root=other.barcode)
            if n.unit.kind == "rack"
        )
    with pytest.raises(ValidationError, match="is full"), uow(engine) as session:
        storage.move_unit(session, actor=admin, unit=box, destination=rack.barcode)
    with uow(engine) as session:
        spare = storage.add_unit(session, actor=admin, kind="rack", name="Rack 9", grid=(3, 1))
    with uow(engine) as session:
        moved = storage.move_unit(
            session,
            actor=admin,
            unit=box,
            destination=spare.barcode,
            position="C1",
            reason="freezer defrost",
        )
    assert moved.path == "Rack 9 > Box 1" and moved.position == "C1"

    with uow(engine) as session:
        detail = specimens.show_specimen(session, actor=admin, accession=tube.accession_id)
        nodes = storage.storage_tree(session, actor=admin, root=spare.barcode)
    assert detail.specimen.location == "Rack 9 > Box 1 B3"
    assert detail.events[-1].event_type == "moved_with_unit"
    assert [n.unit.barcode for n in nodes if n.unit.kind == "box"][-1] == box
    with pytest.raises(ValidationError, match="inside itself"), uow(engine) as session:
        shelf = next(
            n.unit
            for n in storage.storage_tree(session, actor=admin, root=other.barcode)
            if n.unit.kind == "shelf"
        )
        storage.move_unit(session, actor=admin, unit=other.barcode, destination=shelf.barcode)


def test_the_tree_opens_one_level_at_a_time_with_free_counts(engine, admin):
    layout = seed_inventory(engine, admin)  # -80 #1: 1 shelf, 2 racks of 2 9x9 boxes
    with uow(engine) as session:
        serum(session, admin, destination=layout["boxes"][0])
        storage.add_unit(session, actor=admin, kind="freezer", name="-20 #1")
        top = storage.storage_children(session, actor=admin)
        (shelf,) = storage.storage_children(session, actor=admin, parent=layout["freezer"])
        racks = storage.storage_children(session, actor=admin, parent=shelf.unit.barcode)
        boxes = storage.storage_children(session, actor=admin, parent=racks[0].unit.barcode)
        trail = storage.storage_path(session, actor=admin, barcode=boxes[1].unit.barcode)
    counts = [(b.unit.name, b.units_inside, b.free, b.capacity) for b in top]
    assert counts == [("-80 #1", 7, 323, 324), ("-20 #1", 0, 0, 0)]
    assert (shelf.unit.name, shelf.units_inside, shelf.free) == ("Shelf 1", 6, 323)
    assert [(r.unit.name, r.units_inside, r.free, r.capacity) for r in racks] == [
        ("Rack 1", 2, 161, 162),
        ("Rack 2", 2, 162, 162),
    ]
    assert [(b.unit.name, b.units_inside, b.free) for b in boxes] == [
        ("Box 1", 0, 80),
        ("Box 2", 0, 81),
    ]
    assert [u.name for u in trail] == ["-80 #1", "Shelf 1", "Rack 1", "Box 2"]
    with pytest.raises(NotFound), uow(engine, readonly=True) as session:
        storage.storage_children(session, actor=admin, parent="RK999999")


def test_fill_positions_follow_the_fill_order(engine, admin):
    with uow(engine) as session:
        rack = storage.add_unit(session, actor=admin, kind="rack", name="R", grid=(2, 1))
        for name, fill, labels in (
            ("down", FillOrder.column_major, PositionLabels.letter_number),
            ("counted", FillOrder.row_major, PositionLabels.numeric),
        ):
            storage.add_unit(
                session, actor=admin, kind="box", name=name, barcode=name, grid=(2, 3),
                fill_order=fill, position_labels=labels,
            )  # fmt: skip
        down = storage.fill_positions(session, actor=admin, barcode="down")
        counted = storage.fill_positions(session, actor=admin, barcode="counted")
        with pytest.raises(ValidationError, match="not a box"):
            storage.fill_positions(session, actor=admin, barcode=rack.barcode)
    assert down == ["A1", "B1", "A2", "B2", "A3", "B3"]
    assert counted == ["1", "2", "3", "4", "5", "6"]


# --- auto-placement of a primary and its aliquots ---------------------------------------------

ON_VISIT_DAY = datetime(2025, 1, 2, 9, 0, tzinfo=UTC)  # seed_inventory's baseline visit


def _tubes(engine, admin, box: str, count: int) -> None:
    with uow(engine) as session:
        for _ in range(count):
            accession_tube(
                session, admin, visit="baseline", quantity=1000, collected_at=ON_VISIT_DAY,
                destination=box,
            )  # fmt: skip


def _free(engine) -> list[int]:
    with uow(engine, readonly=True) as session:
        rows = session.exec(
            select(StorageUnit.free_slots)
            .where(StorageUnit.holds_specimens)
            .order_by(StorageUnit.sort_key)
        )
        return list(rows)


@pytest.fixture
def cli(db_url, monkeypatch):
    """`specimen accession --aliquots N --volume 100 --to DESTINATION` as a technician types
    it, run in-process on the test's database; returns the result."""
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    runner = CliRunner()

    def accession(destination: str, aliquots: int, code: int = 0):
        result = runner.invoke(app, [
            "-u", "admin", "specimen", "accession", "-p", "SLE-0001", "-v", "baseline",
            "--type", "SER", "-q", "5000", "--collected", "2025-01-02T09:00",
            "--aliquots", str(aliquots), "--volume", "100", "--to", destination, "--json",
        ])  # fmt: skip
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        return result

    return accession


def test_a_primary_stays_with_its_aliquots_where_one_box_has_room(engine, admin, cli):
    """Boxes of 6: the first has 1 free, the second 4, the third 6. A primary with 4 aliquots
    goes whole into the third (it went 1 + 4 into the first two)."""
    layout = seed_inventory(engine, admin, box_grid=(2, 3))
    first, second, third, _ = layout["boxes"]
    _tubes(engine, admin, first, 5)
    _tubes(engine, admin, second, 2)
    made = json.loads(cli(layout["freezer"], 4).stdout)
    assert [(t["kind"], t["box_barcode"], t["position"]) for t in made] == [
        ("primary", third, "A1"),
        *[("aliquot", third, p) for p in ("A2", "A3", "B1", "B2")],
    ]
    assert _free(engine) == [1, 4, 1, 6]
    # later aliquots of a placed tube go beside it when its box has room, not to the first
    # box with room
    with uow(engine) as session:
        (more,) = lineage.aliquot(
            session, actor=admin, parent=made[0]["accession_id"], count=1, volume=100,
            destination=layout["freezer"],
        )  # fmt: skip
    assert (more.box_barcode, more.position) == (third, "B3")
    with uow(engine) as session:  # no room beside it: the first box with room for all
        spread = lineage.aliquot(
            session, actor=admin, parent=made[0]["accession_id"], count=2, volume=100,
            destination=layout["freezer"],
        )  # fmt: skip
    assert {t.box_barcode for t in spread} == {second}


def test_not_enough_room_counts_the_primary_and_its_aliquots(engine, admin, cli):
    """The refusal says how many positions the whole set needs and how many are free, and
    nothing is placed."""
    layout = seed_inventory(engine, admin, box_grid=(2, 3))
    second = layout["boxes"][1]
    for box, tubes in zip(layout["boxes"], (5, 2, 6, 3), strict=True):
        _tubes(engine, admin, box, tubes)
    freezer = layout["freezer"]
    refused = cli(freezer, 8, code=5)
    assert refused.stderr.strip() == (
        f"biobank: error: not enough room below {freezer} (-80 #1): 8 free positions for SER, "
        "9 needed"
    )
    refused = cli(second, 4, code=5)
    assert refused.stderr.strip() == f"biobank: error: {second} has 4 free positions, 5 needed"
    assert _free(engine) == [1, 4, 0, 3]
    # a set no box holds whole still fills the free positions
    made = json.loads(cli(freezer, 7).stdout)
    assert len(made) == 8 and _free(engine) == [0, 0, 0, 0]
