"""Data use agreements: what a limited data set (dates kept) must name. An admin registers
each one (its reference, the PI it binds, the study, the uses it allows, when it starts and
expires); a limited export names one that covers its PI, its study and its uses on the day
it runs, or it is refused. Free text is no longer enough."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel
from sqlmodel import Session, select

from biobank.db import flush
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import Role
from biobank.errors import AlreadyExists, NotFound, ValidationError
from biobank.models import DataUseAgreement, Study, User, utcnow
from biobank.services import audit
from biobank.services.consent_checks import known_uses
from biobank.services.studies import get_study


class AgreementRead(BaseModel):
    reference: str
    pi: str
    study: str
    uses: list[str]
    starts_on: date
    expires_on: date
    registered_by: str | None
    registered_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None


def _read(session: Session, row: DataUseAgreement) -> AgreementRead:
    pi = session.get_one(User, row.pi_id)
    registrar = session.get(User, row.registered_by_id) if row.registered_by_id else None
    return AgreementRead(
        reference=row.reference, pi=pi.username, study=session.get_one(Study, row.study_id).code,
        uses=row.uses, starts_on=row.starts_on, expires_on=row.expires_on,
        registered_by=registrar.username if registrar else None,
        registered_at=row.registered_at, revoked_at=row.revoked_at,
        revoke_reason=row.revoke_reason,
    )  # fmt: skip


def _get(session: Session, reference: str) -> DataUseAgreement:
    row = session.exec(
        select(DataUseAgreement).where(DataUseAgreement.reference == reference.strip())
    ).first()
    if row is None:
        raise NotFound(
            f"no data use agreement {reference.strip()!r} (admins register them: "
            "`biobank agreement add`)",
            field="dua_reference",
            value=reference,
        )
    return row


def register_agreement(
    session: Session,
    *,
    actor: Actor,
    reference: str,
    pi: str,
    study: str,
    uses: list[str],
    starts_on: date,
    expires_on: date,
) -> AgreementRead:
    """Keep an agreement an institution signed, for the PI and study it names."""
    require(actor, Permission.manage_studies)
    reference = (reference or "").strip()
    if not reference or len(reference) > 120:
        raise ValidationError("an agreement's reference is 1-120 characters",
                              field="reference", value=reference)  # fmt: skip
    if expires_on < starts_on:
        raise ValidationError(f"it expires ({expires_on}) before it starts ({starts_on})",
                              field="expires_on", value=expires_on.isoformat())  # fmt: skip
    user = session.exec(select(User).where(User.username == pi.strip())).first()
    if user is None:
        raise NotFound(f"no user {pi!r}", field="pi", value=pi)
    if user.role is not Role.pi and user.role is not Role.admin:
        raise ValidationError(f"{user.username} is a {user.role.value}, not a PI",
                              field="pi", value=pi)  # fmt: skip
    if session.exec(
        select(DataUseAgreement.id).where(DataUseAgreement.reference == reference)
    ).first():
        raise AlreadyExists(f"an agreement {reference!r} is registered", field="reference",
                            value=reference)  # fmt: skip
    study_id = get_study(session, study).id
    assert user.id is not None and study_id is not None
    row = DataUseAgreement(
        reference=reference, pi_id=user.id, study_id=study_id,
        uses=known_uses(session, uses), starts_on=starts_on, expires_on=expires_on,
        registered_by_id=actor.user_id,
    )  # fmt: skip
    session.add(row)
    flush(session)
    audit.record(session, actor=actor, action="agreement.register", entity="data_use_agreement",
                 entity_id=row.id, after=audit.snapshot(row))  # fmt: skip
    return _read(session, row)


def revoke_agreement(
    session: Session, *, actor: Actor, reference: str, reason: str
) -> AgreementRead:
    """End an agreement before it expires (terminated, breached): no limited export names it
    from now on; the exports made under it stay recorded."""
    require(actor, Permission.manage_studies)
    if not reason or not reason.strip():
        raise ValidationError("a revocation needs a reason", field="reason")
    row = _get(session, reference)
    if row.revoked_at is not None:
        raise ValidationError(f"{row.reference} was revoked on {row.revoked_at:%Y-%m-%d}",
                              field="reference", value=reference)  # fmt: skip
    with audit.audited(session, row, actor=actor, action="agreement.revoke",
                       entity="data_use_agreement", reason=reason.strip()):  # fmt: skip
        row.revoked_at, row.revoke_reason = utcnow(), reason.strip()
    return _read(session, row)


def list_agreements(session: Session, *, actor: Actor) -> list[AgreementRead]:
    """Every agreement (PIs see their own)."""
    require(actor, Permission.export)
    query = select(DataUseAgreement).order_by(DataUseAgreement.reference)
    if actor.role is not Role.admin:
        query = query.where(DataUseAgreement.pi_id == actor.user_id)
    return [_read(session, row) for row in session.exec(query).all()]


def covering_agreement(
    session: Session, *, actor: Actor, reference: str | None, uses: list[str], today: date
) -> AgreementRead:
    """The agreement a limited export names, if it covers this PI and these uses today; else
    a refusal that says what is wrong. The study it covers limits the export (the caller's)."""
    if not reference or not reference.strip():
        raise ValidationError(
            "a limited data set names a registered data use agreement (--dua REF)",
            field="dua_reference",
        )
    row = _get(session, reference)
    ref = row.reference
    if row.revoked_at is not None:
        problem = f"was revoked on {row.revoked_at:%Y-%m-%d}"
    elif today < row.starts_on:
        problem = f"starts on {row.starts_on}"
    elif today > row.expires_on:
        problem = f"expired on {row.expires_on}"
    elif row.pi_id != actor.user_id:
        problem = f"does not name {actor.username}"
    elif missing := [u for u in uses if u not in row.uses]:
        problem = f"does not allow {', '.join(missing)} (it allows {', '.join(row.uses)})"
    else:
        return _read(session, row)
    raise ValidationError(f"data use agreement {ref} {problem}", field="dua_reference", value=ref)
