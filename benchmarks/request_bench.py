"""A specimen request at bank scale: its pick list built, and its tubes picked scan by scan.

A request of `lines` tubes (5,000 at full size) drawn at random among the inventory's available,
placed tubes whose consent allows the request, made, submitted and approved through the
services (not timed). Timed: `request_picks.pick_list` (freezer order, consent asked today for
every tube), beside a raw SELECT of the same tubes in the same order; then `request_picks.pick`
in a unit of work per scan, as the workstation runs it, interleaved scan by scan with a raw
UPDATE marking another tube of the list picked.
"""

from __future__ import annotations

import random
import time
from contextlib import closing
from datetime import date, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from benchmarks.databases import BenchDatabase
from benchmarks.dataset import Dataset
from benchmarks.measure import Result, median, p99
from biobank.db import uow
from biobank.services import request_picks, request_review, requests
from biobank.services.consent_checks import consent_decisions
from biobank.services.identity import actor_for
from biobank.services.requests import LineWant, RequestDraft
from biobank.services.specimen_read import get_specimen

LINES, QUICK_LINES = 5_000, 200
LIST_GOAL_SECONDS = 2.0
PICK_GOAL_SECONDS = 0.050
LIST_RUNS = 3
USES = ["FUTURE_RESEARCH"]
RAW_LIST = (
    "SELECT s.accession_id, u.barcode, s.position_row, s.position_col "
    "FROM specimen_reservation r JOIN specimen s ON s.id = r.specimen_id "
    "LEFT JOIN storage_unit u ON u.id = s.box_id "
    "WHERE r.request_id = ? AND r.ended_at IS NULL "
    "ORDER BY u.sort_key, s.position_row, s.position_col, s.accession_id"
)
RAW_PICK = (
    "UPDATE specimen_reservation SET picked_at = ? WHERE ended_at IS NULL AND specimen_id = "
    "(SELECT id FROM specimen WHERE accession_id = ?)"
)


def run(
    db: BenchDatabase,
    engine: Engine,
    dataset: Dataset,
    *,
    lines: int,
    scans: int,
    rng: random.Random,
) -> list[Result]:
    code, request_id = _approved(engine, dataset, lines, rng)
    listed, raw_listed = [], []
    for _ in range(LIST_RUNS):  # alternately, so the machine's load weighs on both
        started = time.perf_counter()
        with uow(engine, readonly=True) as session:
            found = request_picks.pick_list(session, actor=dataset.technician, code=code)
        listed.append(time.perf_counter() - started)
        raw_listed.append(_raw_list(db, request_id))
    order = [item.accession_id for item in found.items]
    scans = min(scans, len(order) // 2)
    picks, raw_picks = [], []
    with closing(db.connect()) as connection:
        for n in range(scans):
            started = time.perf_counter()
            with uow(engine) as session:
                request_picks.pick(session, actor=dataset.technician, code=code, accession=order[n])
            picks.append(time.perf_counter() - started)
            raw_picks.append(_raw_pick(db, connection, order[-1 - n]))
    how = (
        f"a request of {len(order):,} random available placed tubes, approved; "
        "baseline: the raw driver"
    )
    return [
        Result(
            benchmark="request: pick list",
            engine=db.engine_name, kind="latency", median=median(listed), p99=max(listed),
            baseline=median(raw_listed), goal=f"≤ {LIST_GOAL_SECONDS:g} s",
            passed=median(listed) <= LIST_GOAL_SECONDS,
            how=f"request_picks.pick_list in freezer order, consent asked today; {how} "
            "selecting the same tubes in the same order",
            details={"tubes": len(order), "runs": LIST_RUNS},
        ),
        Result(
            benchmark="request: pick scan",
            engine=db.engine_name, kind="latency", median=median(picks), p99=p99(picks),
            baseline=median(raw_picks), goal=f"≤ {PICK_GOAL_SECONDS * 1000:g} ms",
            passed=p99(picks) <= PICK_GOAL_SECONDS,
            how=f"request_picks.pick of {scans} tubes, a unit of work each as the workstation "
            f"runs it; {how} marking another tube picked, interleaved",
            details={"scans": scans},
        ),
    ]  # fmt: skip


def _approved(engine: Engine, dataset: Dataset, lines: int, rng: random.Random) -> tuple[str, int]:
    """A request of `lines` tubes, approved (see the module); its code and id."""
    with uow(engine) as session:
        admin = actor_for(session, username="admin", workstation="bench")
    chosen: list[str] = []
    with uow(engine, readonly=True) as session:
        for _ in range(20):  # a small inventory may hold fewer: the request takes those
            if len(chosen) >= lines:
                break
            drawn = dataset.random_accession_ids(lines, rng)
            tubes = [get_specimen(session, code) for code in dict.fromkeys(drawn)]
            tubes = [t for t in tubes if t.status.value == "available" and t.box_id is not None]
            allowed = consent_decisions(
                session, participant_ids={t.participant_id for t in tubes}, uses=USES,
                as_of=date.today(),
            )  # fmt: skip
            chosen += [t.accession_id for t in tubes if allowed[t.participant_id].allowed]
            chosen = list(dict.fromkeys(chosen))
    draft = RequestDraft(
        title="Benchmark request", uses=USES, project="bench", irb_reference="IRB-BENCH",
        irb_expires_on=date.today() + timedelta(days=365), destination_institution="Lab",
        destination_address="1 Way", destination_contact="Dr B", accessions=chosen[:lines],
        lines=[LineWant(take="all")],
    )  # fmt: skip
    with uow(engine) as session:
        made = requests.create_request(session, actor=admin, draft=draft)
        requests.submit_request(session, actor=admin, code=made.code)
    with uow(engine) as session:
        request_review.approve_request(
            session, actor=admin, code=made.code, reason="bench", floor=0
        )
        request_id = requests.get_request(session, made.code).id
    assert request_id is not None
    return made.code, request_id


def _raw_list(db: BenchDatabase, request_id: int) -> float:
    with closing(db.connect()) as connection:
        cursor = connection.cursor()
        started = time.perf_counter()
        cursor.execute(db.sql(RAW_LIST), (request_id,))
        cursor.fetchall()
        return time.perf_counter() - started


def _raw_pick(db: BenchDatabase, connection: Any, accession: str) -> float:
    """One tube marked picked, on the connection the baseline keeps open."""
    cursor = connection.cursor()
    started = time.perf_counter()
    cursor.execute(db.sql(RAW_PICK), (time.strftime("%Y-%m-%d %H:%M:%S"), accession))
    connection.commit()
    return time.perf_counter() - started
