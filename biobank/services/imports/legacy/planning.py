"""What checking a legacy sheet builds and writing follows: the plan, the storage units the sheet
names, and the scratch file that remembers every row's participant, visit and legacy ID."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any

from biobank.domain.vocabulary import PositionLabels, QuantityUnit
from biobank.models import StorageUnit, Study
from biobank.services.imports import common
from biobank.services.imports.common import ImportReport, ScratchFile
from biobank.services.imports.legacy.reading import SheetFormat

STORAGE_KINDS = ("freezer", "rack", "box")  # outermost first; each sits in the one before


class Scratch(ScratchFile):
    """What checking a sheet must remember of every row read so far (`ScratchFile`): the
    legacy IDs seen (each with the row it was first on), and the participants and visits the
    sheet names (each with its id once found or written; a visit to create with its earliest
    collection day)."""

    def __init__(self) -> None:
        super().__init__(
            "CREATE TABLE seen (id TEXT PRIMARY KEY, row INTEGER) WITHOUT ROWID;"
            "CREATE TABLE person (code TEXT PRIMARY KEY, id INTEGER, fault TEXT);"
            "CREATE TABLE visit (code TEXT, label TEXT, id INTEGER, visit_date TEXT, "
            "PRIMARY KEY (code, label))"
        )  # person and visit keep their rowid: the sheet's order, the order they are created

    def first_rows(self, ids: set[str]) -> dict[str, int]:
        """Those of `ids` seen before, with their first rows."""
        return dict(self.where_in("SELECT id, row FROM seen WHERE id IN ({marks})", ids))

    def add_seen(self, first_rows: list[tuple[str, int]]) -> None:
        self.file.executemany("INSERT INTO seen VALUES (?, ?)", first_rows)

    def people(self, codes: Iterable[str]) -> dict[str, Person]:
        """Those of `codes` met before: their ids (None: to be created) and faults."""
        query = "SELECT code, id, fault FROM person WHERE code IN ({marks})"
        return {code: Person(i, fault) for code, i, fault in self.where_in(query, codes)}

    def add_people(self, people: dict[str, Person]) -> None:
        rows = [(code, person.id, person.fault) for code, person in people.items()]
        self.file.executemany("INSERT INTO person VALUES (?, ?, ?)", rows)

    def add_visits(self, visits: list[tuple[str, str, int | None, date]]) -> None:
        """Visits to note: (participant code, label, id, day). A recorded visit (with an id)
        is noted as it is; a visit to create keeps the earliest day given for it."""
        self.file.executemany(
            "INSERT INTO visit VALUES (?, ?, ?, ?) ON CONFLICT (code, label) DO UPDATE "
            "SET visit_date = min(visit_date, excluded.visit_date) WHERE id IS NULL",
            [(code, label, i, day.isoformat()) for code, label, i, day in visits],
        )

    def ids(self, codes: set[str]) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        """The ids of the participants `codes` name, and of their visits."""
        people = self.where_in("SELECT code, id FROM person WHERE code IN ({marks})", codes)
        query = "SELECT code, label, id FROM visit WHERE code IN ({marks})"
        visits = {(code, label): i for code, label, i in self.where_in(query, codes)}
        return dict(people), visits

    def to_create(self, table: str) -> Iterator[list[tuple[Any, ...]]]:
        """A batch at a time, in the sheet's order, the rows of `table` without an id:
        person (rowid, code); visit (rowid, code, label, day, the participant's id)."""
        query = {
            "person": "SELECT rowid, code FROM person WHERE id IS NULL AND rowid > ? "
            "ORDER BY rowid LIMIT ?",
            "visit": "SELECT v.rowid, v.code, v.label, v.visit_date, p.id FROM visit v "
            "JOIN person p ON p.code = v.code WHERE v.id IS NULL AND v.rowid > ? "
            "ORDER BY v.rowid LIMIT ?",
        }[table]
        after = 0
        while batch := self.file.execute(query, (after, common.BATCH_ROWS)).fetchall():
            yield batch
            after = batch[-1][0]

    def created(self, table: str, rowids: list[int], ids: list[int]) -> None:
        update = f"UPDATE {table} SET id = ? WHERE rowid = ?"  # table: person or visit
        self.file.executemany(update, zip(ids, rowids, strict=True))

    def count_new(self, table: str) -> int:
        (count,) = self.file.execute(f"SELECT count(*) FROM {table} WHERE id IS NULL").fetchone()
        return int(count)


@dataclass
class Unit:
    """A storage unit the file names: found in the database by barcode, or to be created."""

    kind: str
    barcode: str
    name: str
    parent: str | None  # the parent's barcode, as the first row naming it says
    row: int
    grid: tuple[int, int, PositionLabels] | None
    existing: StorageUnit | None = None
    created: StorageUnit | None = None  # a freezer or rack made, for what it holds
    id: int | None = None  # once found or created
    fault: str | None = None
    taken: dict[tuple[int, int], str] = field(default_factory=dict)  # → accession ID
    arriving: int = 0  # tubes the file puts in this box
    first_rows: array[int] | None = None  # the file's first row in each position (0: none yet)

    def claim(self, place: tuple[int, int], row: int) -> int:
        """Note that `row` puts a tube at `place`; the earlier row that did, else 0. One
        array of rows per box: a large sheet's positions cost 4 bytes each."""
        assert self.grid is not None, "only a box has positions"
        rows, cols, _ = self.grid
        if self.first_rows is None:
            self.first_rows = array("I", [0]) * (rows * cols)
        index = (place[0] - 1) * cols + place[1] - 1
        first = self.first_rows[index]
        if not first:
            self.first_rows[index] = row
            self.arriving += 1
        return first

    @property
    def stored(self) -> StorageUnit | None:
        """The unit in the database: found, or created (a box is not kept once created)."""
        return self.existing or self.created


@dataclass
class Person:
    """A participant the sheet names: its id once found or written, or why it cannot be used."""

    id: int | None  # None: to be created
    fault: str | None = None


@dataclass
class ImportPlan:
    """What checking a file found: its report, and the checked rows writing needs."""

    report: ImportReport
    study: Study
    sheet: SheetFormat
    unit: QuantityUnit
    scratch: Scratch  # the participants and visits, found or to create
    units: dict[str, Unit]
    spool: IO[bytes]  # batches of (row, tube, (grid row, grid column)), pickled

    def close(self) -> None:
        """Let go of the temporary files: writing does, and a plan not written should."""
        self.scratch.close()
        self.spool.close()
