"""A synthetic lupus registry for demonstrations and tests: deterministic for a seed.

It goes through the same services as real data, so every demo row is validated and audited.
No real person is described; names and MRNs are invented.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlmodel import Session, func, select

from biobank.errors import ValidationError
from biobank.models import Participant, Role, Sex, Study
from biobank.permissions import Actor, Permission, require
from biobank.services.custody import check_out, record_thaw
from biobank.services.participants import (
    CODE_ALPHABET,
    add_participant,
    add_visit,
    new_participant_code,
)
from biobank.services.specimens import accession, aliquot
from biobank.services.storage import add_freezer
from biobank.services.studies import add_study
from biobank.services.users import add_user

DEMO_STUDY = "SLE"
DEMO_USERS = (
    ("tech", Role.technician, "Demo Technician", "1111"),
    ("pi", Role.pi, "Demo Investigator", "2222"),
)
DEMO_SPECIMEN_VISITS = 120  # 480 tubes: a populated freezer without a long wait
VISIT_SCHEDULE = (("baseline", 0), ("month 6", 182), ("month 12", 365))
GIVEN = (
    "Ana", "Maria", "Grace", "Aisha", "Mei", "Sofia", "Priya", "Olivia", "Fatima", "Lucia",
    "Chloe", "Amara", "Keiko", "Zara", "Elena", "James", "David", "Kwame", "Luis", "Omar",
)  # fmt: skip
FAMILY = (
    "Garcia", "Nguyen", "Okafor", "Smith", "Patel", "Kim", "Rossi", "Haddad", "Johnson",
    "Silva", "Chen", "Mensah", "Lopez", "Ivanova", "Brown", "Tanaka", "Diaz", "Cohen",
)  # fmt: skip


def sign_in_hint() -> str:
    users = ", ".join(f"{name} (PIN {pin}, {role.value})" for name, role, _, pin in DEMO_USERS)
    return f"sign in as {users}"


@dataclass(frozen=True)
class DemoSummary:
    study: str
    participants: int
    visits: int
    users: list[str]
    specimens: int = 0


def is_empty(session: Session) -> bool:
    """No study and no participant yet: the state the demo may be loaded into."""
    studies = session.exec(select(func.count()).select_from(Study)).one()
    participants = session.exec(select(func.count()).select_from(Participant)).one()
    return studies == 0 and participants == 0


def seed_demo(
    session: Session,
    *,
    actor: Actor,
    participants: int = 300,
    seed: int = 7,
    with_specimens: bool = False,
) -> DemoSummary:
    """Study, users, participants and visits; with `with_specimens`, also a freezer holding
    serum from the first visits (a primary and three aliquots each), some of it in use."""
    require(actor, Permission.manage_studies)
    if participants < 1:
        raise ValidationError(
            "the demo needs at least one participant", field="participants", value=participants
        )
    if not is_empty(session):
        raise ValidationError(
            "the demo cohort is loaded only into an empty database", field="database"
        )
    rng = random.Random(seed)
    add_study(
        session,
        actor=actor,
        code=DEMO_STUDY,
        title="Lupus Specimen and Matched Phenotype Linked Evaluation (demo)",
        id_prefix=DEMO_STUDY,
    )
    users = []
    for username, role, name, pin in DEMO_USERS:
        add_user(session, actor=actor, username=username, role=role, display_name=name, pin=pin)
        users.append(username)

    used_codes: set[str] = set()
    visits = 0
    drawn: list[tuple[str, str, date]] = []
    for _ in range(participants):
        code = _unique_code(rng, used_codes)
        sex = Sex.female if rng.random() < 0.9 else Sex.male
        birth = date(rng.randint(1948, 2004), 1, 1) + timedelta(days=rng.randrange(365))
        enrolled = date(2017, 1, 1) + timedelta(days=rng.randrange(365 * 7))
        add_participant(
            session,
            actor=actor,
            study=DEMO_STUDY,
            code=code,
            sex=sex,
            enrolled_on=enrolled,
            mrn=f"MRN{rng.randrange(10**7):07d}{len(used_codes):05d}",
            given_name=rng.choice(GIVEN),
            family_name=rng.choice(FAMILY),
            date_of_birth=birth,
        )
        completed = rng.choice((1, 2, 3, 3, 3))
        for label, offset in VISIT_SCHEDULE[:completed]:
            jitter = rng.randint(-10, 10) if offset else 0
            visit_date = enrolled + timedelta(days=offset + jitter)
            add_visit(session, actor=actor, participant=code, label=label, visit_date=visit_date)
            visits += 1
            drawn.append((code, label, visit_date))
    specimens = _stock_freezer(session, actor, rng, drawn) if with_specimens else 0
    return DemoSummary(
        study=DEMO_STUDY,
        participants=participants,
        visits=visits,
        users=users,
        specimens=specimens,
    )


def _stock_freezer(
    session: Session, actor: Actor, rng: random.Random, drawn: list[tuple[str, str, date]]
) -> int:
    """One -80 °C freezer; serum of the first DEMO_SPECIMEN_VISITS visits, processed within
    one to three hours at room temperature, split into aliquots; a few checked out or thawed."""
    freezer = add_freezer(
        session, actor=actor, name="-80 #1", shelves=2, racks_per_shelf=2, boxes_per_rack=4
    )
    made = 0
    for code, label, day in drawn[:DEMO_SPECIMEN_VISITS]:
        collected = datetime.combine(day, time(9, rng.randrange(60)), tzinfo=UTC)
        primary = accession(
            session,
            actor=actor,
            participant=code,
            visit=label,
            specimen_type="SER",
            container_type="SST",
            quantity=2000,
            unit="uL",
            collected_at=collected,
            received_at=collected + timedelta(minutes=30),
            processed_at=collected + timedelta(minutes=rng.randrange(60, 180)),
            precentrifugation_temperature="RT",
            destination=freezer.barcode,
        )
        tubes = aliquot(
            session,
            actor=actor,
            parent=primary.accession_id,
            count=3,
            volume=400,
            destination=freezer.barcode,
        )
        made += 1 + len(tubes)
        if rng.random() < 0.1:
            record_thaw(session, actor=actor, accession=tubes[0].accession_id)
        if rng.random() < 0.05:
            check_out(session, actor=actor, accession=tubes[-1].accession_id, reason="ELISA")
    return made


def _unique_code(rng: random.Random, used: set[str]) -> str:
    while True:
        token = "".join(rng.choice(CODE_ALPHABET) for _ in range(6))
        code = new_participant_code(DEMO_STUDY, token)
        if code not in used:
            used.add(code)
            return code
