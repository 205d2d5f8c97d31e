"""Collection kits: IDs reserved before the draw, accessioned when scanned at receipt."""

from datetime import date

import pytest
from inventory import accession_tube, seed_inventory

from biobank.db import uow
from biobank.domain.identifiers import format_specimen_id
from biobank.errors import ValidationError
from biobank.services import kits, participants, scan, specimens


def test_a_kit_tube_is_accessioned_under_its_reserved_id(engine, admin):
    seed_inventory(engine, admin)
    with uow(engine) as session:
        kit = kits.reserve_kit(
            session,
            actor=admin,
            participant="SLE-0001",
            visit="baseline",
            count=3,
            specimen_type="ser",
        )
    assert kit.kit_code.startswith("KIT-") and len(set(kit.accession_ids)) == 3
    tube = kit.accession_ids[1]
    with uow(engine) as session:
        found = scan.resolve_scan(session, actor=admin, scanned=tube)
    assert found.kind == "kit" and found.reserved.visit_label == "baseline"
    with uow(engine) as session:
        made = accession_tube(session, admin, quantity=800, kit_id=tube.lower())
    assert (made.accession_id, made.visit_label) == (tube, "baseline")
    with uow(engine) as session:
        assert scan.resolve_scan(session, actor=admin, scanned=tube).kind == "specimen"
    with pytest.raises(ValidationError, match="already accessioned"), uow(engine) as session:
        accession_tube(session, admin, quantity=1, kit_id=tube)


def test_a_kit_tube_must_match_what_it_was_reserved_for(engine, admin):
    seed_inventory(engine, admin)
    with uow(engine) as session:
        participants.add_participant(session, actor=admin, study="SLE", code="SLE-0002")
        participants.add_visit(
            session,
            actor=admin,
            participant="SLE-0001",
            label="month 6",
            visit_date=date(2025, 7, 1),
        )
        kit = kits.reserve_kit(
            session,
            actor=admin,
            participant="SLE-0001",
            visit="baseline",
            count=1,
            specimen_type="PL1",
        )
    (tube,) = kit.accession_ids
    cases = [
        ({"participant": "SLE-0002"}, "participant"),
        ({"visit": "month 6"}, "visit"),
        ({"specimen_type": "SER"}, "specimen_type"),
        ({"kit_id": format_specimen_id("SLE", 9_000_000)}, "kit_id"),
    ]
    for changes, field in cases:
        kwargs = {"participant": "SLE-0001", "specimen_type": "PL1", "quantity": 1, "unit": "uL",
                  "kit_id": tube} | changes  # fmt: skip
        with pytest.raises(ValidationError) as caught, uow(engine) as session:
            specimens.accession(session, actor=admin, **kwargs)
        assert caught.value.field == field
    with pytest.raises(ValidationError, match="1-50"), uow(engine) as session:
        kits.reserve_kit(session, actor=admin, participant="SLE-0001", visit="baseline", count=0)
