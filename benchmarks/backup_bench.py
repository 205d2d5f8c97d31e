"""Backing up and restoring the whole inventory (goal: a restore in ≤ 2 minutes at 1M
specimens), each beside the raw equivalent of what the service does, the two alternating round
by round in the same run.

Backup: `backups.backup` (the audit chain verified after its last checkpoint, a checkpoint
appended, the copy written under a temporary name and renamed, its SHA-256) against the copy
alone: SQLite's online backup API from the live database into a new file, `pg_dump
--format=custom --no-owner` on PostgreSQL.

Restore: `backups.restore` of that backup (copied privately and hashed, checked — SQLite's
quick check, the schema version, the audit chain after the checkpoint it holds — and put back
over the live database) against putting the baseline's own copy back with no check: SQLite's
online backup API from the file into the live database, `pg_restore --clean --if-exists
--no-owner --single-transaction --exit-on-error` on PostgreSQL (one transaction, as the
service's restore runs in).

Each restore puts back a copy of the inventory taken moments before, so the inventory is left
as it was but for the audit entries of the backups and restores. The order within a round
alternates, the baseline's copy always taken after the service's when it is restored first,
so that the live trail records the service's backup when the service restores it.

`python -m benchmarks.backup_bench` builds the inventory as `python -m benchmarks` does and
prints the table; `run()` returns the results.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from sqlalchemy.engine import make_url

from benchmarks import report
from benchmarks.databases import ENGINES, BenchDatabase, Unreachable, bench_database
from benchmarks.dataset import WORKSTATION, build
from benchmarks.measure import Result, median, progress
from biobank.db import make_engine, uow
from biobank.services import backups
from biobank.services.identity import actor_for

GOAL_RESTORE = 120.0  # seconds, at 1M specimens
DEFAULT_SIZE, QUICK_SIZE = 1_000_000, 20_000
ROUNDS = 3


def run(db: BenchDatabase, *, rounds: int = ROUNDS, say: Callable[[str], None]) -> list[Result]:
    engine = make_engine(db.url)  # its own: a restore disposes of the engine's connections
    with uow(engine) as session:
        admin = actor_for(session, username="admin", workstation=WORKSTATION)
    times: dict[str, list[float]] = {"backup": [], "raw copy": [], "restore": [], "raw put": []}
    sizes: list[int] = []
    load: list[float] = []
    with tempfile.TemporaryDirectory(prefix="biobank_backup_", dir=_folder(db)) as folder:
        made, raw = Path(folder) / "service.backup", Path(folder) / "raw.backup"
        for round_ in range(rounds):
            service_first = round_ % 2 == 1
            say(f"backup and restore, and their baselines, round {round_ + 1}")
            load.append(os.getloadavg()[0])
            copies = [
                ("backup", lambda: backups.backup(engine, actor=admin, path=made, replace=True)),
                ("raw copy", lambda: _raw_copy(db, raw)),
            ]
            puts = [
                ("restore", lambda: backups.restore(engine, actor=admin, path=made)),
                ("raw put", lambda: _raw_put(db, raw)),
            ]
            for name, action in copies if not service_first else copies[::-1]:
                times[name].append(_seconds(action))
            sizes.append(made.stat().st_size)
            for name, action in puts if service_first else puts[::-1]:
                times[name].append(_seconds(action))
        load.append(os.getloadavg()[0])
    engine.dispose()
    copy, put = _BASELINES[db.engine_name]
    details = {
        "rounds": rounds,
        "backup_bytes": sizes[-1],
        "load_average": load,
    }
    return [
        Result(
            "backup (whole database)", db.engine_name, "latency", median(times["backup"]),
            max(times["backup"]), median(times["raw copy"]), None, None,
            f"backups.backup to a new file (the chain verified after its last checkpoint, a "
            f"checkpoint appended, the copy, its SHA-256); baseline: {copy}; {rounds} rounds, "
            f"alternating; the copy is {sizes[-1] / 1e6:,.0f} MB",
            details | {"runs": times["backup"], "baseline_runs": times["raw copy"]},
        ),
        Result(
            "restore (whole database)", db.engine_name, "latency", median(times["restore"]),
            max(times["restore"]), median(times["raw put"]), f"≤ {GOAL_RESTORE:g} s",
            median(times["restore"]) <= GOAL_RESTORE,
            f"backups.restore of the backup just made (copied privately and hashed; checked: "
            f"schema version, the chain after the checkpoint it holds, "
            f"{_CHECKS[db.engine_name]}); baseline: {put}, of its own copy, no check; "
            f"{rounds} rounds, alternating",
            details | {"runs": times["restore"], "baseline_runs": times["raw put"]},
        ),
    ]  # fmt: skip


_BASELINES = {
    "sqlite": (
        "SQLite's online backup API into a new file (sqlite3's Connection.backup)",
        "SQLite's online backup API from the copy into the live database, its write-ahead "
        "log then folded into the database file (as the service does, so that neither leaves "
        "the other a copy of the whole database to checkpoint)",
    ),
    "postgres": (
        "pg_dump --format=custom --no-owner",
        "pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error",
    ),
}
_CHECKS = {
    "sqlite": "SQLite's quick check, then the copy put back with the online backup API",
    "postgres": (
        "the dump's audit trail and schema version restored into a scratch database and "
        "checked there while the whole dump is restored over the live database, in a "
        "transaction committed after the check"
    ),
}


def _seconds(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _folder(db: BenchDatabase) -> Path | None:
    """Copies go beside a SQLite database (its disk), anywhere for PostgreSQL."""
    return Path(make_url(db.url).database or "").parent if db.engine_name == "sqlite" else None


def _raw_copy(db: BenchDatabase, path: Path) -> None:
    path.unlink(missing_ok=True)
    if db.engine_name == "sqlite":
        with closing(db.connect()) as live, closing(sqlite3.connect(path)) as copy:
            live.backup(copy)
        return
    _pg(db, "pg_dump", "--format=custom", "--no-owner", f"--file={path}")


def _raw_put(db: BenchDatabase, path: Path) -> None:
    if db.engine_name == "sqlite":
        with closing(sqlite3.connect(path)) as copy, closing(db.connect()) as live:
            copy.backup(live)
            live.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return
    _pg(db, "pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
        "--exit-on-error", str(path))  # fmt: skip


def _pg(db: BenchDatabase, tool: str, *arguments: str) -> None:
    server = make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run([tool, f"--dbname={server}", *arguments], check=True, capture_output=True)


# --- on its own -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.backup_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--size", type=int, help=f"specimens (default {DEFAULT_SIZE:,})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZE:,} specimens")
    parser.add_argument("--engines", default=",".join(ENGINES), help=", ".join(ENGINES))
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"default {ROUNDS}")
    parser.add_argument("--dir", type=Path, help="where the SQLite file goes (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=1, help="the dataset's seed (default 1)")
    args = parser.parse_args(argv)
    size = args.size or (QUICK_SIZE if args.quick else DEFAULT_SIZE)
    results: list[Result] = []
    try:
        for engine_name in [e.strip() for e in args.engines.split(",") if e.strip()]:
            say = _say(engine_name)
            with bench_database(engine_name, size=size, directory=args.dir, keep=False) as db:
                engine = make_engine(db.url)
                say(f"building the inventory: {size:,} specimens")
                build(engine, size=size, seed=args.seed, progress=say)
                engine.dispose()
                results += run(db, rounds=args.rounds, say=say)
    except Unreachable as error:
        progress(str(error))
        return 8
    print(report.table(results))
    return 0


def _say(engine_name: str) -> Callable[[str], None]:
    return lambda message: progress(f"[{engine_name}] {message}")


if __name__ == "__main__":
    sys.exit(main())
