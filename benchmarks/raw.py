"""Raw-driver INSERTs of model tables for the baselines.

Values go through the columns' own SQLAlchemy types first (datetimes, enums, JSON), so a row
a baseline writes is stored exactly as the services would store it, and later reads of it
through the services work.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from benchmarks.databases import BenchDatabase


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
