"""Building blocks for inventory tests: a study, a participant with a visit, a freezer."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from biobank.db import uow
from biobank.services import participants, specimens, storage, studies

NOW = datetime.now(UTC).replace(microsecond=0)
# a day still to come when a test collected before midnight runs after it, and beyond the
# day of clock skew some dates are allowed
FUTURE = date.today() + timedelta(days=30)


def seed_inventory(engine, admin, *, box_grid=(9, 9), boxes_per_rack=2) -> dict[str, str]:
    """Study SLE, participant SLE-0001 with a baseline visit, and freezer "-80 #1"
    (1 shelf, 2 racks, `boxes_per_rack` boxes each)."""
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="SLE", title="Lupus registry")
        participants.add_participant(
            session, actor=admin, study="SLE", code="SLE-0001", birth_year=1980
        )
        participants.add_visit(
            session,
            actor=admin,
            participant="SLE-0001",
            label="baseline",
            visit_date=date(2025, 1, 2),
        )
        freezer = storage.add_freezer(
            session,
            actor=admin,
            name="-80 #1",
            shelves=1,
            racks_per_shelf=2,
            boxes_per_rack=boxes_per_rack,
            box_grid=box_grid,
        )
        boxes = [
            n.unit.barcode
            for n in storage.storage_tree(session, actor=admin, root=freezer.barcode)
            if n.unit.holds_specimens
        ]
    return {"freezer": freezer.barcode, "boxes": boxes}


def serum(session, actor, *, quantity=1000.0, visit="baseline", **kwargs):
    return specimens.accession(
        session,
        actor=actor,
        participant="SLE-0001",
        visit=visit,
        specimen_type="SER",
        container_type="SST",
        quantity=quantity,
        unit="uL",
        collected_at=NOW - timedelta(hours=3),
        processed_at=NOW - timedelta(hours=2),
        precentrifugation_temperature="RT",
        **kwargs,
    )
