"""A cohort preview with phenotype conditions: `cohort_counts.preview_cohort` of serum whose
value at collection has lupus nephritis of class III or IV and a UPCR of at least 0.5, as a PI
counts before exporting, beside the raw driver counting the specimens whose participant has
such values (the test the database can answer; the service then judges each at collection).
The two alternate, run by run, so the machine's load weighs on both alike."""

from __future__ import annotations

import time
from contextlib import closing
from datetime import date

from sqlalchemy.engine import Engine

from benchmarks.databases import BenchDatabase
from benchmarks.dataset import Dataset
from benchmarks.measure import Result, median
from biobank.db import uow
from biobank.domain.cohort import CohortQuery, parse_conditions
from biobank.services import cohort_counts
from biobank.services.identity import actor_for

GOAL_SECONDS = 2.0
RUNS = 3
WHERE = "ln_class in (III, IV) and upcr >= 0.5"
RAW = (
    "SELECT count(*) FROM specimen s WHERE s.status = 'available' AND s.specimen_type = 'SER' "
    "AND s.participant_id IN (SELECT v.participant_id FROM phenotype_value v "
    "JOIN phenotype_variable pv ON pv.id = v.variable_id "
    "WHERE pv.name = 'ln_class' AND v.value_text IN ('III', 'IV')) "
    "AND s.participant_id IN (SELECT v.participant_id FROM phenotype_value v "
    "JOIN phenotype_variable pv ON pv.id = v.variable_id "
    "WHERE pv.name = 'upcr' AND v.value_number >= 0.5)"
)


def run(db: BenchDatabase, engine: Engine, dataset: Dataset) -> list[Result]:
    query = CohortQuery(specimen_types=["SER"], phenotypes=parse_conditions(WHERE))
    with uow(engine) as session:
        actor = actor_for(session, username="admin", workstation="bench")
    previews, raws, selected = [], [], 0
    for _ in range(RUNS):
        started = time.perf_counter()
        with uow(engine, readonly=True) as session:
            preview = cohort_counts.preview_cohort(
                session, actor=actor, query=query, uses=["FUTURE_RESEARCH"],
                as_of=date.today(),
            )  # fmt: skip
        previews.append(time.perf_counter() - started)
        selected = preview.specimens
        raws.append(_raw(db))
    return [
        Result(
            benchmark="cohort preview with phenotype conditions",
            engine=db.engine_name, kind="latency", median=median(previews), p99=max(previews),
            baseline=median(raws), goal=f"≤ {GOAL_SECONDS:g} s",
            passed=median(previews) <= GOAL_SECONDS,
            how=f"preview_cohort of SER where {WHERE} (values at collection, consent as of "
            "today); baseline: the raw driver counting the specimens whose participant has "
            "such values; alternating",
            details={"runs": RUNS, "selected": selected},
        )
    ]  # fmt: skip


def _raw(db: BenchDatabase) -> float:
    with closing(db.connect()) as connection:
        cursor = connection.cursor()
        started = time.perf_counter()
        cursor.execute(RAW)
        cursor.fetchall()
        return time.perf_counter() - started
