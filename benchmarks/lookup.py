"""Lookup by scanned ID: `scan.resolve_scan` beside a raw SELECT on a reused cursor.

The service is timed two ways: a lookup unit of work per scan (what the TUI and `biobank scan`
do: a session without a transaction) and one read-only session reused for every scan. The
baseline selects the same specimen columns by accession ID with the driver's prepared statement.
The three take turns ID by ID, so a change of the machine's load weighs on all of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import closing
from typing import Any

from sqlalchemy.engine import Engine

from benchmarks.databases import BenchDatabase
from benchmarks.dataset import Dataset
from benchmarks.measure import Result, median, p99, timed_in_turns
from biobank.db import uow
from biobank.services.scan import resolve_scan
from biobank.services.specimen_read import _OWN_COLUMNS

GOAL_RATIO = 5.0
WARMUP = 200
COLUMNS = (*_OWN_COLUMNS, "position_row", "position_col")
RAW = f"SELECT {', '.join(COLUMNS)} FROM specimen WHERE accession_id = ?"


def run(
    db: BenchDatabase, engine: Engine, dataset: Dataset, *, lookups: int, rng: random.Random
) -> list[Result]:
    codes = dataset.random_accession_ids(lookups + WARMUP, rng)
    actor = dataset.technician

    def per_scan(code: str) -> None:
        with uow(engine, lookup=True) as session:
            _check(resolve_scan(session, actor=actor, scanned=code))

    with closing(db.connect()) as connection, uow(engine, readonly=True) as session:
        runs = timed_in_turns(
            {
                "per scan": per_scan,
                "one session": lambda code: _check(
                    resolve_scan(session, actor=actor, scanned=code)
                ),
                "raw": _raw_lookup(db, connection),
            },
            codes,
            warmup=WARMUP,
        )
    raw = runs.pop("raw")
    hows = {
        "per scan": "a lookup unit of work per scan (no transaction), as the TUI and "
        "`biobank scan` use",
        "one session": "one read-only session reused for every scan",
    }
    results = []
    for name, times in runs.items():
        ratio = median(times) / median(raw)
        results.append(
            Result(
                benchmark=f"scan lookup ({name})",
                engine=db.engine_name,
                kind="latency",
                median=median(times),
                p99=p99(times),
                baseline=median(raw),
                goal=f"≤ {GOAL_RATIO:g}× raw",
                passed=ratio <= GOAL_RATIO,
                how=f"resolve_scan of {lookups:,} random existing IDs, {hows[name]}; "
                f"baseline: raw {db.engine_name} driver, SELECT of the same specimen columns "
                "by accession_id on a reused cursor; the three take turns ID by ID",
                details={"lookups": lookups, "baseline_p99": p99(raw)},
            )
        )
    return results


def _check(result) -> None:
    if result.kind != "specimen":
        raise AssertionError(f"scan of {result.scanned} found {result.kind}: {result.message}")


def _raw_lookup(db: BenchDatabase, connection: Any) -> Callable[[str], None]:
    """The baseline's lookup, on a connection kept open for the run."""
    query = db.sql(RAW)
    if db.engine_name == "postgres":
        connection.autocommit = True
    cursor = connection.cursor()
    options = {"prepare": True} if db.engine_name == "postgres" else {}

    def lookup(code: str) -> None:
        cursor.execute(query, (code,), **options)
        if cursor.fetchone() is None:
            raise AssertionError(f"raw lookup found no {code}")

    return lookup
