"""Participants' IDs in other systems (a REDCap record ID), kept exactly as that system writes
them (`1` is not `01`, `a` is not `A`), unique per study, system and namespace. An ID flagged
PHI (the project marks its record ID an identifier) is shown, and found, only with identity
access, as the identity table is."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from biobank.db import insert_many
from biobank.domain.identifiers import unknown_code
from biobank.domain.permissions import Actor, Permission
from biobank.errors import NotFound, ValidationError
from biobank.models import ExternalIdRead, Participant, ParticipantExternalId, Study, utcnow
from biobank.services import audit
from biobank.tabular import chunks

REDCAP = "redcap"
MAX_LENGTH = 100  # REDCap's longest record name
SCANNABLE = 3  # shorter IDs (`1`, `10`) name a record in too many projects to scan


@dataclass(frozen=True)
class NewExternalId:
    """An external ID to give a participant (of the study `add_external_ids` is told)."""

    participant_id: int
    value: str
    phi: bool = False


def check_value(value: str) -> str:
    """An external ID as written: any non-empty text up to MAX_LENGTH characters (only the
    spaces around it are not part of it)."""
    value = value.strip()
    if not value or len(value) > MAX_LENGTH:
        raise ValidationError(
            f"an external ID is 1-{MAX_LENGTH} characters", field="record", value=value
        )
    return value


def add_external_ids(
    session: Session,
    *,
    actor: Actor,
    study: Study,
    ids: Iterable[NewExternalId],
    system: str = REDCAP,
    namespace: str = "",
    reason: str | None = None,
) -> None:
    """Give participants of `study` their IDs in `system` in one statement, each audited as
    `participant_external_id.add` (the value hidden when it is PHI)."""
    table = ParticipantExternalId.__table__
    for chunk in chunks(ids, 1000):
        rows = [
            {"participant_id": new.participant_id, "study_id": study.id, "system": system,
             "namespace": namespace, "value": check_value(new.value), "phi": new.phi,
             "created_at": utcnow()}
            for new in chunk
        ]  # fmt: skip
        insert_many(session, table, rows)
        written = {
            participant: external_id
            for external_id, participant in session.execute(
                sa.select(table.c.id, table.c.participant_id).where(
                    table.c.participant_id.in_([row["participant_id"] for row in rows]),
                    table.c.system == system,
                    table.c.namespace == namespace,
                )
            )
        }
        audit.record_many(
            session,
            actor=actor,
            entries=[
                {"action": "participant_external_id.add", "entity": "participant_external_id",
                 "entity_id": written[row["participant_id"]],
                 "after": row | {"value": "(hidden)" if row["phi"] else row["value"]},
                 "reason": reason}
                for row in rows
            ],
        )  # fmt: skip


def participants_by_external_id(
    session: Session, *, study: Study, values: Collection[str], system: str = REDCAP,
    namespace: str = "",
) -> dict[str, int]:  # fmt: skip
    """External ID → participant id, of those of `values` the study holds."""
    found = session.execute(
        sa.select(
            col(ParticipantExternalId.value), col(ParticipantExternalId.participant_id)
        ).where(
            col(ParticipantExternalId.study_id) == study.id,
            col(ParticipantExternalId.system) == system,
            col(ParticipantExternalId.namespace) == namespace,
            col(ParticipantExternalId.value).in_(values),
        )
    )
    return {value: participant for value, participant in found}


def have_external_id(
    session: Session, participant_ids: Collection[int], *, system: str = REDCAP,
    namespace: str = "",
) -> set[int]:  # fmt: skip
    """Those of the participants that have an ID in `system` and `namespace`."""
    return set(
        session.exec(
            select(ParticipantExternalId.participant_id).where(
                col(ParticipantExternalId.participant_id).in_(participant_ids),
                ParticipantExternalId.system == system,
                ParticipantExternalId.namespace == namespace,
            )
        )
    )


def find_by_external_id(
    session: Session,
    *,
    actor: Actor,
    study: Study,
    value: str,
    system: str = REDCAP,
    namespace: str = "",
) -> Participant:
    """The participant of `study` with this ID in `system`; a PHI ID finds one only for an
    actor with identity access (for another it is not found, so nothing says it exists)."""
    found = session.exec(
        select(Participant, ParticipantExternalId.phi)
        .join(ParticipantExternalId, col(ParticipantExternalId.participant_id) == Participant.id)
        .where(
            ParticipantExternalId.study_id == study.id,
            ParticipantExternalId.system == system,
            ParticipantExternalId.namespace == namespace,
            ParticipantExternalId.value == value.strip(),
        )
    ).first()
    if found is None or (found[1] and not actor.can(Permission.read_phi)):
        shown = "(hidden)" if found is not None else unknown_code(value.strip())
        raise NotFound(
            f"no participant of {study.code} with {system} ID {shown}", field="record", value=value
        )
    return found[0]


def external_ids_of(
    session: Session, participant_ids: Collection[int], *, with_phi: bool
) -> Mapping[int, list[ExternalIdRead]]:
    """Each participant's external IDs (the PHI ones only `with_phi`)."""
    found: defaultdict[int, list[ExternalIdRead]] = defaultdict(list)
    query = (
        select(ParticipantExternalId)
        .where(col(ParticipantExternalId.participant_id).in_(participant_ids))
        .order_by(col(ParticipantExternalId.system), col(ParticipantExternalId.namespace))
    )
    if not with_phi:
        query = query.where(col(ParticipantExternalId.phi).is_(False))
    for row in session.exec(query):
        found[row.participant_id].append(ExternalIdRead.model_validate(row, from_attributes=True))
    return found


def scanned_external_id(session: Session, value: str) -> list[tuple[str, str, str]]:
    """The participants (code, study code, system) a scanned non-PHI external ID of at least
    SCANNABLE characters names, across studies."""
    if len(value) < SCANNABLE:
        return []
    return [
        (code, study, system)
        for code, study, system in session.execute(
            sa.select(col(Participant.code), col(Study.code), col(ParticipantExternalId.system))
            .join(Participant, col(Participant.id) == ParticipantExternalId.participant_id)
            .join(Study, col(Study.id) == ParticipantExternalId.study_id)
            .where(
                col(ParticipantExternalId.value) == value,
                col(ParticipantExternalId.phi).is_(False),
            )
            .order_by(col(Study.code))
            .limit(10)
        )
    ]
