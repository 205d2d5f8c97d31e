"""A realistic inventory of `size` specimens, deterministic for a seed, built fast.

The schema comes from the migrations and the first rows (admin, a technician, study SLE) from
the services. The bulk (participants, visits, one freezer, specimens, their `accessioned`
events and every audit entry) goes in with SQLAlchemy Core executemany, in batches, as rows
the services would have written: storage units take their sort key and path from
`biobank.services.storage` (checked against a freezer the service builds, every run), and
the audit entries are chained by `audit.record_many`.

Each participant has phenotype values from the lupus core (race, ethnicity, diagnosis date,
ACR 1997 criteria; SLEDAI-2K, C3, C4, anti-dsDNA and UPCR at most visits, the nephritis class
at some flares), each checked by `phenotypes.parse_value`, and one signed consent document
with an answer to every statement; a few participants have withdrawn (everything, or genetic
research alone), with their specimens flagged as `withdrawals.withdraw` flags them.

The freezer fills front to back: every box is full except those at the back, which are about
30% free, so about 3% of all positions are free and the first free one is deep in the
freezer; allocation cannot find room in the first box it looks at.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from biobank import migrate
from biobank.bootstrap import bootstrap
from biobank.db import uow
from biobank.domain.identifiers import format_specimen_id, parse_specimen_id
from biobank.domain.permissions import Actor
from biobank.domain.phenotypes import Spec, parse_value
from biobank.domain.positions import fill_sequence
from biobank.domain.specimen_values import sprec_code_for
from biobank.domain.vocabulary import FillOrder, PositionLabels, Role, WithdrawalDisposition
from biobank.models import (
    ConsentAnswer,
    ConsentDocument,
    ConsentStatement,
    ConsentWithdrawal,
    Participant,
    ParticipantConsent,
    PhenotypeValue,
    PhenotypeVariable,
    Specimen,
    SpecimenEvent,
    StorageUnit,
    Visit,
    utcnow,
)
from biobank.services import audit, specimens, storage
from biobank.services.consent import add_document
from biobank.services.demo import VISIT_SCHEDULE
from biobank.services.identity import actor_for
from biobank.services.participants import CODE_ALPHABET, new_participant_code
from biobank.services.specimen_ids import COUNTER
from biobank.services.specimen_read import SpecimenRead
from biobank.services.studies import add_study
from biobank.services.users import add_user

STUDY = "SLE"
FREEZER = "-80 #1"
WORKSTATION = "benchmark"
TECHNICIAN = "bench"
SPECIMENS_PER_PARTICIPANT = 20
BOX_GRID = (9, 9)
BOXES_PER_RACK = 12
RACKS_PER_SHELF = 25
FREE_FRACTION = 0.03  # of all positions
MIN_FREE = 300  # so that a small inventory still has room for every benchmark
BACK_BOX_FREE = 24  # free positions in each box at the back of the freezer (about 30%)
TEMPERATURE = "-80C"
TYPES = ("SER", "PL1", "SER", "BUF", "URN")
CONTAINERS = {"SER": "SST", "PL1": "PED", "BUF": "PED", "URN": "PPS"}
PROCESSED_AFTER = timedelta(hours=2)
QUANTITY_UL = 500.0
BATCH = 5_000
PROGRESS_EVERY = 100_000
TREE_BUILT = datetime(2015, 1, 1, tzinfo=UTC)
CONSENT_DOCUMENT, CONSENT_VERSION = "SLE-REGISTRY", "1"
CONSENT_EFFECTIVE = date(2015, 1, 1)
YES_SHARE = {  # of participants answering yes, per statement the document asks
    "FUTURE_RESEARCH": 0.96,
    "GENETIC": 0.85,
    "COMMERCIAL": 0.55,
    "DATA_SHARING": 0.8,
    "RECONTACT": 0.9,
}
WITHDRAWN_ALL = 0.02  # of participants, after their last visit
WITHDRAWN_GENETIC = 0.01
LAB_VISITS = 0.92  # visits with a lab panel and a SLEDAI-2K
FLARES = 0.2  # of those, visits during a flare
BIOPSIED_FLARES = 0.4  # of flares, with a nephritis class
PHENOTYPE_SOURCE = "benchmark"
RACES = {"white": 40, "black": 30, "asian": 15, "multiple": 5, "aian": 2, "nhpi": 1, "unknown": 7}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Dataset:
    size: int
    freezer: str  # barcode
    boxes: int
    first_free_box: int  # 1-based, in freezer order
    free_positions: int
    last_serial: int
    participants: tuple[str, ...]  # codes of those new tubes may come from (not withdrawn)
    technician: Actor

    def random_accession_ids(self, count: int, rng: random.Random) -> list[str]:
        """Existing accession IDs, drawn at random."""
        ids: list[str] = []
        while len(ids) < count:
            accession = format_specimen_id(STUDY, rng.randint(1, self.last_serial))
            if accession is not None:
                ids.append(accession)
        return ids


@dataclass(frozen=True)
class Layout:
    """How many boxes, which positions stay free, and where."""

    boxes: int
    placed: int
    holes: dict[int, frozenset[tuple[int, int]]]  # box index (0-based) → free positions

    @classmethod
    def for_size(cls, size: int, rng: random.Random) -> Layout:
        per_box = BOX_GRID[0] * BOX_GRID[1]
        boxes = math.ceil(size / per_box)
        capacity = boxes * per_box
        placed = min(size, capacity - max(MIN_FREE, round(capacity * FREE_FRACTION)))
        free = capacity - placed
        back = min(boxes, math.ceil(free / BACK_BOX_FREE))
        positions = list(fill_sequence(*BOX_GRID, FillOrder.row_major))
        holes = {}
        for n, box in enumerate(range(boxes - back, boxes)):
            count = free // back + (n < free % back)
            holes[box] = frozenset(rng.sample(positions, count))
        return cls(boxes, placed, holes)

    def slots(self, box_ids: list[int]) -> Iterator[tuple[int, int, int]]:
        """The occupied positions (box id, row, col) in freezer order."""
        positions = list(fill_sequence(*BOX_GRID, FillOrder.row_major))
        for index, box_id in enumerate(box_ids):
            holes = self.holes.get(index, frozenset())
            yield from ((box_id, r, c) for r, c in positions if (r, c) not in holes)


def build(engine: Engine, *, size: int, seed: int, progress: Progress) -> Dataset:
    """Migrate an empty database and fill it with `size` specimens."""
    rng = random.Random(seed)
    migrate.upgrade(engine)
    bootstrap(engine)
    with uow(engine) as session:
        admin = actor_for(session, username="admin", workstation=WORKSTATION)
        add_user(session, actor=admin, username=TECHNICIAN, role=Role.technician)
        study_id = add_study(session, actor=admin, code=STUDY, title="Lupus registry").id
        add_document(
            session, actor=admin, code=CONSENT_DOCUMENT, version=CONSENT_VERSION,
            title="Lupus registry consent", effective_on=CONSENT_EFFECTIVE,
            statements=list(YES_SHARE),
        )  # fmt: skip
    with uow(engine) as session:
        technician = actor_for(session, username=TECHNICIAN, workstation=WORKSTATION)
    check_unit_rows(engine, admin)

    layout = Layout.for_size(size, rng)
    units = list(freezer_units(1, boxes=layout.boxes, created_at=TREE_BUILT))
    box_ids = [u.id for u in units if u.holds_specimens]
    occupied = dict.fromkeys(box_ids, 0)
    for box_id, _, _ in layout.slots(box_ids):
        occupied[box_id] += 1
    for unit in units:
        if unit.holds_specimens:
            unit.free_slots -= occupied[unit.id]
    _insert(engine, admin, "storage.add", (audit.snapshot(u) for u in units), progress)

    participants = _participants(rng, study_id, math.ceil(size / SPECIMENS_PER_PARTICIPANT))
    linked = random.Random(f"{seed}:phenotypes and consent")
    consent = Consent.plan(engine, linked, participants, admin)
    _insert(engine, admin, "participant.add", participants, progress)
    visits = list(_visits(participants))
    _insert(engine, admin, "visit.add", visits, progress)
    values = _phenotype_values(engine, linked, participants, visits)
    _insert(engine, admin, "phenotype_value.add", values, progress)
    _insert(engine, admin, "consent.sign", consent.signatures, progress, children=consent.answers)
    _insert(engine, admin, "consent.withdraw", consent.withdrawals, progress)

    stored = set(rng.sample(range(size), layout.placed))
    slots = layout.slots(box_ids)
    locations = (next(slots) if n in stored else (None, None, None) for n in range(size))
    tubes = (consent.flag(tube) for tube in _specimens(size, visits, locations))
    last = _insert(
        engine, technician, "specimen.accessioned", tubes, progress,
        children=lambda batch: consent.events(batch, technician, admin),
    )  # fmt: skip
    last_serial = parse_specimen_id(last["accession_id"]).serial
    _finish(engine, last_serial)
    return Dataset(
        size=size,
        freezer=units[0].barcode,
        boxes=layout.boxes,
        first_free_box=min(layout.holes) + 1,
        free_positions=layout.boxes * BOX_GRID[0] * BOX_GRID[1] - layout.placed,
        last_serial=last_serial,
        participants=tuple(p["code"] for p in participants if p["status"] == "active"),
        technician=technician,
    )


# --- Storage ------------------------------------------------------------------------------


def freezer_units(
    first_id: int,
    *,
    boxes: int,
    created_at: datetime,
    racks_per_shelf: int = RACKS_PER_SHELF,
    boxes_per_rack: int = BOXES_PER_RACK,
) -> Iterator[StorageUnit]:
    """The units `storage.add_freezer` would make for `boxes` boxes, with the ids it would
    give them (depth first from `first_id`); the last rack and shelf may be partly empty."""
    racks = math.ceil(boxes / boxes_per_rack)
    shelves = math.ceil(racks / racks_per_shelf)
    ids = itertools.count(first_id)
    freezer = _unit(next(ids), None, "freezer", FREEZER, None, (shelves, 1), created_at)
    yield freezer
    made = 0
    for s in range(1, shelves + 1):
        shelf = _unit(
            next(ids), freezer, "shelf", f"Shelf {s}", (s, 1), (1, racks_per_shelf), created_at
        )
        yield shelf
        for r in range(1, racks_per_shelf + 1):
            if made == boxes:
                return
            rack = _unit(
                next(ids), shelf, "rack", f"Rack {r}", (1, r), (boxes_per_rack, 1), created_at
            )
            yield rack
            for b in range(1, min(boxes_per_rack, boxes - made) + 1):
                yield _unit(next(ids), rack, "box", f"Box {b}", (b, 1), BOX_GRID, created_at)
                made += 1


def _unit(
    unit_id: int,
    parent: StorageUnit | None,
    kind: str,
    name: str,
    position: tuple[int, int] | None,
    grid: tuple[int, int],
    created_at: datetime,
) -> StorageUnit:
    holds = kind in storage.SPECIMEN_HOLDERS
    unit = StorageUnit(
        id=unit_id,
        parent_id=parent.id if parent else None,
        kind=kind,
        name=name,
        barcode=f"{storage.BARCODE_PREFIX[kind]}{unit_id:06d}",
        grid_rows=grid[0],
        grid_cols=grid[1],
        position_labels=PositionLabels.letter_number,
        position_row=position[0] if position else None,
        position_col=position[1] if position else None,
        temperature_class=TEMPERATURE,
        holds_specimens=holds,
        fill_order=FillOrder.row_major,
        free_slots=grid[0] * grid[1] if holds else None,
        created_at=created_at,
    )
    storage.place_in_tree(unit, parent)
    return unit


def check_unit_rows(engine: Engine, admin: Actor) -> None:
    """Fail unless `freezer_units` makes exactly the rows `storage.add_freezer` makes: the
    service builds a small freezer (rolled back) and every column but the time is compared."""
    with Session(engine) as session:
        made = storage.add_freezer(
            session, actor=admin, name=FREEZER, shelves=1, racks_per_shelf=2, boxes_per_rack=2
        )
        query = select(StorageUnit).where(StorageUnit.id >= made.id).order_by(StorageUnit.id)
        theirs = [audit.snapshot(u) for u in session.exec(query)]
        session.rollback()
    ours = [
        audit.snapshot(u)
        for u in freezer_units(
            made.id, boxes=4, created_at=TREE_BUILT, racks_per_shelf=2, boxes_per_rack=2
        )
    ]
    for service_row, our_row in itertools.zip_longest(theirs, ours, fillvalue={}):
        differ = {
            key: (service_row.get(key), our_row.get(key))
            for key in service_row.keys() | our_row.keys()
            if key != "created_at" and service_row.get(key) != our_row.get(key)
        }
        if differ:
            raise AssertionError(f"dataset storage rows differ from the service's: {differ}")


# --- Participants and visits --------------------------------------------------------------


def _participants(rng: random.Random, study_id: int, count: int) -> list[dict[str, Any]]:
    # Distinct pseudo-random codes: index × an odd multiplier prime to 13 is a permutation.
    space = len(CODE_ALPHABET) ** 6
    offset = rng.randrange(space)
    rows = []
    for n in range(count):
        value, token = (n * 7_919_081 + offset) % space, ""
        for _ in range(6):
            value, digit = divmod(value, len(CODE_ALPHABET))
            token += CODE_ALPHABET[digit]
        enrolled = date(2015, 1, 5) + timedelta(days=rng.randrange(3000))
        rows.append(
            {
                "id": n + 1,
                "study_id": study_id,
                "code": new_participant_code(STUDY, token),
                "sex": "female" if rng.random() < 0.9 else "male",
                "birth_year": rng.randint(1950, 2000),
                "enrolled_on": enrolled,
                "status": "active",
                "created_at": datetime.combine(enrolled, time(9), UTC),
            }
        )
    return rows


def _visits(participants: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    ids = itertools.count(1)
    for participant in participants:
        for label, days in VISIT_SCHEDULE:
            day = participant["enrolled_on"] + timedelta(days=days)
            yield {
                "id": next(ids),
                "participant_id": participant["id"],
                "label": label,
                "visit_date": day,
                "created_at": datetime.combine(day, time(9), UTC),
            }


# --- Phenotypes and consent ---------------------------------------------------------------


def _phenotype_values(
    engine: Engine,
    rng: random.Random,
    participants: list[dict[str, Any]],
    visits: list[dict[str, Any]],
) -> Iterator[dict[str, Any]]:
    """Each participant's values, then each of their visits', as `phenotypes.add_values`
    stores them (a visit's values observed on its date)."""
    with Session(engine) as session:
        variables = {v.name: (v.id, Spec.of(v)) for v in session.exec(select(PhenotypeVariable))}
    ids = itertools.count(1)
    per_participant = len(VISIT_SCHEDULE)
    for person in participants:
        own = visits[(person["id"] - 1) * per_participant : person["id"] * per_participant]
        recorded = person["created_at"]
        for visit, found in [(None, _participant_phenotypes(rng, person))] + [
            (v, _visit_phenotypes(rng)) for v in own
        ]:
            for name, raw in found.items():
                variable_id, spec = variables[name]
                stored = parse_value(spec, raw)
                yield {
                    "id": next(ids),
                    "participant_id": person["id"],
                    "visit_id": visit["id"] if visit else None,
                    "variable_id": variable_id,
                    "instance": 0,
                    "observed_on": visit["visit_date"] if visit else None,
                    "value_number": stored.number,
                    "value_text": stored.text,
                    "value_date": stored.day,
                    "source": PHENOTYPE_SOURCE,
                    "recorded_at": visit["created_at"] if visit else recorded,
                }


def _participant_phenotypes(rng: random.Random, person: dict[str, Any]) -> dict[str, Any]:
    return {
        "race": rng.choices(list(RACES), weights=list(RACES.values()))[0],
        "ethnicity": rng.choices(("no", "yes", "unknown"), weights=(80, 17, 3))[0],
        "dx_date": person["enrolled_on"] - timedelta(days=rng.randrange(15 * 365)),
        "acr1997_count": rng.randint(4, 11),
    }


def _visit_phenotypes(rng: random.Random) -> dict[str, Any]:
    """A lab panel and SLEDAI-2K at most visits; flares run higher, with a nephritis class at
    some of them (a biopsy)."""
    if rng.random() >= LAB_VISITS:
        return {}
    flare = rng.random() < FLARES
    found = {
        "sledai2k": rng.choice((8, 10, 12, 16, 20) if flare else (0, 2, 2, 4, 4, 6)),
        "c3": round(max(15.0, rng.gauss(70 if flare else 105, 20)), 1),
        "c4": round(max(2.0, rng.gauss(10 if flare else 20, 6)), 1),
        "anti_dsdna": round(rng.lognormvariate(4.5 if flare else 2.5, 1.0), 1),
        "upcr": round(rng.lognormvariate(-0.3 if flare else -2.0, 0.8), 2),
    }
    if flare and rng.random() < BIOPSIED_FLARES:
        found["ln_class"] = rng.choice(("II", "III", "IV", "IV", "V", "III+V", "IV+V"))
    return found


@dataclass(frozen=True)
class Consent:
    """One signature per participant (its id theirs) answering every statement of the
    registry's document, and the withdrawals; `plan` marks the withdrawn participants."""

    signatures: list[dict[str, Any]]
    answers_given: dict[int, dict[int, bool]]  # signature id → statement id → answer
    withdrawals: list[dict[str, Any]]
    withdrawal_of: dict[int, dict[str, Any]]  # participant id → their withdrawal row
    statements: dict[int, str]  # id → code

    @classmethod
    def plan(
        cls,
        engine: Engine,
        rng: random.Random,
        participants: list[dict[str, Any]],
        admin: Actor,
    ) -> Consent:
        with Session(engine) as session:
            ids = dict(session.exec(select(ConsentStatement.code, ConsentStatement.id)).all())
            document_id = session.exec(
                select(ConsentDocument.id).where(ConsentDocument.code == CONSENT_DOCUMENT)
            ).one()
        signatures, answers, withdrawals, withdrawal_of = [], {}, [], {}
        for person in participants:
            signed = person["enrolled_on"]
            signatures.append(
                {
                    "id": person["id"],
                    "participant_id": person["id"],
                    "document_id": document_id,
                    "signed_on": signed,
                    "recorded_by_id": admin.user_id,
                    "created_at": datetime.combine(signed, time(9, 30), UTC),
                }
            )
            answers[person["id"]] = {ids[s]: rng.random() < share for s, share in YES_SHARE.items()}
            draw = rng.random()
            if draw >= WITHDRAWN_ALL + WITHDRAWN_GENETIC:
                continue
            everything = draw < WITHDRAWN_ALL
            withdrawn_on = signed + timedelta(days=400 + rng.randrange(700))
            row = {
                "id": len(withdrawals) + 1,
                "participant_id": person["id"],
                "statement_id": None if everything else ids["GENETIC"],
                "withdrawn_on": withdrawn_on,
                "requested_by": "the participant",
                "disposition": WithdrawalDisposition.keep_no_use,
                "reason": None,
                "recorded_by_id": admin.user_id,
                "created_at": datetime.combine(withdrawn_on, time(11), UTC),
            }
            withdrawals.append(row)
            withdrawal_of[person["id"]] = row
            if everything:
                person["status"] = "withdrawn"
        return cls(signatures, answers, withdrawals, withdrawal_of, {v: k for k, v in ids.items()})

    def answers(self, batch: list[dict[str, Any]]) -> dict[sa.Table, list[dict[str, Any]]]:
        rows = [
            {"participant_consent_id": s["id"], "statement_id": statement, "answer": answer}
            for s in batch
            for statement, answer in self.answers_given[s["id"]].items()
        ]
        return {ConsentAnswer.__table__: rows}

    def flag(self, specimen: dict[str, Any]) -> dict[str, Any]:
        """A withdrawn participant's tube as `withdrawals.withdraw` leaves it: flagged, and
        changed once more."""
        withdrawal = self.withdrawal_of.get(specimen["participant_id"])
        if withdrawal is None:
            return specimen
        return specimen | {
            "consent_withdrawal_id": withdrawal["id"],
            "version": specimen["version"] + 1,
            "updated_at": withdrawal["created_at"],
        }

    def events(
        self, batch: list[dict[str, Any]], technician: Actor, admin: Actor
    ) -> dict[sa.Table, list[dict[str, Any]]]:
        """Each tube's `accessioned` event and, when flagged, its `consent_withdrawn` one."""
        rows = []
        for specimen in batch:
            rows.append(event_row(specimen["id"], specimen, technician))
            if specimen["consent_withdrawal_id"] is None:
                continue
            withdrawal = self.withdrawal_of[specimen["participant_id"]]
            statement = self.statements.get(withdrawal["statement_id"], "ALL")
            rows.append(
                event_row(specimen["id"], specimen, admin)
                | {
                    "event_type": "consent_withdrawn",
                    "occurred_at": withdrawal["created_at"],
                    "to_box_id": None,
                    "to_row": None,
                    "to_col": None,
                    "quantity_change": None,
                    "status_before": specimen["status"],
                    "details": {
                        "statement": statement,
                        "disposition": withdrawal["disposition"].value,
                        "withdrawn_on": withdrawal["withdrawn_on"].isoformat(),
                    },
                }
            )
        return {SpecimenEvent.__table__: rows}


# --- Specimens ----------------------------------------------------------------------------


def _specimens(
    size: int, visits: list[dict[str, Any]], locations: Iterator[tuple]
) -> Iterator[dict[str, Any]]:
    issued = (format_specimen_id(STUDY, serial) for serial in itertools.count(1))
    accession_ids = (a for a in issued if a is not None)  # serials checked by `*` are skipped
    per_participant = len(VISIT_SCHEDULE)
    for n, accession_id, location in zip(range(size), accession_ids, locations, strict=False):
        person, tube = divmod(n, SPECIMENS_PER_PARTICIPANT)
        visit = visits[person * per_participant + tube % per_participant]
        collected = datetime.combine(visit["visit_date"], time(8, n % 60), UTC)
        yield {"id": n + 1} | specimen_row(
            accession_id=accession_id,
            participant_id=visit["participant_id"],
            visit_id=visit["id"],
            specimen_type=TYPES[n % len(TYPES)],
            collected_at=collected,
            received_at=collected + timedelta(hours=1),
            location=location,
        )


def specimen_row(
    *,
    accession_id: str,
    participant_id: int,
    visit_id: int,
    specimen_type: str,
    collected_at: datetime,
    received_at: datetime,
    location: tuple[int | None, int | None, int | None],
) -> dict[str, Any]:
    """The row (all columns but the id) `specimens.accession` writes for a tube of 500 µL
    processed two hours after collection at room temperature."""
    box_id, row, col = location
    return {
        "accession_id": accession_id,
        "legacy_id": None,
        "participant_id": participant_id,
        "visit_id": visit_id,
        "parent_id": None,
        "kind": "primary",
        "specimen_type": specimen_type,
        "container_type": CONTAINERS[specimen_type],
        "sprec_code": _fluid_code(specimen_type),
        "collected_at": collected_at,
        "received_at": received_at,
        "processed_at": collected_at + PROCESSED_AFTER,
        "frozen_at": None,
        "precentrifugation_temperature": "RT",
        "postcentrifugation_temperature": None,
        "initial_quantity": QUANTITY_UL,
        "quantity": QUANTITY_UL,
        "unit": "uL",
        "status": "available",
        "freeze_thaw_count": 0,
        "checked_out_at": None,
        "minutes_out": 0,
        "box_id": box_id,
        "position_row": row,
        "position_col": col,
        "notes": None,
        "consent_withdrawal_id": None,
        "version": 1,
        "created_at": received_at,
        "updated_at": received_at,
    }


@cache
def _fluid_code(specimen_type: str) -> str | None:
    return sprec_code_for(
        given=None,
        specimen_type=specimen_type,
        container=CONTAINERS[specimen_type],
        collected_at=TREE_BUILT,
        processed_at=TREE_BUILT + PROCESSED_AFTER,
        frozen_at=None,
        precentrifugation_temperature="RT",
        postcentrifugation_temperature=None,
        centrifugation=None,
        second_centrifugation=None,
        storage=None,
    )


def event_row(specimen_id: int, specimen: dict[str, Any], actor: Actor) -> dict[str, Any]:
    """The custody event (all columns but the id) `specimens.accession` records."""
    return {
        "specimen_id": specimen_id,
        "event_type": "accessioned",
        "occurred_at": specimen["received_at"],
        "actor_id": actor.user_id,
        "workstation": actor.workstation,
        "from_box_id": None,
        "from_row": None,
        "from_col": None,
        "to_box_id": specimen["box_id"],
        "to_row": specimen["position_row"],
        "to_col": specimen["position_col"],
        "quantity_change": specimen["quantity"],
        "status_before": None,
        "status_after": specimen["status"],
        "reason": None,
        "details": None,
    }


# --- Writing ------------------------------------------------------------------------------

TABLES = {
    "storage.add": StorageUnit.__table__,
    "participant.add": Participant.__table__,
    "visit.add": Visit.__table__,
    "phenotype_value.add": PhenotypeValue.__table__,
    "consent.sign": ParticipantConsent.__table__,
    "consent.withdraw": ConsentWithdrawal.__table__,
    "specimen.accessioned": Specimen.__table__,
}
Children = Callable[[list[dict[str, Any]]], dict[sa.Table, list[dict[str, Any]]]]


def _insert(
    engine: Engine,
    actor: Actor,
    action: str,
    rows: Iterable[dict[str, Any]],
    progress: Progress,
    *,
    children: Children | None = None,
) -> dict[str, Any] | None:
    """Insert rows (with their ids) in batches, each batch with its audit entries and the
    rows `children` gives for it (without ids: custody events, consent answers); returns the
    last row written."""
    table = TABLES[action]
    columns = set(table.c.keys())
    done, last = 0, None
    rows = iter(rows)
    while batch := list(itertools.islice(rows, BATCH)):
        if set(batch[0]) != columns:
            wrong = set(batch[0]) ^ columns
            raise AssertionError(f"{table.name} rows miss or add columns: {wrong}")
        with uow(engine) as session:
            session.execute(sa.insert(table), batch)
            for child, child_rows in (children(batch) if children else {}).items():
                session.execute(sa.insert(child), child_rows)
            audit.record_many(
                session,
                actor=actor,
                entries=(
                    {"action": action, "entity": table.name, "entity_id": r["id"], "after": r}
                    for r in batch
                ),
            )
        done, last = done + len(batch), batch[-1]
        if done % PROGRESS_EVERY < BATCH:
            progress(f"{table.name}: {done:,} rows so far")
    progress(f"{table.name}: {done:,} rows")
    return last


def _finish(engine: Engine, last_serial: int) -> None:
    """Serials continue after the dataset's; PostgreSQL's id sequences too, and its planner
    gets statistics, as autovacuum would give it."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT setval('specimen_serial', :n)"), {"n": last_serial})
            for table in TABLES.values():
                connection.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"(SELECT max(id) FROM {table.name}))"
                    )
                )
        else:
            connection.execute(
                sa.text(
                    "INSERT INTO serial_counter (name, next_value) VALUES (:name, :next) "
                    "ON CONFLICT (name) DO UPDATE SET next_value = :next"
                ),
                {"name": COUNTER, "next": last_serial + 1},
            )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("ANALYZE")


def accession_tube(
    session: Session, *, actor: Actor, participant: str, destination: str
) -> SpecimenRead:
    """The benchmarks' accession: a serum tube from a baseline visit, placed automatically."""
    now = utcnow()
    return specimens.accession(
        session,
        actor=actor,
        participant=participant,
        visit="baseline",
        specimen_type="SER",
        container_type=CONTAINERS["SER"],
        quantity=QUANTITY_UL,
        unit="uL",
        collected_at=now - PROCESSED_AFTER - timedelta(hours=1),
        processed_at=now - timedelta(hours=1),
        precentrifugation_temperature="RT",
        destination=destination,
    )
