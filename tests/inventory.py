"""Building blocks for inventory tests: a study, a participant with a visit, a freezer, tubes.

The builders fill in what a test is not about, so a call names only what it is: a test of
an argument passes it to the service itself.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from biobank.db import uow
from biobank.services import participants, specimens, storage, studies

NOW = datetime.now(UTC).replace(microsecond=0)
# a day still to come when a test collected before midnight runs after it, and beyond the
# day of clock skew some dates are allowed
FUTURE = date.today() + timedelta(days=30)
TUBE = {"specimen_type": "SER", "quantity": 500, "unit": "uL"}  # what `accession_tube` holds


def seed_inventory(engine, admin, *, box_grid=(9, 9), boxes_per_rack=2) -> dict[str, str]:
    """Study SLE, participant SLE-0001 with a baseline visit, and freezer "-80 #1"
    (1 shelf, 2 racks, `boxes_per_rack` boxes each)."""
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="SLE", title="Lupus registry")
        participant_with_visit(session, admin, birth_year=1980)
        freezer = one_shelf_freezer(
            session, admin, "-80 #1", racks=2, boxes_per_rack=boxes_per_rack, box_grid=box_grid
        )
        boxes = [
            n.unit.barcode
            for n in storage.storage_tree(session, actor=admin, root=freezer.barcode)
            if n.unit.holds_specimens
        ]
    return {"freezer": freezer.barcode, "boxes": boxes}


def participant_with_visit(
    session,
    actor,
    code="SLE-0001",
    *,
    study="SLE",
    label="baseline",
    visit_date=date(2025, 1, 2),
    **details,
):
    """A participant of `study` with one visit; `details` go to `add_participant`."""
    participant = participants.add_participant(
        session, actor=actor, study=study, code=code, **details
    )
    participants.add_visit(
        session, actor=actor, participant=code, label=label, visit_date=visit_date
    )
    return participant


def one_shelf_freezer(session, actor, name, *, racks=1, boxes_per_rack=1, **details):
    """A freezer of one shelf of `racks` racks; `details` go to `add_freezer` (`box_grid`)."""
    return storage.add_freezer(
        session,
        actor=actor,
        name=name,
        shelves=1,
        racks_per_shelf=racks,
        boxes_per_rack=boxes_per_rack,
        **details,
    )


def accession_tube(session, actor, participant="SLE-0001", **details):
    """A `TUBE` of `participant`'s, at no visit unless `details` name one; `details` are the
    rest of `specimens.accession`'s arguments, or override the tube's."""
    return specimens.accession(session, actor=actor, participant=participant, **(TUBE | details))


def serum(session, actor, *, quantity=1000.0, visit="baseline", **kwargs):
    """SLE-0001's serum at a visit, as the lab receives it: its container, times and the
    temperature before centrifugation."""
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
