"""Receiving a shipment from another biobank that runs this system, by the manifest it sent.

The manifest is checked first: its format, and the SHA-256 of its content (an altered manifest
is refused, as is one received before), nothing written until it passes. Each tube is then
scanned in: received, and accessioned into the receiving study under a participant of ours for
its donor (the sender's donor code kept as that participant's external ID, so a donor's tubes
from the request's other shipments join the same participant), the sender's ID kept as the
tube's legacy ID (its label still scans), its SPREC code and freeze-thaw count as sent (an
extract, DNA or RNA, a derivative whose parent stayed with the sender); damaged (thawed on
arrival: accessioned, the thaw recorded); or unexpected (scanned but not on the manifest:
recorded, not accessioned). Closing the receipt marks every tube never scanned missing; its
counts are what the receiver tells the sender (`biobank shipment confirm` there).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from biobank.db import flush
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import ReceiptItemStatus
from biobank.errors import AlreadyExists, InvalidTransition, NotFound, ValidationError
from biobank.inputs import IMPORT_LIMIT, read_input
from biobank.models import Participant, Receipt, ReceiptItem, Specimen, Study, utcnow
from biobank.services import audit, custody, external_ids, participants, specimens
from biobank.services.shipment_manifest import FORMAT, digest
from biobank.services.studies import get_study

DONOR_SYSTEM = "shipment-donor"


class ReceiptLine(BaseModel):
    sender_accession: str
    donor: str | None
    specimen_type: str | None
    quantity: float | None
    unit: str | None
    status: ReceiptItemStatus
    accession_id: str | None  # ours, once accessioned


class ReceiptRead(BaseModel):
    shipment: str
    request: str
    study: str
    received_at: datetime
    closed_at: datetime | None
    counts: dict[str, int]
    items: list[ReceiptLine]


def read_manifest(path: Path) -> dict[str, Any]:
    """A manifest file as sent (`manifest.json`), or a ValidationError saying why not (a pipe
    or a device named instead is refused, not read for ever: `read_input`)."""
    data = read_input(path, IMPORT_LIMIT, "shipment manifest", field="manifest")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValidationError(f"{path.name} is not a shipment manifest: {error}",
                              field="manifest", value=path.name) from None  # fmt: skip
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValidationError(f"{path.name} is not a shipment manifest ({FORMAT})",
                              field="manifest", value=path.name)  # fmt: skip
    return document


def _checked(document: dict[str, Any]) -> dict[str, Any]:
    """A manifest whose content is what it was when sent (its SHA-256), and whole."""
    stated, actual = document.get("sha256"), digest(document)
    if stated != actual:
        raise ValidationError(
            f"the manifest was altered after it was sent: it says SHA-256 {str(stated)[:12]}…, "
            f"its content is {actual[:12]}…; ask the sender for theirs",
            field="manifest", value=str(stated),
        )  # fmt: skip
    items = document.get("items")
    if not isinstance(items, list) or not items:
        raise ValidationError("the manifest lists no tubes", field="manifest")
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not str(item.get("accession_id") or "").strip():
            raise ValidationError(f"tube {n} of the manifest has no ID", field="manifest")
    return document


def _read(session: Session, receipt: Receipt) -> ReceiptRead:
    rows = session.exec(
        select(ReceiptItem, Specimen.accession_id)
        .outerjoin(Specimen, col(Specimen.id) == ReceiptItem.specimen_id)
        .where(ReceiptItem.receipt_id == receipt.id)
        .order_by(col(ReceiptItem.id))
    ).all()
    study = session.get_one(Study, receipt.study_id)
    return ReceiptRead(
        shipment=receipt.shipment_code, request=receipt.request_code, study=study.code,
        received_at=receipt.received_at, closed_at=receipt.closed_at,
        counts=dict(Counter(item.status.value for item, _ in rows)),
        items=[
            ReceiptLine(
                sender_accession=item.sender_accession, donor=item.donor,
                specimen_type=item.specimen_type, quantity=item.quantity, unit=item.unit,
                status=item.status, accession_id=ours,
            )
            for item, ours in rows
        ],
    )  # fmt: skip


def receive_manifest(
    session: Session, *, actor: Actor, document: dict[str, Any], study: str
) -> ReceiptRead:
    """A received shipment's manifest, checked (see the module), its tubes expected."""
    require(actor, Permission.accession)
    document = _checked(document)
    into = get_study(session, study)
    known = session.exec(
        select(Receipt).where(Receipt.manifest_sha256 == document["sha256"])
    ).first()
    if known is not None:
        raise AlreadyExists(
            f"shipment {known.shipment_code} was received already, on "
            f"{known.received_at:%Y-%m-%d}", field="manifest", value=known.shipment_code,
        )  # fmt: skip
    assert into.id is not None
    receipt = Receipt(
        shipment_code=str(document["shipment"]).strip().upper(),
        request_code=str(document.get("request") or ""), manifest_sha256=document["sha256"],
        study_id=into.id, received_by_id=actor.user_id,
    )  # fmt: skip
    session.add(receipt)
    flush(session)
    assert receipt.id is not None
    for item in document["items"]:
        session.add(
            ReceiptItem(
                receipt_id=receipt.id, sender_accession=str(item["accession_id"]).strip().upper(),
                donor=item.get("donor"), specimen_type=item.get("specimen_type"),
                sprec_code=item.get("sprec_code"), quantity=item.get("quantity"),
                unit=item.get("unit"), freeze_thaw_count=int(item.get("freeze_thaw_count") or 0),
            )
        )  # fmt: skip
    flush(session)
    audit.record(session, actor=actor, action="receipt.add", entity="receipt",
                 entity_id=receipt.id, after=audit.snapshot(receipt) | {
                     "tubes": len(document["items"])})  # fmt: skip
    return _read(session, receipt)


def _receipt(session: Session, shipment: str) -> Receipt:
    """The latest receipt of a shipment by its (the sender's) code."""
    receipt = session.exec(
        select(Receipt)
        .where(Receipt.shipment_code == shipment.strip().upper())
        .order_by(col(Receipt.id).desc())
    ).first()
    if receipt is None:
        raise NotFound(f"no shipment {shipment.strip()!r} received", field="shipment",
                       value=shipment)  # fmt: skip
    return receipt


def _open_receipt(session: Session, shipment: str) -> Receipt:
    receipt = _receipt(session, shipment)
    if receipt.closed_at is not None:
        raise InvalidTransition(f"the receipt of {receipt.shipment_code} is closed",
                                field="shipment", value=receipt.shipment_code)  # fmt: skip
    return receipt


def _donor_participant(session: Session, actor: Actor, receipt: Receipt, donor: str) -> str:
    """The participant of ours a donor's tubes join (made at their first tube)."""
    study = session.get_one(Study, receipt.study_id)
    found = external_ids.participants_by_external_id(
        session, study=study, values=[donor], system=DONOR_SYSTEM, namespace=receipt.request_code
    )
    if donor in found:
        return session.get_one(Participant, found[donor]).code
    made = participants.add_participant(session, actor=actor, study=study.code)
    row = participants.get_participant_row(session, made.code)
    assert row.id is not None
    external_ids.add_external_ids(
        session, actor=actor, study=study, ids=[external_ids.NewExternalId(row.id, donor)],
        system=DONOR_SYSTEM, namespace=receipt.request_code,
        reason=f"donor of shipment {receipt.shipment_code}",
    )  # fmt: skip
    return made.code


def check_in(
    session: Session,
    *,
    actor: Actor,
    shipment: str,
    tube: str,
    damaged: bool = False,
    destination: str | None = None,
    position: str | None = None,
) -> ReceiptLine:
    """A tube of a received shipment scanned in (see the module): accessioned and placed, or
    recorded as unexpected; scanning one twice is refused."""
    require(actor, Permission.accession)
    receipt = _open_receipt(session, shipment)
    scanned = tube.strip().upper()
    if not scanned:
        raise ValidationError("scan the tube", field="tube")
    item = session.exec(
        select(ReceiptItem).where(
            ReceiptItem.receipt_id == receipt.id, ReceiptItem.sender_accession == scanned
        )
    ).first()
    if item is None:
        assert receipt.id is not None
        item = ReceiptItem(receipt_id=receipt.id, sender_accession=scanned,
                           status=ReceiptItemStatus.unexpected)  # fmt: skip
        session.add(item)
        flush(session)
        audit.record(session, actor=actor, action="receipt.unexpected", entity="receipt_item",
                     entity_id=item.id, after=audit.snapshot(item))  # fmt: skip
        return _line(session, item)
    if item.status is not ReceiptItemStatus.expected:
        raise ValidationError(f"{scanned} is {item.status.value} already", field="tube",
                              value=scanned)  # fmt: skip
    if not item.specimen_type or item.quantity is None or not item.unit:
        raise ValidationError(f"the manifest does not say what {scanned} is", field="tube",
                              value=scanned)  # fmt: skip
    code = _donor_participant(session, actor, receipt, item.donor or scanned)
    read = specimens.accession(
        session, actor=actor, participant=code, specimen_type=item.specimen_type,
        quantity=item.quantity, unit=item.unit, received_at=utcnow(), legacy_id=scanned,
        sprec_code=item.sprec_code,
        destination=destination, position=position,
        notes=f"received in shipment {receipt.shipment_code} for {receipt.request_code}",
    )  # fmt: skip
    made = session.get_one(Specimen, read.id)
    if item.freeze_thaw_count:
        with audit.audited(session, made, actor=actor, action="specimen.thaws_as_sent",
                           entity="specimen", reason=receipt.shipment_code):  # fmt: skip
            made.freeze_thaw_count = item.freeze_thaw_count
    if damaged:
        custody.record_thaw(session, actor=actor, accession=made.accession_id)
    with audit.audited(session, item, actor=actor, action="receipt.check_in",
                       entity="receipt_item", reason=receipt.shipment_code):  # fmt: skip
        item.status = ReceiptItemStatus.damaged if damaged else ReceiptItemStatus.received
        item.specimen_id = made.id
    return _line(session, item)


def _line(session: Session, item: ReceiptItem) -> ReceiptLine:
    ours = session.get(Specimen, item.specimen_id) if item.specimen_id else None
    return ReceiptLine(
        sender_accession=item.sender_accession, donor=item.donor,
        specimen_type=item.specimen_type, quantity=item.quantity, unit=item.unit,
        status=item.status, accession_id=ours.accession_id if ours else None,
    )  # fmt: skip


def close_receipt(session: Session, *, actor: Actor, shipment: str) -> ReceiptRead:
    """Every tube never scanned is missing; the receipt's counts are final."""
    require(actor, Permission.accession)
    receipt = _open_receipt(session, shipment)
    unscanned = session.exec(
        select(ReceiptItem).where(
            ReceiptItem.receipt_id == receipt.id,
            ReceiptItem.status == ReceiptItemStatus.expected,
        )
    ).all()
    for item in unscanned:
        with audit.audited(session, item, actor=actor, action="receipt.missing",
                           entity="receipt_item", reason="never scanned in"):  # fmt: skip
            item.status = ReceiptItemStatus.missing
    with audit.audited(session, receipt, actor=actor, action="receipt.close",
                       entity="receipt"):  # fmt: skip
        receipt.closed_at = utcnow()
    return _read(session, receipt)


def show_receipt(session: Session, *, actor: Actor, shipment: str) -> ReceiptRead:
    require(actor, Permission.view_inventory)
    return _read(session, _receipt(session, shipment))
