"""A synthetic lupus registry for demonstrations and tests: deterministic for a seed.

It goes through the same services as real data, so every demo row is validated and audited.
No real person is described; names, MRNs, consent answers and clinical values are invented.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeVar

from sqlmodel import Session

from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.phenotypes import Spec, parse_value
from biobank.domain.vocabulary import Role, Sex, WithdrawalDisposition
from biobank.errors import ValidationError
from biobank.models import Participant, User, Visit
from biobank.services.consent import DocumentRead, add_document, list_documents, record_consent
from biobank.services.custody import check_out, record_thaw
from biobank.services.lineage import aliquot
from biobank.services.overview import is_empty
from biobank.services.participants import (
    CODE_ALPHABET,
    add_participant,
    add_visit,
    new_participant_code,
)
from biobank.services.phenotype_variables import get_variable
from biobank.services.phenotypes import add_values
from biobank.services.specimens import accession
from biobank.services.storage import add_freezer
from biobank.services.studies import add_study
from biobank.services.users import add_user
from biobank.services.withdrawals import withdraw as withdraw_consent

T = TypeVar("T")

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
CONSENT_DOCUMENT = "SLE-REGISTRY"
# The registry's two forms as its REDCap project records them (both ask all five), so a
# demo database takes the sample REDCap export without conflict.
_STATEMENTS = ("FUTURE_RESEARCH", "GENETIC", "COMMERCIAL", "DATA_SHARING", "RECONTACT")
CONSENT_VERSIONS = (("2.1", date(2015, 1, 1), _STATEMENTS), ("3.0", date(2017, 1, 1), _STATEMENTS))
# Clinics used up the old forms: new enrolments signed 3.0 only from this day.
NEW_FORM_FROM = date(2018, 1, 1)
YES_RATES = {
    "FUTURE_RESEARCH": 0.98, "GENETIC": 0.85, "COMMERCIAL": 0.55, "DATA_SHARING": 0.80,
    "RECONTACT": 0.75,
}  # fmt: skip
# About 8% of the cohort: roughly half of the one in seven enrolled under version 2.1.
RESIGN_RATE = 0.55
FULL_WITHDRAWAL_RATE = 0.02
PARTIAL_WITHDRAWAL_RATE = 0.03
PARTIAL_REASONS = {
    "GENETIC": "does not want genetic research on the samples",
    "COMMERCIAL": "objects to commercial use",
    "DATA_SHARING": "wants the data kept within the institution",
    "RECONTACT": "asked not to be contacted again",
    "FUTURE_RESEARCH": "no further research use",
}
KEPT = WithdrawalDisposition.keep_no_use
FULL_REASONS = ("no longer wishes to take part", "moved away and asked to leave the registry")
# Weighted choices for the synthetic phenotype: (value, weight) pairs.
RACES = (
    ("white", 36), ("black", 32), ("asian", 14), ("aian", 2), ("nhpi", 1), ("multiple", 5),
    ("unknown", 10),
)  # fmt: skip
ETHNICITIES = (("no", 76), ("yes", 17), ("unknown", 7))
ACR_COUNTS = tuple(zip(range(4, 12), (22, 25, 20, 14, 9, 5, 3, 2), strict=True))
ANA_TITRES = (("1:80", 8), ("1:160", 20), ("1:320", 27), ("1:640", 25), ("1:1280", 20))
LN_CLASSES = (
    ("III", 22), ("IV", 30), ("V", 20), ("III+V", 9), ("IV+V", 9), ("II", 6), ("I", 2),
    ("VI", 2),
)  # fmt: skip
HCQ_DOSES = ((400, 45), (300, 20), (200, 20), (0, 15))
PRED_DOSES = ((0, 35), (2.5, 8), (5, 25), (7.5, 10), (10, 10), (15, 6), (20, 6))
ANIFROLUMAB_APPROVED = date(2021, 7, 30)
PHENOTYPE_VARIABLES = (
    "race", "ethnicity", "dx_date", "acr1997_count", "eular2019_score", "ana_titre",
    "sledai2k", "pga", "anti_dsdna", "c3", "c4", "upcr", "ln_biopsy", "ln_class", "hcq_mg",
    "pred_mg", "mmf", "belimumab", "anifrolumab",
)  # fmt: skip


def sign_in_hint(summary: DemoSummary) -> str:
    """Who a demo user signs in as; and, while the admin has no PIN (the embedded database's
    first admin), how to give it one, since the workstation signs no one in without a PIN."""
    users = ", ".join(f"{name} (PIN {pin}, {role.value})" for name, role, _, pin in DEMO_USERS)
    hint = f"sign in as {users}"
    if summary.admin_without_pin:
        hint += (
            f"; for admin tasks first set a PIN: "
            f"biobank -u {summary.admin_without_pin} user set-pin {summary.admin_without_pin}"
        )
    return hint


@dataclass(frozen=True)
class DemoSummary:
    study: str
    participants: int
    visits: int
    users: list[str]
    specimens: int = 0
    consents: int = 0
    withdrawals: int = 0
    phenotype_values: int = 0
    admin_without_pin: str | None = None


@dataclass(eq=False)
class _Member:
    """One demo participant as the later steps need them: rows held, no look-ups again."""

    person: Participant
    born: date
    enrolled: date
    visits: list[Visit]
    answers: dict[str, bool] = field(default_factory=dict)  # each statement's latest answer
    signed_on: date | None = None


def seed_demo(
    session: Session,
    *,
    actor: Actor,
    participants: int = 300,
    seed: int = 7,
    with_specimens: bool = False,
) -> DemoSummary:
    """Study, users, participants and visits, each participant's signed consent and phenotype;
    with `with_specimens`, also a freezer holding serum from the first visits (a primary and
    three aliquots each), some of it in use. A few participants withdraw afterwards, so some
    tubes are flagged and some are on the pull list."""
    for permission in (
        Permission.manage_studies, Permission.manage_consent, Permission.record_phenotypes
    ):  # fmt: skip
        require(actor, permission)
    if participants < 1:
        raise ValidationError(
            "the demo needs at least one participant", field="participants", value=participants
        )
    if not is_empty(session):
        raise ValidationError(
            "the demo cohort is loaded only into an empty database", field="database"
        )
    rng = random.Random(seed)
    # Consent and phenotype draw from a stream of their own, so the cohort and the freezer of
    # a seed stay what they were before these were added.
    records = random.Random(f"{seed}:consent-and-phenotype")
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
    cohort: list[_Member] = []
    drawn: list[tuple[str, str, date]] = []
    for _ in range(participants):
        code = _unique_code(rng, used_codes)
        sex = Sex.female if rng.random() < 0.9 else Sex.male
        birth = date(rng.randint(1948, 2004), 1, 1) + timedelta(days=rng.randrange(365))
        enrolled = date(2017, 1, 1) + timedelta(days=rng.randrange(365 * 7))
        added = add_participant(
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
        member = _Member(
            person=session.get_one(Participant, added.id), born=birth, enrolled=enrolled, visits=[]
        )
        completed = rng.choice((1, 2, 3, 3, 3))
        for label, offset in VISIT_SCHEDULE[:completed]:
            jitter = rng.randint(-10, 10) if offset else 0
            visit_date = enrolled + timedelta(days=offset + jitter)
            visit = add_visit(
                session, actor=actor, participant=code, label=label, visit_date=visit_date
            )
            member.visits.append(session.get_one(Visit, visit.id))
            drawn.append((code, label, visit_date))
        cohort.append(member)
    consents = _sign_consents(session, actor, records, cohort)
    values = _record_phenotypes(session, actor, records, cohort)
    stocked = drawn[:DEMO_SPECIMEN_VISITS] if with_specimens else []
    specimens = _stock_freezer(session, actor, rng, stocked) if stocked else 0
    holders = {code for code, _, _ in stocked}
    withdrawals = _withdraw_some(session, actor, records, cohort, holders)
    return DemoSummary(
        study=DEMO_STUDY,
        participants=participants,
        visits=len(drawn),
        users=users,
        specimens=specimens,
        consents=consents,
        withdrawals=withdrawals,
        phenotype_values=values,
        admin_without_pin=_without_pin(session, actor),
    )


def _without_pin(session: Session, actor: Actor) -> str | None:
    """The username of the loading user if they cannot sign in at a workstation yet."""
    user = session.get(User, actor.user_id) if actor.user_id is not None else None
    return actor.username if user is not None and user.pin_hash is None else None


def _pick(rng: random.Random, weighted: tuple[tuple[T, int], ...]) -> T:
    values = [value for value, _ in weighted]
    return rng.choices(values, [weight for _, weight in weighted])[0]


# --- Consent ----------------------------------------------------------------------------------


def _consent_documents(session: Session, actor: Actor) -> list[DocumentRead]:
    """The registry's consent versions, oldest first; each demo version is added unless a
    REDCap import (or an earlier demo) made it already."""
    known = {(d.code, d.version) for d in list_documents(session, actor=actor)}
    for version, effective_on, statements in CONSENT_VERSIONS:
        if (CONSENT_DOCUMENT, version) not in known:
            add_document(
                session,
                actor=actor,
                code=CONSENT_DOCUMENT,
                version=version,
                title="SLE registry and biobank consent",
                effective_on=effective_on,
                statements=statements,
            )
    documents = list_documents(session, actor=actor)
    return sorted(
        (d for d in documents if d.code == CONSENT_DOCUMENT), key=lambda d: d.effective_on
    )


def _sign(
    session: Session,
    actor: Actor,
    rng: random.Random,
    member: _Member,
    documents: list[DocumentRead],
    day: date,
) -> DocumentRead | None:
    """Sign at enrolment the form the clinic used that day (the old one until NEW_FORM_FROM),
    or again, the newest; someone signing again mostly answers as before."""
    in_effect = [d for d in documents if d.effective_on <= day]
    if not in_effect or day > date.today():
        return None
    first = not member.answers
    form = in_effect[0] if first and day < NEW_FORM_FROM else in_effect[-1]
    answers = {}
    for statement in form.statements:
        keep = statement in member.answers and rng.random() < 0.9
        yes = rng.random() < YES_RATES.get(statement, 0.8)
        answers[statement] = member.answers[statement] if keep else yes
    record_consent(
        session,
        actor=actor,
        participant=member.person.code,
        document=form.code,
        version=form.version,
        signed_on=day,
        answers=answers,
    )
    member.answers |= answers
    member.signed_on = day
    return form


def _sign_consents(
    session: Session, actor: Actor, rng: random.Random, cohort: list[_Member]
) -> int:
    """Everyone signs at enrolment (the baseline visit); some signers of an older version sign
    the newer one at a later visit."""
    documents = _consent_documents(session, actor)
    signed = 0
    for member in cohort:
        form = _sign(session, actor, rng, member, documents, member.enrolled)
        if form is None:
            continue
        signed += 1
        newer = [d for d in documents if d.effective_on > form.effective_on]
        if not newer or rng.random() >= RESIGN_RATE:
            continue
        after = max(newer[0].effective_on, member.enrolled + timedelta(days=1))  # first signed
        later = [v.visit_date for v in member.visits if v.visit_date >= after]
        day = later[0] if later else after + timedelta(days=rng.randrange(120))
        signed += _sign(session, actor, rng, member, documents, day) is not None
    return signed


def _withdraw_some(
    session: Session,
    actor: Actor,
    rng: random.Random,
    cohort: list[_Member],
    holders: set[str],
) -> int:
    """About 2% withdraw everything (to be destroyed, or kept unused) and 3% one statement,
    after their last visit; the first of each has tubes in the freezer when anyone has, so
    flagged tubes and the pull list have something to show."""
    whole = _choose(rng, cohort, round(FULL_WITHDRAWAL_RATE * len(cohort)), holders)
    left = [m for m in cohort if m not in whole]
    part = _choose(rng, left, round(PARTIAL_WITHDRAWAL_RATE * len(cohort)), holders)
    done = 0
    for index, member in enumerate(whole + part):
        last = max(d for d in (member.visits[-1].visit_date, member.signed_on) if d)
        on = min(date.today(), last + timedelta(days=rng.randint(30, 720)))
        statement: str | None
        reason: str | None
        if index < len(whole):
            statement, reason = None, rng.choice(FULL_REASONS)
            disposition = KEPT if index % 2 else WithdrawalDisposition.destroy
        else:
            granted = [s for s, yes in member.answers.items() if yes and s != "FUTURE_RESEARCH"]
            statement = rng.choice(granted or ["FUTURE_RESEARCH"])
            disposition, reason = KEPT, PARTIAL_REASONS.get(statement)
        withdraw_consent(
            session,
            actor=actor,
            participant=member.person.code,
            withdrawn_on=on,
            requested_by="participant",
            disposition=disposition,
            statement=statement,
            reason=reason,
        )
        done += 1
    return done


def _choose(
    rng: random.Random, members: list[_Member], count: int, holders: set[str]
) -> list[_Member]:
    """`count` members at random, the first of them holding tubes when any does."""
    if count <= 0:
        return []
    holding = [m for m in members if m.person.code in holders]
    first = rng.choice(holding or members)
    return [first, *rng.sample([m for m in members if m is not first], count - 1)]


# --- Phenotype ----------------------------------------------------------------------------------


def _record_phenotypes(
    session: Session, actor: Actor, rng: random.Random, cohort: list[_Member]
) -> int:
    """Participant-level facts and each visit's activity, labs and medication, every value
    checked against the data dictionary before it is stored."""
    variables = {name: get_variable(session, name) for name in PHENOTYPE_VARIABLES}
    specs = {name: Spec.of(row) for name, row in variables.items()}
    stored = 0
    for member in cohort:
        nephritis = rng.random() < 0.38
        activity = rng.uniform(0.4, 1.8)
        hcq = _pick(rng, HCQ_DOSES)
        batches: list[tuple[Visit | None, dict[str, object]]]
        batches = [(None, _participant_values(rng, member))]
        batches += [
            (visit, _visit_values(rng, visit.visit_date, nephritis, activity, hcq))
            for visit in member.visits
        ]
        values = [
            (visit, variables[name], parse_value(specs[name], raw))
            for visit, drawn in batches
            for name, raw in drawn.items()
        ]
        stored += add_values(
            session, actor=actor, participant=member.person, values=values, source="demo"
        )
    return stored


def _participant_values(rng: random.Random, member: _Member) -> dict[str, object]:
    enrolled = member.enrolled
    acr = _pick(rng, ACR_COUNTS)
    # Disease duration at enrolment: median about four years; onset not before age ten.
    onset = enrolled - timedelta(days=30 + int(rng.expovariate(1 / 2200)))
    return {
        "race": _pick(rng, RACES),
        "ethnicity": _pick(rng, ETHNICITIES),
        "dx_date": max(onset, member.born + timedelta(days=3653)),
        "acr1997_count": acr,
        "eular2019_score": min(40, max(10, round(8 + 2.6 * acr + rng.gauss(0, 4)))),
        "ana_titre": _pick(rng, ANA_TITRES),
    }


def _visit_values(
    rng: random.Random, day: date, nephritis: bool, activity: float, hcq: object
) -> dict[str, object]:
    """One visit: SLEDAI-2K skewed low, the rest loosely following it; about one visit in
    seven has a kidney biopsy, with proteinuria and induction-dose steroid."""
    biopsy = rng.random() < (0.3 if nephritis else 0.05)
    sledai = int(rng.gammavariate(1.2, 3.5 * activity))
    # Proteinuria: at a biopsy always 0.5 g/g or more; otherwise mostly below 0.25, with a
    # borderline band up to 0.5, both likelier in nephritis.
    band, (high, borderline) = rng.random(), (0.18, 0.38) if nephritis else (0.03, 0.1)
    if biopsy:
        sledai += rng.choice((4, 8, 12))  # the renal items: proteinuria, casts, haematuria
        upcr = 0.5 + rng.expovariate(1 / 1.5)
    elif band < high:
        upcr = 0.5 + rng.expovariate(1.0)
    elif band < borderline:
        upcr = rng.uniform(0.25, 0.49)
    else:
        upcr = rng.uniform(0.02, 0.24)
    sledai = min(sledai, 30)
    values: dict[str, object] = {
        "sledai2k": sledai,
        "pga": min(3.0, max(0.0, round((sledai / 5 + rng.gauss(0, 0.35)) * 2) / 2)),
        "anti_dsdna": round(min(800.0, rng.lognormvariate(math.log(12 + 6 * sledai), 0.8)), 1),
        "c3": round(max(25.0, rng.gauss(118 - 2.8 * sledai, 20)), 1),
        "c4": round(max(2.0, rng.gauss(24 - 0.8 * sledai, 7)), 1),
        "upcr": round(min(upcr, 9.0), 2),
        "ln_biopsy": biopsy,
    }
    if biopsy:
        values["ln_class"] = _pick(rng, LN_CLASSES)
    values |= {
        "hcq_mg": hcq if rng.random() < 0.85 else _pick(rng, HCQ_DOSES),
        "pred_mg": rng.choice((20, 40, 60)) if biopsy else _pick(rng, PRED_DOSES),
        "mmf": rng.random() < (0.65 if nephritis else 0.2),
        "belimumab": rng.random() < 0.12,
        "anifrolumab": day >= ANIFROLUMAB_APPROVED and rng.random() < 0.07,
    }
    return values


# --- Freezer ---------------------------------------------------------------------------------


def _stock_freezer(
    session: Session, actor: Actor, rng: random.Random, stocked: list[tuple[str, str, date]]
) -> int:
    """One -80 °C freezer; serum of the visits `stocked`, processed within one to three hours
    at room temperature, split into aliquots; a few checked out or thawed."""
    freezer = add_freezer(
        session, actor=actor, name="-80 #1", shelves=2, racks_per_shelf=2, boxes_per_rack=4
    )
    made = 0
    for code, label, day in stocked:
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
