"""One bench terminal, run in its own spawned process by test_concurrency: it accessions tubes
into a destination, one unit of work per tube, and reports what it committed.

A process imports this module by name, so it holds only what a child needs.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field

from inventory import serum

from biobank.db import make_engine, uow
from biobank.errors import (
    ConcurrentChange,
    ConstraintViolation,
    DatabaseUnavailable,
    PositionOccupied,
)
from biobank.services.identity import actor_for

# What a terminal may meet when another one got there first: it tries the tube again.
RETRYABLE = (ConstraintViolation, ConcurrentChange, DatabaseUnavailable)
ATTEMPTS = 10
START_TIMEOUT_S = 60


@dataclass
class Report:
    worker: int
    placed: list[tuple[str, str, str]] = field(default_factory=list)  # accession, box, position
    refused: list[str] = field(default_factory=list)  # PositionOccupied messages
    retries: list[str] = field(default_factory=list)  # the errors that were retried
    failure: str | None = None  # anything else, with its traceback


def accession_tubes(worker, url, destination, count, start, reports) -> None:
    """Accession `count` serum tubes into `destination` once every worker is ready."""
    report = Report(worker)
    try:
        engine = make_engine(url)
        with uow(engine) as session:
            actor = actor_for(session, username="admin", workstation=f"bench-{worker}")
        start.wait(timeout=START_TIMEOUT_S)
        for _ in range(count):
            _accession_one(engine, actor, destination, report)
        engine.dispose()
    except Exception:
        report.failure = traceback.format_exc()
    reports.put(report)


def _accession_one(engine, actor, destination, report: Report) -> None:
    for _ in range(ATTEMPTS):
        try:
            with uow(engine) as session:
                tube = serum(session, actor, destination=destination)
        except PositionOccupied as error:
            report.refused.append(error.message)
            return
        except RETRYABLE as error:
            report.retries.append(f"{type(error).__name__}: {error.message}")
            continue
        report.placed.append((tube.accession_id, tube.box_barcode, tube.position))
        return
    raise RuntimeError(f"gave up after {ATTEMPTS} attempts: {report.retries[-ATTEMPTS:]}")
