"""Raw-driver INSERTs of model tables for the baselines, and an import's baseline: the rows it
wrote, written again by the raw driver.

Values go through the columns' own SQLAlchemy types first (datetimes, enums, JSON), so a row
a baseline writes is stored exactly as the services would store it, and later reads of it
through the services work.
"""

from __future__ import annotations

import time
from contextlib import closing
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel

from benchmarks.databases import BenchDatabase
from biobank.db import BULK_CACHE_KIB, make_engine

BULK_METHOD = {"sqlite": "executemany", "postgres": "COPY"}  # each engine's fastest plain way


class RawInsert:
    def __init__(
        self, db: BenchDatabase, table: sa.Table, *, with_id: bool = False, returning: bool = False
    ):
        dialect = sqlite.dialect() if db.engine_name == "sqlite" else postgresql.psycopg.dialect()
        self.columns = [c for c in table.columns if with_id or not c.primary_key]
        names = ", ".join(c.name for c in self.columns)
        marks = ", ".join("?" for _ in self.columns)
        suffix = " RETURNING id" if returning else ""
        self.sql = db.sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks}){suffix}")
        self.processors = [
            column.type.dialect_impl(dialect).bind_processor(dialect) for column in self.columns
        ]

    def params(self, row: dict[str, Any]) -> tuple:
        return tuple(
            process(row[c.key]) if process else row[c.key]
            for c, process in zip(self.columns, self.processors, strict=True)
        )


def written_rows(template: BenchDatabase, imported: BenchDatabase) -> dict[sa.Table, list[tuple]]:
    """Every row an import wrote (the rows of `imported` beyond those of `template`, the
    database it is a copy of), table by table, parents first, as the raw driver's parameters;
    every table's count checked."""
    tables = SQLModel.metadata.sorted_tables
    counts, last = {}, {}
    engine = make_engine(template.url)
    with engine.connect() as connection:
        for t in tables:
            counts[t] = connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            if "id" in t.c:
                last[t] = connection.execute(sa.select(sa.func.max(t.c.id))).scalar() or 0
    engine.dispose()
    engine = make_engine(imported.url)
    written: dict[sa.Table, list[tuple]] = {}
    with engine.connect() as connection:
        for t in tables:
            count = connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            if t not in last:
                if count != counts[t]:
                    raise AssertionError(f"the import wrote rows of {t.name}, which has no id")
                continue
            insert = RawInsert(imported, t, with_id=True)
            found = [
                insert.params(dict(row._mapping))
                for row in connection.execute(sa.select(t).where(t.c.id > last[t]).order_by(t.c.id))
            ]
            if len(found) != count - counts[t]:
                raise AssertionError(f"{t.name}: {count - counts[t]} new rows, {len(found)} read")
            if found:
                written[t] = found
    engine.dispose()
    return written


def bulk_write(db: BenchDatabase, written: dict[sa.Table, list[tuple]]) -> dict[str, float]:
    """Seconds the raw driver takes to write the rows in one transaction and commit them, by
    the engine's `BULK_METHOD` (SQLite with the page cache an import writes with), and how
    many of them the commit took."""
    with closing(db.connect()) as connection:
        cursor = connection.cursor()
        if db.engine_name == "sqlite":
            cursor.execute(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
        start = time.perf_counter()
        if db.engine_name == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")
        for table, params in written.items():
            insert = RawInsert(db, table, with_id=True)
            if db.engine_name == "sqlite":
                cursor.executemany(insert.sql, params)
                continue
            names = ", ".join(c.name for c in insert.columns)
            with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
                for values in params:
                    copy.write_row(values)
        committing = time.perf_counter()
        connection.commit()
        done = time.perf_counter()
    return {"seconds": done - start, "commit_seconds": done - committing}
