"""Participants and their visits. Codes are pseudonymous; PHI goes only to the identity table,
which only admins write or read."""

from __future__ import annotations

import re
import secrets
from collections import Counter
from datetime import date
from functools import cache
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import Select

from biobank.db import flush
from biobank.domain.identifiers import unknown_code
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.visits import canonical_visit_label, visit_named
from biobank.domain.vocabulary import ParticipantStatus, Sex
from biobank.errors import AlreadyExists, NotFound, ValidationError, parse_choice
from biobank.models import (
    ExternalIdRead,
    IdentityRead,
    Participant,
    ParticipantIdentity,
    ParticipantRead,
    PhenotypeMissing,
    PhenotypeValue,
    PhenotypeVariable,
    ReservedAccession,
    Specimen,
    Study,
    Visit,
    VisitRead,
)
from biobank.services import audit
from biobank.services.external_ids import external_ids_of, find_by_external_id
from biobank.services.studies import get_study

PARTICIPANT_CODE = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,31}$")
# No 0/O, 1/I, 2/Z, 5/S or 8/B: codes are read aloud and copied by hand.
CODE_ALPHABET = "34679ACDEFGHJKLMNPQRTUVWXY"
CODE_LENGTH = 6


def new_participant_code(study_code: str, token: str | None = None) -> str:
    """A random pseudonymous code, `STUDY-XXXXXX`; nothing about the person goes into it."""
    token = token or "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return f"{study_code}-{token}"


def _identity_read(identity: ParticipantIdentity | None) -> IdentityRead | None:
    if identity is None:
        return None
    return IdentityRead.model_validate(identity, from_attributes=True)


def _read(
    participant: Participant,
    study_code: str,
    visits: list[Visit] | None = None,
    identity: ParticipantIdentity | None = None,
    external_ids: list[ExternalIdRead] | None = None,
) -> ParticipantRead:
    assert participant.id is not None
    return ParticipantRead(
        id=participant.id,
        study_code=study_code,
        code=participant.code,
        sex=participant.sex,
        birth_year=participant.birth_year,
        enrolled_on=participant.enrolled_on,
        status=participant.status,
        visits=[_visit_read(v, participant.code) for v in visits or []],
        identity=_identity_read(identity),
        external_ids=external_ids or [],
    )


def _visit_read(visit: Visit, participant_code: str) -> VisitRead:
    assert visit.id is not None
    return VisitRead(
        id=visit.id,
        participant_code=participant_code,
        label=visit.label,
        visit_date=visit.visit_date,
    )


def get_participant_row(session: Session, code: str) -> Participant:
    """The participant with this code (any case), or NotFound naming it."""
    participant = session.exec(
        select(Participant).where(Participant.code == code.strip().upper())
    ).first()
    if participant is None:
        raise _no_participant(code)
    return participant


def participant_visit(
    session: Session, code: str, label: str | None
) -> tuple[Participant, Study, Visit | None]:
    """A participant, their study and, when `label` is given, that visit of theirs (None when
    they have none by that label: `missing_visit` says so, once the caller has checked what
    comes first): in one query, as each accession needs them. The query brings all their
    visits (a few), as a label finds its visit by canonical form (`biobank.domain.visits`)."""
    named_code = Participant.code == code.strip().upper()
    if label is None:
        found = session.exec(
            select(Participant, Study)
            .join(Study, col(Study.id) == Participant.study_id)
            .where(named_code)
        ).first()
        if found is None:
            raise _no_participant(code)
        return found[0], found[1], None
    rows = session.exec(_with_visits(), params={"code": code.strip().upper()}).all()
    if not rows:
        raise _no_participant(code)
    participant, study = rows[0][0], rows[0][1]
    visits = {row[2].label: row[2] for row in rows if row[2] is not None}
    named = visit_named(visits, label, owner=participant.code)
    return participant, study, visits[named] if named else None


@cache
def _with_visits() -> Select[Participant, Study, Visit]:
    """Built once: every accession asks it (building costs more than running it)."""
    query = (
        select(Participant, Study, Visit)
        .join(Study, col(Study.id) == Participant.study_id)
        .outerjoin(Visit, col(Visit.participant_id) == Participant.id)
    )
    return query.where(Participant.code == sa.bindparam("code"))


def _no_participant(code: str) -> NotFound:
    return NotFound(
        f"no participant with code {unknown_code(code.strip())}", field="participant", value=code
    )


def missing_visit(participant: Participant, label: str) -> NotFound:
    """The error for a visit label a participant does not have."""
    return NotFound(
        f"participant {participant.code} has no visit {label!r}", field="visit", value=label
    )


def check_person_dates(
    *, birth_year: int | None, date_of_birth: date | None, enrolled_on: date | None
) -> int | None:
    """Check birth year, date of birth and enrolment against each other and today; returns
    the birth year (the date of birth's, when one is given)."""
    today = date.today()
    if date_of_birth is not None:
        if date_of_birth > today:
            raise ValidationError(
                "date of birth is in the future", field="date_of_birth", value=date_of_birth
            )
        if birth_year is not None and birth_year != date_of_birth.year:
            raise ValidationError(
                f"birth year {birth_year} does not match date of birth {date_of_birth}",
                field="birth_year",
                value=birth_year,
            )
        birth_year = date_of_birth.year
    if birth_year is not None and not 1900 <= birth_year <= today.year:
        raise ValidationError(
            f"birth year must be between 1900 and {today.year}",
            field="birth_year",
            value=birth_year,
        )
    if enrolled_on is not None:
        if enrolled_on > today:
            raise ValidationError(
                "enrolment date is in the future", field="enrolled_on", value=enrolled_on
            )
        if birth_year is not None and enrolled_on.year < birth_year:
            raise ValidationError(
                "enrolment date is before birth", field="enrolled_on", value=enrolled_on
            )
    return birth_year


def add_participant(
    session: Session,
    *,
    actor: Actor,
    study: str,
    code: str | None = None,
    sex: Sex | str = Sex.unknown,
    birth_year: int | None = None,
    enrolled_on: date | None = None,
    mrn: str | None = None,
    family_name: str | None = None,
    given_name: str | None = None,
    date_of_birth: date | None = None,
) -> ParticipantRead:
    """Register a participant. Identity fields (PHI) need an admin and go only to the
    identity table; the pseudonymous code is generated unless given."""
    require(actor, Permission.register_participants)
    phi = {"mrn": mrn, "family_name": family_name, "given_name": given_name}
    has_phi = any(v for v in phi.values()) or date_of_birth is not None
    if has_phi:
        require(actor, Permission.read_phi)
    study_row = get_study(session, study)
    sex = parse_choice(Sex, sex, field="sex")
    birth_year = check_person_dates(
        birth_year=birth_year, date_of_birth=date_of_birth, enrolled_on=enrolled_on
    )
    mrn = mrn.strip() if mrn else None
    if code is None:
        code = _unused_code(session, study_row)
    code = code.strip().upper()
    if not PARTICIPANT_CODE.match(code):
        raise ValidationError(
            "a participant code is 3-32 characters: A-Z, 0-9 and '-'", field="code", value=code
        )
    if mrn and mrn.upper() in code:
        raise ValidationError(
            "a participant code must not contain the MRN", field="code", value=code
        )
    if session.exec(select(Participant.id).where(Participant.code == code)).first():
        raise AlreadyExists(f"participant {code} already exists", field="code", value=code)
    if (
        mrn
        and session.exec(
            select(ParticipantIdentity.id).where(ParticipantIdentity.mrn == mrn)
        ).first()
    ):
        raise AlreadyExists("another participant has this MRN", field="mrn", value="(hidden)")

    assert study_row.id is not None
    participant = Participant(
        study_id=study_row.id, code=code, sex=sex, birth_year=birth_year, enrolled_on=enrolled_on
    )
    session.add(participant)
    flush(session)
    assert participant.id is not None
    audit.record(
        session,
        actor=actor,
        action="participant.add",
        entity="participant",
        entity_id=participant.id,
        after=audit.snapshot(participant),
    )
    identity = None
    if has_phi:
        identity = ParticipantIdentity(
            participant_id=participant.id,
            mrn=mrn,
            family_name=family_name,
            given_name=given_name,
            date_of_birth=date_of_birth,
        )
        session.add(identity)
        flush(session)
        audit.record(
            session,
            actor=actor,
            action="participant_identity.add",
            entity="participant_identity",
            entity_id=identity.id,
            after=audit.snapshot(identity),
        )
    return _read(participant, study_row.code, identity=identity)


def _unused_code(session: Session, study: Study) -> str:
    while True:
        code = new_participant_code(study.code)
        if not session.exec(select(Participant.id).where(Participant.code == code)).first():
            return code


def find_visit(session: Session, participant: Participant, label: str) -> Visit:
    """A participant's visit by label, in any spelling of its canonical name."""
    visits = {v.label: v for v in _visits(session, participant)}
    named = visit_named(visits, label, owner=participant.code)
    if named is None:
        raise missing_visit(participant, label)
    return visits[named]


def _visits(session: Session, participant: Participant) -> list[Visit]:
    return list(
        session.exec(
            select(Visit)
            .where(Visit.participant_id == participant.id)
            .order_by(col(Visit.visit_date), col(Visit.id))
        )
    )


def show_participant(
    session: Session,
    *,
    actor: Actor,
    code: str | None = None,
    study: str | None = None,
    record: str | None = None,
    with_identity: bool = False,
) -> ParticipantRead:
    """A participant, by code or by the `study`'s REDCap `record` ID, with their visits and
    external IDs; with `with_identity` (PHI, admins only) also name, MRN, date of birth and
    the external IDs that are PHI."""
    require(actor, Permission.view_inventory)
    if with_identity:
        require(actor, Permission.read_phi)
    if record is not None:
        if study is None or code is not None:
            raise ValidationError(
                "a participant is found by code, or by study and record ID", field="record"
            )
        study_row = get_study(session, study)
        participant = find_by_external_id(session, actor=actor, study=study_row, value=record)
    elif code is not None:
        participant = get_participant_row(session, code)
    else:
        raise ValidationError(
            "name the participant: a code, or a study and record ID", field="code"
        )
    study_code = session.get_one(Study, participant.study_id).code
    visits = _visits(session, participant)
    identity = None
    if with_identity:
        identity = session.exec(
            select(ParticipantIdentity).where(ParticipantIdentity.participant_id == participant.id)
        ).first()
    pid = participant.id
    assert pid is not None
    external = external_ids_of(session, [pid], with_phi=with_identity).get(pid)
    return _read(participant, study_code, visits, identity, external)


def list_participants(
    session: Session,
    *,
    actor: Actor,
    study: str | None = None,
    status: ParticipantStatus | str | None = None,
    code_contains: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[ParticipantRead]:
    """A page of participants, each with their visits (one query for the page's visits)."""
    require(actor, Permission.view_inventory)
    query = (
        select(Participant, Study.code)
        .join(Study, col(Study.id) == Participant.study_id)
        .order_by(col(Participant.code))
        .limit(limit)
        .offset(offset)
    )
    if study is not None:
        query = query.where(Study.id == get_study(session, study).id)
    if status is not None:
        query = query.where(
            Participant.status == parse_choice(ParticipantStatus, status, field="status")
        )
    if code_contains:
        query = query.where(col(Participant.code).contains(code_contains.strip().upper()))
    rows = session.exec(query).all()
    visits: dict[int | None, list[Visit]] = {p.id: [] for p, _ in rows}
    for visit in session.exec(
        select(Visit)
        .where(col(Visit.participant_id).in_(visits))
        .order_by(col(Visit.visit_date), col(Visit.id))
    ):
        visits[visit.participant_id].append(visit)
    return [_read(p, study_code, visits[p.id]) for p, study_code in rows]


def add_visit(
    session: Session, *, actor: Actor, participant: str, label: str, visit_date: date
) -> VisitRead:
    """Record a visit of a participant, dated when it happened (never in the future); a
    label it already has, in any spelling, is refused."""
    require(actor, Permission.register_participants)
    row = get_participant_row(session, participant)
    label = canonical_visit_label(label)
    if not label or len(label) > 64:
        raise ValidationError("a visit label is 1-64 characters", field="label", value=label)
    if row.birth_year is not None and visit_date.year < row.birth_year:
        raise ValidationError("visit date is before birth", field="visit_date", value=visit_date)
    if visit_date > date.today():  # visits are recorded as they happen, not planned here
        raise ValidationError("visit date is in the future", field="visit_date", value=visit_date)
    existing = visit_named([v.label for v in _visits(session, row)], label, owner=row.code)
    if existing:
        raise AlreadyExists(
            f"participant {row.code} already has a visit {existing!r}", field="label", value=label
        )
    assert row.id is not None
    visit = Visit(participant_id=row.id, label=label, visit_date=visit_date)
    session.add(visit)
    flush(session)
    audit.record(
        session,
        actor=actor,
        action="visit.add",
        entity="visit",
        entity_id=visit.id,
        after=audit.snapshot(visit),
    )
    return _visit_read(visit, row.code)


# What names a visit, and moves with it when it is merged into another.
Moved = Specimen | PhenotypeValue | PhenotypeMissing | ReservedAccession


class VisitMerge(BaseModel):
    """What `merge_visits` did: the visit kept, the one merged into it (now gone), the rows
    moved to the kept one, and the phenotype values dropped as the kept visit's equals."""

    kept: VisitRead
    merged: VisitRead
    specimens: int
    phenotype_values: int
    reserved_accessions: int
    dropped_values: int


def merge_visits(
    session: Session, *, actor: Actor, participant: str, keep: str, merge: str, reason: str
) -> VisitMerge:
    """Make two visits of one participant one (an import's `month_6` and another's `month 6`):
    the specimens, phenotype values and kit accessions of `merge` move to `keep`, and `merge`
    is deleted, its snapshot in the audit trail. Nothing else names a visit (every foreign key
    to it restricts deletion, so a forgotten one fails loudly). A value of both visits for one
    variable is refused, naming it, unless the two are equal; a missing-data code gives way to
    a value, and to the kept visit's code (`phenotype_missing`). The repeat instances of
    `merge` (observations of their own) follow those of `keep`, renumbered after them."""
    require(actor, Permission.manage_studies)
    if not reason.strip():
        raise ValidationError("a merge needs its reason", field="reason", value=reason)
    owner = get_participant_row(session, participant)
    kept, merged = find_visit(session, owner, keep), find_visit(session, owner, merge)
    if kept.id == merged.id:
        raise ValidationError(
            f"{keep!r} and {merge!r} are one visit, {kept.label!r}", field="merge", value=merge
        )
    kept_places = [
        *session.exec(select(PhenotypeValue).where(PhenotypeValue.visit_id == kept.id)),
        *session.exec(select(PhenotypeMissing).where(PhenotypeMissing.visit_id == kept.id)),
    ]
    own = [row for row in kept_places if not row.instance]  # the visit's own values and codes
    kept_values = {v.variable_id: v for v in own if isinstance(v, PhenotypeValue)}
    kept_missing = {m.variable_id: m for m in own if isinstance(m, PhenotypeMissing)}
    after = max((row.instance for row in kept_places), default=0)  # renumbered after these
    moved: list[Moved] = []
    dropped: list[PhenotypeValue | PhenotypeMissing] = []
    merged_values = session.exec(select(PhenotypeValue).where(PhenotypeValue.visit_id == merged.id))
    for value in merged_values:
        if value.instance:
            moved.append(value)
            continue
        twin = kept_values.get(value.variable_id)
        if twin is None:
            moved.append(value)
            if value.variable_id in kept_missing:
                dropped.append(kept_missing.pop(value.variable_id))
        elif _typed(twin) == _typed(value):
            dropped.append(value)
        else:
            name = session.get_one(PhenotypeVariable, value.variable_id).name
            raise ValidationError(
                f"visits {kept.label!r} and {merged.label!r} of {owner.code} have different "
                f"values of {name}: correct one of them first",
                field="variable",
                value=name,
            )
    codes = select(PhenotypeMissing).where(PhenotypeMissing.visit_id == merged.id)
    for code in session.exec(codes):
        if code.instance:
            moved.append(code)
        elif code.variable_id in kept_values or code.variable_id in kept_missing:
            dropped.append(code)
        else:
            moved.append(code)
    specimens = session.exec(select(Specimen).where(Specimen.visit_id == merged.id)).all()
    kits = session.exec(
        select(ReservedAccession).where(ReservedAccession.visit_id == merged.id)
    ).all()
    moved += [*specimens, *kits]
    befores = [audit.snapshot(row) for row in moved]
    for row in moved:
        row.visit_id = kept.id
        if isinstance(row, PhenotypeValue | PhenotypeMissing) and row.instance:
            row.instance += after
        session.add(row)
    flush(session)  # before the visit goes: the rows name it until then
    entries = [
        _change(row, "merge_visit", before=before, after=audit.snapshot(row), reason=reason)
        for row, before in zip(moved, befores, strict=True)
    ]
    deleted: list[PhenotypeValue | PhenotypeMissing | Visit] = [*dropped, merged]
    for gone in deleted:  # the visit last: the dropped values name it
        entries.append(_change(gone, "delete", before=audit.snapshot(gone), reason=reason))
        session.delete(gone)
        flush(session)
    counts = Counter(type(row).__tablename__ for row in moved)
    counts["dropped_values"] = len(dropped)
    pair = {"kept": audit.snapshot(kept), "merged": entries[-1]["before"]}
    entries.append(
        {
            "action": "visit.merge",
            "entity": "visit",
            "entity_id": kept.id,
            "before": pair,
            "after": {"kept": pair["kept"], **counts},
            "reason": reason,
        }
    )
    audit.record_many(session, actor=actor, entries=entries)
    return VisitMerge(
        kept=_visit_read(kept, owner.code),
        merged=_visit_read(merged, owner.code),
        specimens=counts["specimen"],
        phenotype_values=counts["phenotype_value"],
        reserved_accessions=counts["reserved_accession"],
        dropped_values=len(dropped),
    )


def _typed(value: PhenotypeValue) -> tuple[object, ...]:
    return value.value_number, value.value_text, value.value_date


def _change(
    row: Moved | Visit,
    change: str,
    *,
    before: dict[str, Any],
    after: dict[str, Any] | None = None,
    reason: str,
) -> dict[str, object]:
    entity = row.__tablename__
    return {
        "action": f"{entity}.{change}",
        "entity": entity,
        "entity_id": row.id,
        "before": before,
        "after": after,
        "reason": reason,
    }
