"""What goes on labels, from the inventory: the bridge between read models and `labels/`.

Printing is recorded: every specimen label sent to a printer is a `label_printed` custody
event, and a reprint (a tube whose label was printed before) needs a reason. A label rendered
to a file (PNG, SVG, PDF, ZPL) is a `label_rendered` event: no label reached the tube, so it
makes no later print a reprint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlmodel import Session, col, select

from biobank.domain.permissions import Actor, Permission, require
from biobank.errors import NotFound, ValidationError
from biobank.models import Shipment, ShipmentItem, Specimen, SpecimenEvent
from biobank.services import audit
from biobank.services.events import record_event
from biobank.services.kits import reserve_kit
from biobank.services.specimen_read import get_specimen, specimen_read
from biobank.services.storage import PATH_SEPARATOR, get_unit
from labels import BoxLabel, KitLabel, Label, SpecimenLabel

PRINTED = "label_printed"
RENDERED = "label_rendered"


def specimen_labels(
    session: Session, *, actor: Actor, accession_ids: list[str], show_participant: bool = False
) -> list[SpecimenLabel]:
    """What each tube's label shows (ID, type, collection date, and the participant code
    only if asked): the data the label printer draws, never a name or MRN."""
    require(actor, Permission.print_labels)
    labels = []
    for accession in accession_ids:
        read = specimen_read(session, get_specimen(session, accession))
        labels.append(
            SpecimenLabel(
                read.accession_id,
                specimen_type=read.specimen_type,
                collected=read.collected_at.date() if read.collected_at else None,
                participant=read.participant_code if show_participant else None,
            )
        )
    return labels


def shipment_labels(session: Session, *, actor: Actor, code: str) -> list[SpecimenLabel]:
    """The labels a relabelled shipment's tubes ship under: the linked export's specimen code
    and the type, nothing else (no date, no participant), so the receiving lab never sees our
    IDs; only the biobank links them back."""
    require(actor, Permission.print_labels)
    shipment = session.exec(select(Shipment).where(Shipment.code == code.strip().upper())).first()
    if shipment is None:
        raise NotFound(f"no shipment {code.strip()!r}", field="shipment", value=code)
    rows = session.exec(
        select(ShipmentItem.ship_code, Specimen.specimen_type)
        .join(Specimen, col(Specimen.id) == ShipmentItem.specimen_id)
        .where(ShipmentItem.shipment_id == shipment.id)
        .order_by(col(ShipmentItem.box_no), col(ShipmentItem.box_row), col(ShipmentItem.box_col))
    ).all()
    if not rows or any(ship_code is None for ship_code, _ in rows):
        raise ValidationError(
            f"shipment {shipment.code}'s request is not relabelled: its tubes ship under their "
            "own labels", field="shipment", value=shipment.code,
        )  # fmt: skip
    return [SpecimenLabel(ship_code, specimen_type=kind) for ship_code, kind in rows if ship_code]


def box_labels(session: Session, *, actor: Actor, barcodes: list[str]) -> list[BoxLabel]:
    """What each box's label shows: barcode, name and where it sits."""
    require(actor, Permission.print_labels)
    labels = []
    for barcode in barcodes:
        unit = get_unit(session, barcode, field="box")
        parent_path = unit.path.rpartition(PATH_SEPARATOR)[0] or None
        labels.append(BoxLabel(unit.barcode, name=unit.name, path=parent_path))
    return labels


def kit_labels(
    session: Session,
    *,
    actor: Actor,
    participant: str,
    visit: str,
    count: int,
    specimen_type: str | None = None,
    show_participant: bool = False,
) -> list[KitLabel]:
    """Reserve a collection kit's IDs and give their labels."""
    require(actor, Permission.print_labels)
    kit = reserve_kit(
        session,
        actor=actor,
        participant=participant,
        visit=visit,
        count=count,
        specimen_type=specimen_type,
    )
    return [
        KitLabel(
            accession_id,
            visit=kit.visit_label,
            specimen_type=specimen_type.upper() if specimen_type else None,
            participant=kit.participant_code if show_participant else None,
        )
        for accession_id in kit.accession_ids
    ]


def printed_before(session: Session, *, actor: Actor, accession_ids: list[str]) -> list[str]:
    """The tubes among `accession_ids` whose label was printed before (a render to a file is
    not a print)."""
    require(actor, Permission.print_labels)
    found = []
    for accession in accession_ids:
        specimen = get_specimen(session, accession)
        printed = session.exec(
            select(SpecimenEvent.id).where(
                SpecimenEvent.specimen_id == specimen.id, SpecimenEvent.event_type == PRINTED
            )
        ).first()
        if printed is not None:
            found.append(specimen.accession_id)
    return found


def check_reprints(
    session: Session, *, actor: Actor, accession_ids: list[str], reason: str | None
) -> None:
    """Refuse, before anything is printed, a reprint that gives no reason."""
    require(actor, Permission.print_labels)
    if reason and reason.strip():
        return
    printed = printed_before(session, actor=actor, accession_ids=accession_ids)
    if printed:
        raise ValidationError(
            f"the label of {printed[0]} was printed before: a reprint needs a reason (--reason)",
            field="reason",
            value=printed[0],
        )


def record_printed(
    session: Session,
    *,
    actor: Actor,
    accession_ids: list[str],
    target: str,
    reason: str | None = None,
    event_type: str = PRINTED,
) -> None:
    """One event (and audit entry) per specimen label that went out: `PRINTED` to a printer,
    `RENDERED` to a file."""
    require(actor, Permission.print_labels)
    for accession in accession_ids:
        specimen = get_specimen(session, accession)
        record_event(
            session,
            actor=actor,
            specimen=specimen,
            event_type=event_type,
            status_before=specimen.status.value,
            reason=reason,
            details={"target": target},
        )
        audit.record(
            session,
            actor=actor,
            action=f"specimen.{event_type}",
            entity="specimen",
            entity_id=specimen.id,
            reason=reason,
            after={"target": target},
        )


def issue_specimen_labels(
    session: Session,
    *,
    actor: Actor,
    accession_ids: list[str],
    output: Callable[[Sequence[Label]], str],
    reason: str | None = None,
    show_participant: bool = False,
    to_printer: bool = True,
) -> str:
    """The one way specimen labels go out, from any front end: `output` prints them
    (`to_printer`) or writes them to a file, and says where. A print is recorded as printed,
    and a reprint needs a reason (checked before anything is printed); a file is recorded as
    rendered."""
    if to_printer:
        check_reprints(session, actor=actor, accession_ids=accession_ids, reason=reason)
    made = specimen_labels(
        session, actor=actor, accession_ids=accession_ids, show_participant=show_participant
    )
    target = output(made)
    record_printed(
        session,
        actor=actor,
        accession_ids=accession_ids,
        target=target,
        reason=reason,
        event_type=PRINTED if to_printer else RENDERED,
    )
    return target
