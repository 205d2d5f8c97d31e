"""The pull list: tubes a withdrawal (`destroy` or `return`) takes out of the freezer, which
technicians work through, each removal a custody event."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col

from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import SpecimenStatus, WithdrawalDisposition
from biobank.errors import ValidationError
from biobank.models import ConsentWithdrawal, Specimen
from biobank.services.custody import dispose
from biobank.services.participants import get_participant_row
from biobank.services.specimen_read import SpecimenRead, get_specimen, specimens_where
from biobank.services.storage import in_freezer_order
from biobank.services.withdrawals import PULLED_DISPOSITIONS

# Already out of the freezer: nothing left to pull.
_PULLED = (SpecimenStatus.disposed, SpecimenStatus.distributed)


class PullItem(BaseModel):
    accession_id: str
    participant_code: str
    specimen_type: str
    status: str
    box_barcode: str | None
    position: str | None
    location: str | None
    disposition: WithdrawalDisposition
    withdrawn_on: date


def _pull_query() -> sa.Select[int | None, WithdrawalDisposition, date]:
    """Each tube on the list: its id, and the disposition and date of its withdrawal."""
    return (
        sa.select(
            col(Specimen.id),
            col(ConsentWithdrawal.disposition),
            col(ConsentWithdrawal.withdrawn_on),
        )
        .join(ConsentWithdrawal, col(ConsentWithdrawal.id) == Specimen.consent_withdrawal_id)
        .where(
            col(ConsentWithdrawal.disposition).in_(PULLED_DISPOSITIONS),
            col(Specimen.status).not_in(_PULLED),
        )
    )


def pull_list(session: Session, *, actor: Actor, participant: str | None = None) -> list[PullItem]:
    """The tubes to take out for destruction or return, in freezer order (box, position)."""
    require(actor, Permission.view_inventory)
    query = in_freezer_order(_pull_query())
    if participant is not None:
        person = get_participant_row(session, participant)
        query = query.where(col(Specimen.participant_id) == person.id)
    found = {pid: (disp, on) for pid, disp, on in session.execute(query)}
    if not found:
        return []
    order = {pid: rank for rank, pid in enumerate(found)}
    reads = specimens_where(session, Specimen.__table__.c.id.in_(list(found)))
    reads.sort(key=lambda s: order[s.id])
    return [_pull_item(s, *found[s.id]) for s in reads]


def pull_item(session: Session, *, actor: Actor, specimen_id: int) -> PullItem | None:
    """The tube's line on the pull list, or None when it is not on it."""
    require(actor, Permission.view_inventory)
    found = session.execute(_pull_query().where(col(Specimen.id) == specimen_id)).first()
    if found is None:
        return None
    (read,) = specimens_where(session, Specimen.__table__.c.id == specimen_id)
    return _pull_item(read, found[1], found[2])


def _pull_item(s: SpecimenRead, disposition: WithdrawalDisposition, on: date) -> PullItem:
    return PullItem(
        accession_id=s.accession_id, participant_code=s.participant_code,
        specimen_type=s.specimen_type, status=s.status, box_barcode=s.box_barcode,
        position=s.position, location=s.location, disposition=disposition, withdrawn_on=on,
    )  # fmt: skip


def pull(session: Session, *, actor: Actor, accession: str) -> SpecimenRead:
    """Take one tube of the pull list out: disposed, for destruction or for return."""
    require(actor, Permission.move)
    specimen = get_specimen(session, accession)
    found = session.execute(_pull_query().where(col(Specimen.id) == specimen.id)).first()
    if found is None:
        raise ValidationError(
            f"{specimen.accession_id} is not on the pull list", field="specimen", value=accession
        )
    _, disposition, withdrawn_on = found
    done = (
        "returned to the participant"
        if disposition is not WithdrawalDisposition.destroy
        else "destroyed"
    )
    return dispose(
        session,
        actor=actor,
        accession=specimen.accession_id,
        reason=f"consent withdrawn on {withdrawn_on}: {done}",
    )
