"""Studies: the registry's protocols, each with its own specimen ID prefix."""

from __future__ import annotations

import re

from sqlmodel import Session, select

from biobank.db import flush
from biobank.domain.permissions import Actor, Permission, require
from biobank.errors import AlreadyExists, NotFound, ValidationError
from biobank.models import Study, StudyRead
from biobank.services import audit

STUDY_CODE = re.compile(r"^[A-Z][A-Z0-9]{1,15}$")
ID_PREFIX = re.compile(r"^[A-Z][A-Z0-9]{0,5}$")


def _read(study: Study) -> StudyRead:
    return StudyRead.model_validate(study, from_attributes=True)


def get_study(session: Session, code: str) -> Study:
    """The study with this code (any case), or NotFound."""
    study = session.exec(select(Study).where(Study.code == code.strip().upper())).first()
    if study is None:
        raise NotFound(f"no study with code {code!r}", field="study", value=code)
    return study


def add_study(
    session: Session, *, actor: Actor, code: str, title: str, id_prefix: str | None = None
) -> StudyRead:
    """Register a study; its ID prefix (the code's first six characters unless given)
    starts every accession ID of its specimens."""
    require(actor, Permission.manage_studies)
    code = code.strip().upper()
    id_prefix = (id_prefix or code[:6]).strip().upper()
    if not STUDY_CODE.match(code):
        raise ValidationError(
            "a study code is 2-16 letters or digits, starting with a letter",
            field="code",
            value=code,
        )
    if not ID_PREFIX.match(id_prefix):
        raise ValidationError(
            "a specimen ID prefix is 1-6 letters or digits, starting with a letter",
            field="id_prefix",
            value=id_prefix,
        )
    if not title.strip():
        raise ValidationError("a study needs a title", field="title", value=title)
    for field, value in (("code", code), ("id_prefix", id_prefix)):
        if session.exec(select(Study.id).where(getattr(Study, field) == value)).first():
            raise AlreadyExists(f"a study with {field} {value!r} exists", field=field, value=value)
    study = Study(code=code, title=title.strip(), id_prefix=id_prefix)
    session.add(study)
    flush(session)
    audit.record(
        session,
        actor=actor,
        action="study.add",
        entity="study",
        entity_id=study.id,
        after=audit.snapshot(study),
    )
    return _read(study)


def list_studies(session: Session, *, actor: Actor) -> list[StudyRead]:
    """Every study, by code."""
    require(actor, Permission.view_inventory)
    return [_read(s) for s in session.exec(select(Study).order_by(Study.code))]
