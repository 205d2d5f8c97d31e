"""Reviewing a specimen request: the reviewer (an admin) takes it up and sees what it would
take and leave (`request_selection`, as of that day), then approves it whole or line by line,
or rejects it, with reasons. Approval asks consent again that day and reserves the chosen
tubes for the request, exclusively, until they are picked or the reservation expires (the
request's `reservation_days`; `reservations.release_expired` gives them back). Its PI may
preview the same selection at any time before a decision."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel
from sqlmodel import Session, col, select

from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import RequestLineStatus, RequestStatus
from biobank.errors import ValidationError
from biobank.models import RequestLine, SpecimenRequest, utcnow
from biobank.services import reservations
from biobank.services.request_selection import DEFAULT_FLOOR, Selection, select_for_request
from biobank.services.requests import (
    RequestRead,
    get_request,
    move,
    refuse_expired,
    refuse_others,
    request_read,
    reservation_expiry,
)


class Decision(BaseModel):
    """An approval: the request as it now stands, and what each line reserved."""

    request: RequestRead
    reserved: dict[int, int]  # line number → tubes reserved
    left_out: dict[int, dict[str, int]]  # line number → why tubes chosen were not reserved


def _lines(session: Session, request: SpecimenRequest) -> list[RequestLine]:
    return list(
        session.exec(
            select(RequestLine)
            .where(RequestLine.request_id == request.id)
            .order_by(col(RequestLine.line_no))
        ).all()
    )


def preview_request(
    session: Session, *, actor: Actor, code: str, floor: int = DEFAULT_FLOOR
) -> Selection:
    """What the request would take today, for its PI or a reviewer; nothing changes."""
    require(actor, Permission.request_specimens)
    request = get_request(session, code)
    refuse_others(actor, request)
    return select_for_request(
        session, request=request, lines=_lines(session, request), as_of=date.today(), floor=floor
    )


def release_expired(session: Session, *, actor: Actor) -> list[str]:
    """Give back the tubes whose reservation for a request expired unpicked (a reviewer's
    chore, also done before every review and approval): by accession ID."""
    require(actor, Permission.review_requests)
    return reservations.release_expired(session, actor=actor)


def review_request(
    session: Session, *, actor: Actor, code: str, floor: int = DEFAULT_FLOOR
) -> Selection:
    """A reviewer takes a submitted request up (an event) and sees its selection today."""
    require(actor, Permission.review_requests)
    request = get_request(session, code)
    reservations.release_expired(session, actor=actor)
    if request.status is RequestStatus.submitted:
        move(session, actor=actor, request=request, to=RequestStatus.under_review,
             reason="taken up for review")  # fmt: skip
    elif request.status is not RequestStatus.under_review:
        move(session, actor=actor, request=request, to=RequestStatus.under_review, reason=None)
    return select_for_request(
        session, request=request, lines=_lines(session, request), as_of=date.today(), floor=floor
    )


def _reason(reason: str | None, what: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise ValidationError(f"{what} names its reason", field="reason")
    return text


def approve_request(
    session: Session,
    *,
    actor: Actor,
    code: str,
    reason: str,
    lines: list[int] | None = None,
    reject_reason: str | None = None,
    floor: int = DEFAULT_FLOOR,
) -> Decision:
    """Approve every line, or those numbered in `lines` (the others rejected, `reject_reason`
    saying why): the selection is made again today, consent asked today, and its tubes
    reserved for the request until `reservation_days` from now."""
    require(actor, Permission.review_requests)
    reason = _reason(reason, "an approval")
    request = get_request(session, code)
    today = date.today()
    refuse_expired(request, on=today, what=f"approving {request.code}")
    all_lines = _lines(session, request)
    numbers = {line.line_no for line in all_lines}
    wanted = set(lines) if lines else numbers
    unknown = sorted(wanted - numbers)
    if unknown:
        raise ValidationError(f"{request.code} has no line {unknown[0]}", field="lines",
                              value=unknown[0])  # fmt: skip
    rejected = numbers - wanted
    if rejected:
        reject_reason = _reason(reject_reason, "rejecting a line")
    reservations.release_expired(session, actor=actor)
    if request.status is RequestStatus.submitted:
        move(session, actor=actor, request=request, to=RequestStatus.under_review,
             reason="taken up for review")  # fmt: skip
    selection = select_for_request(
        session, request=request, lines=all_lines, as_of=today, floor=floor
    )
    now = utcnow()
    expires = reservation_expiry(request, at=now)
    reserved: dict[int, int] = {}
    left_out: dict[int, dict[str, int]] = {}
    for line in all_lines:
        if line.line_no in rejected:
            line.status, line.decision_reason = RequestLineStatus.rejected, reject_reason
            session.add(line)
            continue
        summary = reservations.reserve_specimens(
            session, actor=actor, specimen_ids=selection.chosen[line.line_no],
            request=request.code, uses=request.uses, request_id=request.id,
            request_line_id=line.id, expires_at=expires,
        )  # fmt: skip
        line.status, line.decision_reason = RequestLineStatus.approved, reason
        line.approved_tubes = summary.reserved
        session.add(line)
        reserved[line.line_no], left_out[line.line_no] = summary.reserved, summary.left_out
    request.reviewer_id, request.decided_at, request.decision_reason = actor.user_id, now, reason
    to = RequestStatus.partly_approved if rejected else RequestStatus.approved
    move(session, actor=actor, request=request, to=to, reason=reason,
         details={"reserved": reserved, "rejected_lines": sorted(rejected),
                  "expires_at": expires.isoformat()})  # fmt: skip
    return Decision(request=request_read(session, request), reserved=reserved, left_out=left_out)


def reject_request(session: Session, *, actor: Actor, code: str, reason: str) -> RequestRead:
    """Reject a request whole, with why; nothing is reserved."""
    require(actor, Permission.review_requests)
    reason = _reason(reason, "a rejection")
    request = get_request(session, code)
    if request.status is RequestStatus.submitted:
        move(session, actor=actor, request=request, to=RequestStatus.under_review,
             reason="taken up for review")  # fmt: skip
    for line in _lines(session, request):
        line.status, line.decision_reason = RequestLineStatus.rejected, reason
        session.add(line)
    request.reviewer_id, request.decided_at, request.decision_reason = (
        actor.user_id, utcnow(), reason,
    )  # fmt: skip
    move(session, actor=actor, request=request, to=RequestStatus.rejected, reason=reason)
    return request_read(session, request)
