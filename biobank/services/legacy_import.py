"""Importing the spreadsheet a lab kept before this system: one row per tube, with its subject,
visit, type, volume, collection and processing times, freezer, rack, box and position.

Checking reads the whole file and reports every fault (data row, file line, column, value,
reason) before anything is written, so a file with any faulty row changes nothing. It looks
rows up in the database a thousand at a time, spools the checked rows to a temporary file and
keeps what it must remember of every row (the legacy IDs seen, the participants and visits
named) in a private temporary SQLite file, so its memory does not grow with the sheet.
Writing then goes in bulk (`db.insert_many`), a thousand rows at a time: specimens, their
custody events and their hash-chained audit entries, with the participants, visits and
storage units the file names created when missing, all in the caller's one transaction.
"""

from __future__ import annotations

import re
import sqlite3
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, select

from biobank.db import insert_many, one_of, prepare_bulk_writing
from biobank.errors import ValidationError
from biobank.inputs import read_toml
from biobank.models import (
    Participant,
    PositionLabels,
    QuantityUnit,
    Specimen,
    SpecimenEvent,
    SpecimenKind,
    StorageUnit,
    Study,
    Visit,
)
from biobank.permissions import Actor, Permission, require
from biobank.positions import parse_grid, parse_position
from biobank.services import audit
from biobank.services.custody import adjust_free_slots, check_box_accepts
from biobank.services.participants import PARTICIPANT_CODE
from biobank.services.specimen_ids import allocate_accession_ids
from biobank.services.specimens import (
    check_times,
    positive_quantity,
    specimen_type_code,
    sprec_code_for,
    temperature_code,
)
from biobank.services.storage import place_in_tree, subtree_range
from biobank.services.studies import get_study
from biobank.stored_text import check_text
from biobank.tabular import chunks, new_spool, open_source, spool_batch, unspool
from biobank.visits import by_canonical_label, canonical_visit_label

FIELDS: dict[str, str] = {
    "legacy_id": "Sample ID",
    "subject": "Subject",
    "visit": "Visit",
    "specimen_type": "Sample type",
    "volume": "Volume (uL)",
    "date_collected": "Date collected",
    "time_collected": "Time collected",
    "time_processed": "Time processed",
    "freezer": "Freezer",
    "rack": "Rack",
    "box": "Box",
    "position": "Position",
    "thaws": "Thaws",
    "comments": "Comments",
}
"""What the import reads → the header it looks for unless mapped otherwise."""

OPTIONAL_FIELDS = frozenset({"visit", "time_collected", "time_processed", "thaws", "comments"})
STORAGE_KINDS = ("freezer", "rack", "box")  # outermost first; each sits in the one before
TIME_FORMATS = ("%H:%M", "%H:%M:%S", "%I:%M %p", "%I:%M:%S %p")
CLOCK_SKEW = timedelta(days=1)  # the lab's calendar may be a day ahead of this workstation's
MAX_LISTED_FAULTS = 1000
BATCH_ROWS = 1000
MEMO_LIMIT = 65536  # clock times in UTC kept while reading a sheet


# --- The sheet's format -------------------------------------------------------------------


@dataclass(frozen=True)
class SheetFormat:
    """How a lab's sheet is laid out and what its values mean (build it with `sheet_format`,
    which checks every value)."""

    columns: Mapping[str, str] = field(default_factory=lambda: dict(FIELDS))
    date_format: str = "%m/%d/%Y"
    unit: QuantityUnit | None = None  # None: the volume header's "(uL)", else uL
    timezone: tzinfo | None = None  # None: this workstation's zone
    box_grid: tuple[int, int] = (9, 9)  # of the boxes the import creates
    precentrifugation_temperature: str | None = None  # None: unknown, SPREC delay X


def sheet_format(
    mapping: Path | None = None,
    *,
    columns: Mapping[str, str] | None = None,
    date_format: str | None = None,
    unit: str | None = None,
    timezone: str | None = None,
    box_grid: str | None = None,
    precentrifugation_temperature: str | None = None,
) -> SheetFormat:
    """The defaults, overridden by a TOML mapping file (these settings at the top level and a
    `[columns]` table of field = "Header"), overridden in turn by what is given here."""
    settings = read_toml(mapping) if mapping is not None else {}
    file_columns = settings.pop("columns", {})
    given = {
        "date_format": date_format,
        "unit": unit,
        "timezone": timezone,
        "box_grid": box_grid,
        "precentrifugation_temperature": precentrifugation_temperature,
    }
    unknown = sorted(settings.keys() - given.keys())
    if unknown:
        raise ValidationError(
            f"unknown setting {unknown[0]!r} in {mapping} (settings: {', '.join(given)} "
            "and a [columns] table)",
            field="mapping",
            value=unknown[0],
        )
    chosen = settings | {name: value for name, value in given.items() if value is not None}
    return SheetFormat(
        columns=dict(FIELDS) | _columns(file_columns) | _columns(columns or {}),
        date_format=_date_format(chosen.get("date_format", SheetFormat.date_format)),
        unit=_unit(chosen["unit"], field="unit") if "unit" in chosen else None,
        timezone=_zone(chosen["timezone"]) if "timezone" in chosen else None,
        box_grid=_grid(chosen.get("box_grid", SheetFormat.box_grid)),
        precentrifugation_temperature=temperature_code(
            chosen.get("precentrifugation_temperature"), "precentrifugation_temperature"
        ),
    )


def _columns(given: object) -> dict[str, str]:
    if not isinstance(given, Mapping):
        raise ValidationError("columns must map fields to headers", field="columns", value=given)
    for name, header in given.items():
        if name not in FIELDS:
            raise ValidationError(
                f"unknown field {name!r} (fields: {', '.join(FIELDS)})", field="columns", value=name
            )
        if not isinstance(header, str) or not header.strip():
            raise ValidationError(f"the header of {name} must be text", field=name, value=header)
    return {name: header.strip() for name, header in given.items()}


def _date_format(pattern: object) -> str:
    sample = date(2017, 4, 28)
    try:
        readable = datetime.strptime(sample.strftime(str(pattern)), str(pattern)).date() == sample
    except ValueError:
        readable = False
    if not readable:
        raise ValidationError(
            f"date format {pattern!r} must give day, month and year, like %m/%d/%Y",
            field="date_format",
            value=pattern,
        )
    return str(pattern)


def _unit(text: object, *, field: str) -> QuantityUnit:
    """`uL`, `ul`, `µL`, `mL`…"""
    plain = str(text).strip().replace("µ", "u").replace("μ", "u").lower()
    for unit in QuantityUnit:
        if unit.value.lower() == plain:
            return unit
    allowed = ", ".join(u.value for u in QuantityUnit)
    raise ValidationError(f"unknown unit {text!r} (allowed: {allowed})", field=field, value=text)


def _zone(name: object) -> tzinfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"unknown time zone {name!r} (an IANA name such as America/New_York)",
            field="timezone",
            value=name,
        ) from None


def _grid(value: object) -> tuple[int, int]:
    if isinstance(value, list | tuple) and len(value) == 2:
        value = f"{value[0]}x{value[1]}"
    return parse_grid(str(value), field="box_grid")


# --- The report ---------------------------------------------------------------------------


class Fault(BaseModel):
    """One thing wrong. `row` counts data rows from 1 (the header and blank lines do not
    count); `line` is the line of the file the row starts on. No row: the file as a whole."""

    row: int | None
    line: int | None
    column: str | None
    value: str | None
    reason: str


class ImportReport(BaseModel):
    file: str
    study: str
    encoding: str
    delimiter: str
    rows: int = 0
    faulty_rows: int = 0
    fault_count: int = 0
    faults: list[Fault] = []  # the first MAX_LISTED_FAULTS
    notices: list[str] = []
    new_participants: int = 0
    new_visits: int = 0
    new_units: int = 0
    imported: int = 0


# --- Reading the file ---------------------------------------------------------------------


def _key(header: str) -> str:
    """Headers match without regard to case or spacing."""
    return " ".join(header.split()).casefold()


# --- One row ------------------------------------------------------------------------------


class _Tube(NamedTuple):
    legacy_id: str
    subject: str
    visit: str | None
    specimen_type: str
    quantity: float
    collected_on: date
    collected_at: datetime | None
    processed_at: datetime | None
    freezer: str
    rack: str
    box: str
    position: str
    thaws: int
    notes: str | None


RowFault = tuple[str | None, str | None, str]  # field, value, reason


def _text(limit: int | None) -> Callable[[str], str]:
    """A text cell as the database will keep it (`stored_text.check_text`; no limit: notes)."""

    def check(raw: str) -> str:
        check_text("the value", raw, limit)
        return raw

    return check


_label_text = _text(64)
_free_text = _text(None)


def _subject(raw: str) -> str:
    code = raw.upper()
    if not PARTICIPANT_CODE.match(code):
        raise ValidationError("a participant code is 3-32 characters: A-Z, 0-9 and '-'")
    return code


@lru_cache(maxsize=4096)
def _visit_label(raw: str) -> str:
    return _label_text(canonical_visit_label(raw))


def _volume(raw: str) -> float:
    try:
        number = float(raw)
    except ValueError:
        raise ValidationError("volume must be a number") from None
    return positive_quantity(number, "volume")


def _thaws(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()):  # "¹" is a digit to isdigit, not to int
        raise ValidationError("thaws must be a whole number, 0 or more")
    return int(raw)


@lru_cache(maxsize=4096)
def _clock(raw: str) -> time:
    for pattern in TIME_FORMATS:
        try:
            return datetime.strptime(raw.upper(), pattern).time()
        except ValueError:
            continue
    raise ValidationError("not a time of day like 09:30 or 9:30 AM")


@lru_cache(maxsize=65536)
def _day(raw: str, pattern: str) -> date:
    try:
        day = datetime.strptime(raw, pattern).date()
    except ValueError:
        example = date(2017, 4, 28).strftime(pattern)
        raise ValidationError(f"not a date like {example} ({pattern})") from None
    if day > date.today() + CLOCK_SKEW:
        raise ValidationError("the collection date is in the future")
    return day


class _RowReader:
    """A sheet's rows as tubes. Each field's column and converter are chosen once per sheet,
    and the lab's clock times, which repeat down a sheet, are put in UTC once per day."""

    def __init__(self, columns: Mapping[str, int], sheet: SheetFormat):
        converters: dict[str, Callable[[str], Any]] = {
            "legacy_id": _label_text,
            "subject": _subject,
            "visit": _visit_label,
            "specimen_type": specimen_type_code,
            "volume": _volume,
            "date_collected": lambda raw: _day(raw, sheet.date_format),
            "time_collected": _clock,
            "time_processed": _clock,
            "freezer": _label_text,
            "rack": _label_text,
            "box": _label_text,
            "position": str,
            "thaws": _thaws,
            "comments": _free_text,
        }
        self.fields = [
            (name, columns.get(name), convert, name in OPTIONAL_FIELDS)
            for name, convert in converters.items()
        ]
        self.columns = columns
        self.zone = sheet.timezone
        self.moments: dict[tuple[date, time], datetime] = {}

    def read(self, cells: list[str], faults: list[RowFault]) -> _Tube | None:
        """The values of one row, or None (and `faults` filled) if any is wrong."""
        found = len(faults)
        width = len(cells)
        values = []
        for name, index, convert, optional in self.fields:
            raw = cells[index].strip() if index is not None and index < width else ""
            if not raw:
                if not optional:
                    faults.append((name, raw, "a value is required"))
                values.append(None)
                continue
            try:
                values.append(convert(raw))
            except ValidationError as error:
                faults.append((name, raw, error.message))
                values.append(None)
        if len(faults) > found:
            return None
        *tube, day, collected, processed, freezer, rack, box, position, thaws, notes = values
        collected_at, processed_at = self.utc(day, collected), self.utc(day, processed)
        try:
            check_times({"collected_at": collected_at, "processed_at": processed_at})
        except ValidationError as error:
            name = "time_processed" if error.field == "processed_at" else "time_collected"
            faults.append((name, cells[self.columns[name]].strip(), error.message))
            return None
        return _Tube(
            *tube, day, collected_at, processed_at, freezer, rack, box, position, thaws or 0, notes
        )

    def utc(self, day: date, clock: time | None) -> datetime | None:
        """The lab's clock time on `day`, in UTC."""
        if clock is None:
            return None
        moment = self.moments.get((day, clock))
        if moment is None:
            local = datetime.combine(day, clock)
            local = local.replace(tzinfo=self.zone) if self.zone else local.astimezone()
            if len(self.moments) >= MEMO_LIMIT:
                self.moments.clear()  # an odd sheet of ever new times keeps memory flat
            moment = self.moments[day, clock] = local.astimezone(UTC)
        return moment


# --- Checking -----------------------------------------------------------------------------


class _Scratch:
    """What checking must remember of every row read so far, kept in a private temporary
    SQLite file rather than in memory, so that a sheet of a million rows is checked and
    written in the memory of a few batches: the legacy IDs seen (each with the row it was
    first on), and the participants and visits the sheet names (each with its id once found
    or written; a visit to create with its earliest collection day)."""

    def __init__(self) -> None:
        # "": a temporary file, deleted when closed; a plan may be checked in one worker
        # thread and written in another (never by two at once)
        self.file = sqlite3.connect("", check_same_thread=False)
        self.file.executescript(
            "PRAGMA cache_size = -256;"  # KiB: lookups go by key, the OS caches the file
            "CREATE TABLE seen (id TEXT PRIMARY KEY, row INTEGER) WITHOUT ROWID;"
            "CREATE TABLE person (code TEXT PRIMARY KEY, id INTEGER, fault TEXT);"
            "CREATE TABLE visit (code TEXT, label TEXT, id INTEGER, visit_date TEXT, "
            "PRIMARY KEY (code, label))"
        )  # person and visit keep their rowid: the sheet's order, the order they are created

    def _where_in(self, query: str, values: Iterable) -> list[tuple]:
        """`query` with `{marks}` for the placeholders of one batch of `values`, run for each."""
        found: list[tuple] = []
        for chunk in chunks(values, BATCH_ROWS):
            marks = ", ".join("?" * len(chunk))
            found += self.file.execute(query.format(marks=marks), chunk).fetchall()
        return found

    def first_rows(self, ids: set[str]) -> dict[str, int]:
        """Those of `ids` seen before, with their first rows."""
        return dict(self._where_in("SELECT id, row FROM seen WHERE id IN ({marks})", ids))

    def add_seen(self, first_rows: list[tuple[str, int]]) -> None:
        self.file.executemany("INSERT INTO seen VALUES (?, ?)", first_rows)

    def people(self, codes: Iterable[str]) -> dict[str, _Person]:
        """Those of `codes` met before: their ids (None: to be created) and faults."""
        query = "SELECT code, id, fault FROM person WHERE code IN ({marks})"
        return {code: _Person(i, fault) for code, i, fault in self._where_in(query, codes)}

    def add_people(self, people: dict[str, _Person]) -> None:
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
        people = self._where_in("SELECT code, id FROM person WHERE code IN ({marks})", codes)
        query = "SELECT code, label, id FROM visit WHERE code IN ({marks})"
        visits = {(code, label): i for code, label, i in self._where_in(query, codes)}
        return dict(people), visits

    def to_create(self, table: str) -> Iterator[list[tuple]]:
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
        while batch := self.file.execute(query, (after, BATCH_ROWS)).fetchall():
            yield batch
            after = batch[-1][0]

    def created(self, table: str, rowids: list[int], ids: list[int]) -> None:
        update = f"UPDATE {table} SET id = ? WHERE rowid = ?"  # table: person or visit
        self.file.executemany(update, zip(ids, rowids, strict=True))

    def count_new(self, table: str) -> int:
        return self.file.execute(f"SELECT count(*) FROM {table} WHERE id IS NULL").fetchone()[0]

    def close(self) -> None:
        self.file.close()


@dataclass
class _Unit:
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
    first_rows: array | None = None  # the file's first row in each position (0: none yet)

    def claim(self, place: tuple[int, int], row: int) -> int:
        """Note that `row` puts a tube at `place`; the earlier row that did, else 0. One
        array of rows per box: a large sheet's positions cost 4 bytes each."""
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
    def stored(self) -> StorageUnit:
        return self.existing or self.created


@dataclass
class _Person:
    id: int | None  # None: to be created
    fault: str | None = None


@dataclass
class ImportPlan:
    """What checking a file found: its report, and the checked rows writing needs."""

    report: ImportReport
    study: Study
    sheet: SheetFormat
    unit: QuantityUnit
    scratch: _Scratch  # the participants and visits, found or to create
    units: dict[str, _Unit]
    spool: IO[bytes]  # batches of (row, tube, (grid row, grid column)), pickled

    def close(self) -> None:
        """Let go of the temporary files: writing does, and a plan not written should."""
        self.scratch.close()
        self.spool.close()


def check_inventory(
    session: Session,
    *,
    actor: Actor,
    path: Path,
    study: str,
    sheet: SheetFormat | None = None,
) -> ImportPlan:
    """Read and check a whole file, against itself and the database; write nothing.

    The plan's report lists every fault; `write_inventory` writes a plan that has none."""
    require(actor, Permission.import_data)
    return _Checker(session, path, get_study(session, study), sheet or sheet_format()).run()


class _Checker:
    def __init__(self, session: Session, path: Path, study: Study, sheet: SheetFormat):
        self.session = session
        self.study = study
        self.sheet = sheet
        notices: list[str] = []
        self.source = open_source(path, notices, "sheet")
        self.report = ImportReport(
            file=path.name,
            study=study.code,
            encoding=self.source.encoding,
            delimiter=self.source.delimiter,
            notices=notices,
        )
        self.headers: dict[str, str] = {}  # field → its header as the file spells it
        self.people: dict[str, _Person] = {}  # the current batch's participants
        self.visit_days: dict[tuple[str, str], date] = {}  # its visits → earliest day
        self.visit_clashes: dict[tuple[str, str], str] = {}  # stored visits that are one
        self.units: dict[str, _Unit] = {}
        self.stored_units: dict[str, StorageUnit | None] = {}  # barcode → as found
        self.scratch = _Scratch()
        self.legacy_rows: dict[str, int] = {}  # the current batch's legacy IDs → first row
        self.recorded: set[str] = set()  # legacy IDs of the current batch already recorded
        self.faulty_rows = 0
        self.last_faulty: int | None = None
        self.spool = new_spool()

    def run(self) -> ImportPlan:
        records = self.source.records()
        header = next(records, None)
        if header is None:
            self.fault(None, None, None, None, "the file is empty")
        columns, unit = self.read_header(*header) if header else ({}, QuantityUnit.uL)
        try:
            if columns:
                reader = _RowReader(columns, self.sheet)
                for batch in chunks(enumerate(records, start=1), BATCH_ROWS):
                    self.check_batch(batch, reader, width=len(header[1]))
        except BaseException:
            self.spool.close()  # no plan will own them
            self.scratch.close()
            raise
        self.summarise()
        return ImportPlan(
            report=self.report,
            study=self.study,
            sheet=self.sheet,
            unit=unit,
            scratch=self.scratch,
            units=self.units,
            spool=self.spool,
        )

    def fault(self, row: int | None, line: int | None, name: str | None, value, reason: str):
        self.report.fault_count += 1
        if row is not None and row != self.last_faulty:  # a row's faults come together
            self.faulty_rows, self.last_faulty = self.faulty_rows + 1, row
        if len(self.report.faults) < MAX_LISTED_FAULTS:
            column = (self.headers.get(name) or self.sheet.columns[name]) if name else None
            self.report.faults.append(
                Fault(row=row, line=line, column=column, value=value, reason=reason)
            )

    def read_header(self, line: int, cells: list[str]) -> tuple[dict[str, int], QuantityUnit]:
        """Each field's column; nothing if a column is missing or named twice."""
        keys = [_key(header) for header in cells]
        columns: dict[str, int] = {}
        for name, header in self.sheet.columns.items():
            if _key(header) in keys:
                columns[name] = keys.index(_key(header))
                self.headers[name] = cells[columns[name]].strip()
                if keys.count(_key(header)) > 1:
                    self.fault(None, line, name, None, f"two columns are named {header!r}")
            elif name not in OPTIONAL_FIELDS:
                self.fault(
                    None,
                    line,
                    name,
                    None,
                    f"no column {header!r} (name the column of {name} with "
                    f"--column {name}=HEADER or in a mapping file)",
                )
        ignored = [
            c.strip() for i, c in enumerate(cells) if c.strip() and i not in columns.values()
        ]
        if ignored:
            self.report.notices.append(f"columns not imported: {', '.join(ignored)}")
        unit = self.volume_unit(line)
        return ({} if self.report.fault_count else columns), unit

    def volume_unit(self, line: int) -> QuantityUnit:
        """As given, else as the volume header says ("Volume (uL)"), else uL."""
        written = re.search(r"\(([^)]*)\)\s*$", self.headers.get("volume", ""))
        if self.sheet.unit is not None or written is None:
            return self.sheet.unit or QuantityUnit.uL
        try:
            return _unit(written.group(1), field="volume")
        except ValidationError as error:
            reason = f"{error.message}; give the unit with --unit"
            self.fault(None, line, "volume", self.headers["volume"], reason)
            return QuantityUnit.uL

    def check_batch(self, batch: list, reader: _RowReader, width: int) -> None:
        read = []
        for row, (line, cells) in batch:
            faults: list[RowFault] = []
            if any(cell.strip() for cell in cells[width:]):
                reason = f"{len(cells)} values for {width} columns (quote values holding "
                faults.append((None, None, reason + f"the delimiter {self.source.delimiter!r})"))
            read.append((row, line, reader.read(cells, faults), faults))
        tubes = [tube for _, _, tube, _ in read if tube is not None]
        self.look_up(tubes)
        earlier = self.scratch.first_rows({t.legacy_id for t in tubes})
        self.legacy_rows = dict(earlier)
        checked = []
        for row, line, tube, faults in read:
            place = self.check_tube(tube, row, faults) if tube is not None else None
            for name, value, reason in faults:
                self.fault(row, line, name, value, reason)
            checked.append((row, tube, place))
        self.scratch.add_seen([(i, r) for i, r in self.legacy_rows.items() if i not in earlier])
        self.scratch.add_visits([(*key, None, day) for key, day in self.visit_days.items()])
        self.report.rows = batch[-1][0]
        if not self.report.fault_count:  # once a row is faulty, nothing will be written
            spool_batch(self.spool, checked)

    def look_up(self, tubes: list[_Tube]) -> None:
        """What the database knows of a batch's participants, units and legacy IDs, with a
        few queries for the whole batch."""
        session = self.session
        codes = dict.fromkeys(t.subject for t in tubes)  # in the sheet's order
        self.people = self.scratch.people(codes)
        self.visit_days = {}
        met = {code: _Person(None) for code in codes if code not in self.people}  # first met
        found = session.exec(
            select(Participant.code, Participant.id, Participant.study_id).where(
                Participant.code.in_(met)
            )
        ).all()
        for code, participant_id, study_id in found:
            person = met[code] = _Person(participant_id)
            if study_id != self.study.id:
                other = session.get(Study, study_id).code
                person.fault = f"participant {code} is in study {other}, not {self.study.code}"
        self.scratch.add_people(met)
        self.people |= met
        codes_by_id = {participant_id: code for code, participant_id, _ in found}
        stored: dict[str, dict[str, tuple[int, date]]] = {}
        for participant_id, label, visit_id, visit_date in session.exec(
            select(Visit.participant_id, Visit.label, Visit.id, Visit.visit_date).where(
                Visit.participant_id.in_(codes_by_id)
            )
        ):
            stored.setdefault(codes_by_id[participant_id], {})[label] = (visit_id, visit_date)
        known = []  # the sheet's labels are canonical: a stored visit is noted so
        for code, visits in stored.items():
            for label, visit in by_canonical_label(visits, owner=code).items():
                if isinstance(visit, ValidationError):
                    self.visit_clashes[code, label] = visit.message
                else:
                    known.append((code, label, *visit))
        self.scratch.add_visits(known)
        barcodes = {n.upper() for t in tubes for n in (t.freezer, t.rack, t.box)}
        barcodes -= self.stored_units.keys()
        self.stored_units |= dict.fromkeys(barcodes)
        for unit in session.exec(select(StorageUnit).where(StorageUnit.barcode.in_(barcodes))):
            self.stored_units[unit.barcode] = unit
        self.recorded = set(
            session.exec(
                select(Specimen.legacy_id).where(
                    Specimen.legacy_id.in_({t.legacy_id for t in tubes})
                )
            )
        )

    def check_tube(self, tube: _Tube, row: int, faults: list[RowFault]) -> tuple[int, int] | None:
        first = self.legacy_rows.setdefault(tube.legacy_id, row)
        if first != row:
            faults.append(("legacy_id", tube.legacy_id, f"the same ID is on row {first}"))
        elif tube.legacy_id in self.recorded:
            faults.append(("legacy_id", tube.legacy_id, "a specimen with this ID is recorded"))
        person = self.people[tube.subject]
        if person.fault:
            faults.append(("subject", tube.subject, person.fault))
        elif (tube.subject, tube.visit) in self.visit_clashes:
            faults.append(("visit", tube.visit, self.visit_clashes[tube.subject, tube.visit]))
        elif tube.visit is not None:  # a visit recorded keeps its day (`add_visits`)
            key = (tube.subject, tube.visit)
            day = self.visit_days.get(key)
            self.visit_days[key] = tube.collected_on if day is None else min(day, tube.collected_on)
        box = self.place(tube, row, faults)
        return self.check_position(tube, box, row, faults) if box else None

    def place(self, tube: _Tube, row: int, faults: list[RowFault]) -> _Unit | None:
        """The tube's freezer > rack > box, each found or planned; None if any is wrong."""
        parent = unit = None
        for kind in STORAGE_KINDS:
            name = getattr(tube, kind)
            unit = self.units.get(name.upper()) or self.new_unit(kind, name, parent, row)
            reason = unit.fault
            if unit.kind != kind:
                reason = f"{unit.barcode} is a {unit.kind} on row {unit.row}"
            elif unit.parent != parent:
                reason = f"{kind} {unit.barcode} is in {unit.parent} on row {unit.row}"
            if reason:
                faults.append((kind, name, reason))
                return None
            parent = unit.barcode
        return unit

    def new_unit(self, kind: str, name: str, parent: str | None, row: int) -> _Unit:
        barcode = name.upper()
        existing = self.stored_units[barcode]
        grid = (*self.sheet.box_grid, PositionLabels.letter_number) if kind == "box" else None
        unit = self.units[barcode] = _Unit(kind, barcode, name, parent, row, grid, existing)
        if existing is None:
            return unit
        unit.id = existing.id
        container = self.units[parent].existing if parent else None
        if existing.holds_specimens != (kind == "box"):
            unit.fault = f"{barcode} is a {existing.kind} in the database, not a {kind}"
        elif parent and not (container and _inside(existing, container)):
            unit.fault = f"{barcode} is in {existing.path} in the database, not in {parent}"
        elif kind == "box":
            unit.grid = (existing.grid_rows, existing.grid_cols, existing.position_labels)
            unit.taken = {
                (r, c): accession_id
                for accession_id, r, c in self.session.exec(
                    select(
                        Specimen.accession_id, Specimen.position_row, Specimen.position_col
                    ).where(Specimen.box_id == existing.id)
                )
            }
        return unit

    def check_position(
        self, tube: _Tube, box: _Unit, row: int, faults: list[RowFault]
    ) -> tuple[int, int] | None:
        if box.existing is not None:
            try:
                check_box_accepts(box.existing, tube.specimen_type)
            except ValidationError as error:
                faults.append(("specimen_type", tube.specimen_type, error.message))
        rows, cols, labels = box.grid
        try:
            place = parse_position(tube.position, rows=rows, cols=cols, scheme=labels)
        except ValidationError as error:
            faults.append(("position", tube.position, error.message))
            return None
        if place in box.taken:
            occupant = box.taken[place]
            faults.append(
                ("position", tube.position, f"{box.barcode} {tube.position} holds {occupant}")
            )
        first = box.claim(place, row)
        if first:
            faults.append(("position", tube.position, f"row {first} is in the same position"))
        return place

    def summarise(self) -> None:
        report = self.report
        report.faulty_rows = self.faulty_rows
        report.new_participants = self.scratch.count_new("person")
        report.new_visits = self.scratch.count_new("visit")
        report.new_units = sum(u.existing is None for u in self.units.values())
        for unit in self.units.values():  # positions checked: writing needs only the count
            unit.first_rows, unit.taken = None, {}
        if report.fault_count > len(report.faults):
            report.notices.append(f"{len(report.faults)} of {report.fault_count} faults listed")


def _inside(unit: StorageUnit, container: StorageUnit) -> bool:
    low, high = subtree_range(container)
    return low <= unit.sort_key < high


# --- Writing ------------------------------------------------------------------------------


def refuse_a_faulty_plan(file: str, fault_count: int, faulty_rows: int) -> None:
    """An importer (this one, REDCap's) writes only a plan whose check found nothing wrong."""
    if fault_count:
        raise ValidationError(
            f"{file} has {fault_count} faults in {faulty_rows} rows; nothing was imported",
            field="file",
            value=file,
        )


def write_inventory(
    session: Session,
    *,
    actor: Actor,
    plan: ImportPlan,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Write a checked file into the caller's transaction; `progress` is told how many more
    rows were written after each batch."""
    require(actor, Permission.import_data)
    report = plan.report
    writer = _Writer(session, actor, plan)
    imported = 0
    try:
        refuse_a_faulty_plan(report.file, report.fault_count, report.faulty_rows)
        prepare_bulk_writing(session)
        writer.create_participants()
        writer.create_visits()
        writer.create_units()
        for batch in unspool(plan.spool):
            writer.write_tubes(batch)
            imported += len(batch)
            if progress:
                progress(len(batch))
    finally:  # a plan is written once: its temporary files go, whatever happens
        plan.close()
    for unit in plan.units.values():
        if unit.existing is not None and unit.arriving:
            adjust_free_slots(session, unit.existing.id, -unit.arriving)
    return report.model_copy(update={"imported": imported})


@lru_cache(maxsize=4096)
def _sprec(specimen_type: str, delay: timedelta | None, temperature: str | None) -> str | None:
    """`sprec_code_for` of what a legacy row tells (cached: types and delays repeat)."""
    start = datetime(2000, 1, 1, tzinfo=UTC)
    return sprec_code_for(
        given=None,
        specimen_type=specimen_type,
        container=None,
        collected_at=start if delay is not None else None,
        processed_at=start + delay if delay is not None else None,
        frozen_at=None,
        precentrifugation_temperature=temperature,
        postcentrifugation_temperature=None,
        centrifugation=None,
        second_centrifugation=None,
        storage=None,
    )


def _default(column: sa.Column) -> Any:
    default = column.default
    if default is None:
        return None
    return default.arg if default.is_scalar else default.arg(None)  # `utcnow`: the import's time


class _Writer:
    def __init__(self, session: Session, actor: Actor, plan: ImportPlan):
        self.session = session
        self.actor = actor
        self.plan = plan
        self.reason = f"legacy import of {plan.report.file}"
        self.defaults: dict[str, dict[str, Any]] = {}

    def row(self, table: sa.Table, **values: Any) -> dict[str, Any]:
        """Every column but the key: the values given, else the column's default, so an audit
        entry shows the whole row as `audit.snapshot` of an ORM object would."""
        if table.name not in self.defaults:
            self.defaults[table.name] = {
                column.key: _default(column) for column in table.columns if not column.primary_key
            }
        return self.defaults[table.name] | values

    def insert(self, table: sa.Table, rows: list[dict[str, Any]], *key: str) -> list[int]:
        """One bulk insert, then the new ids read back by a unique key (PostgreSQL's COPY
        returns nothing; on SQLite, RETURNING in the rows' order costs a statement per row)."""
        if not rows:
            return []
        insert_many(self.session, table, rows)
        wanted = [tuple(row[k] for k in key) for row in rows]
        found: dict[tuple, int] = {}
        first = table.c[key[0]]
        for chunk in chunks(sorted({w[0] for w in wanted}), BATCH_ROWS):
            columns = (table.c.id, *(table.c[k] for k in key))
            query = sa.select(*columns).where(one_of(self.session, first, chunk))
            found |= {tuple(r[1:]): r[0] for r in self.session.execute(query)}
        return [found[w] for w in wanted]

    def audit(self, action: str, table: sa.Table, rows, ids, reasons: Iterable[str] = ()):
        audit.record_many(
            self.session,
            actor=self.actor,
            entries=(
                {
                    "action": action,
                    "entity": table.name,
                    "entity_id": row_id,
                    "after": row | {"id": row_id},
                    "reason": reason or self.reason,
                }
                for row, row_id, reason in zip(rows, ids, reasons or [None] * len(ids), strict=True)
            ),
        )

    def create_participants(self) -> None:
        table, scratch = Participant.__table__, self.plan.scratch
        for new in scratch.to_create("person"):
            rows = [self.row(table, study_id=self.plan.study.id, code=code) for _, code in new]
            ids = self.insert(table, rows, "code")
            self.audit("participant.add", table, rows, ids)
            scratch.created("person", [rowid for rowid, _ in new], ids)

    def create_visits(self) -> None:
        table, scratch = Visit.__table__, self.plan.scratch
        for new in scratch.to_create("visit"):
            rows = [
                self.row(
                    table,
                    participant_id=participant_id,
                    label=label,
                    visit_date=date.fromisoformat(day),
                )
                for _, _, label, day, participant_id in new
            ]
            ids = self.insert(table, rows, "participant_id", "label")
            self.audit("visit.add", table, rows, ids)
            scratch.created("visit", [rowid for rowid, *_ in new], ids)

    def create_units(self) -> None:
        """Freezers, then their racks, then the racks' boxes, placed in the tree as `storage`
        places units (sort key and path); a box is created with the slots its tubes leave."""
        table = StorageUnit.__table__
        for kind in STORAGE_KINDS:
            units = (u for u in self.plan.units.values() if u.kind == kind and u.existing is None)
            for new in chunks(units, BATCH_ROWS):
                parents = [self.plan.units[u.parent].stored if u.parent else None for u in new]
                made = [self.unit(u, parent) for u, parent in zip(new, parents, strict=True)]
                ids = self.insert(table, [_values(m) for m in made], "barcode")
                for unit, made_unit, parent, unit_id in zip(new, made, parents, ids, strict=True):
                    unit.id = made_unit.id = unit_id
                    place_in_tree(made_unit, parent)
                    if kind != "box":  # what the next kind is placed in; a box is left
                        unit.created = made_unit
                self.session.execute(
                    sa.update(table)
                    .where(table.c.id == sa.bindparam("unit_id"))
                    .values(sort_key=sa.bindparam("new_sort_key"), path=sa.bindparam("new_path")),
                    [
                        {"unit_id": m.id, "new_sort_key": m.sort_key, "new_path": m.path}
                        for m in made
                    ],
                )
                self.audit("storage.add", table, [_values(m) for m in made], ids)

    def unit(self, unit: _Unit, parent: StorageUnit | None) -> StorageUnit:
        rows, cols, labels = unit.grid or (None, None, PositionLabels.letter_number)
        return StorageUnit(
            **self.row(
                StorageUnit.__table__,
                parent_id=parent.id if parent else None,
                kind=unit.kind,
                name=unit.name,
                barcode=unit.barcode,
                grid_rows=rows,
                grid_cols=cols,
                position_labels=labels,
                holds_specimens=unit.kind == "box",
                free_slots=rows * cols - unit.arriving if rows else None,
            )
        )

    def write_tubes(self, batch: list[tuple[int, _Tube, tuple[int, int]]]) -> None:
        """Specimens, their `accessioned` events and audit entries."""
        table = Specimen.__table__
        accession_ids = allocate_accession_ids(
            self.session, prefix=self.plan.study.id_prefix, count=len(batch)
        )
        people, visits = self.plan.scratch.ids({tube.subject for _, tube, _ in batch})
        specimens = [
            self.specimen(tube, place, accession_id, people, visits)
            for (_, tube, place), accession_id in zip(batch, accession_ids, strict=True)
        ]
        ids = self.insert(table, specimens, "accession_id")
        reasons = [f"{self.reason}, row {row}" for row, _, _ in batch]
        events = SpecimenEvent.__table__
        insert_many(
            self.session,
            events,
            [
                self.row(
                    events,
                    specimen_id=specimen_id,
                    event_type="accessioned",
                    actor_id=self.actor.user_id,
                    workstation=self.actor.workstation,
                    to_box_id=specimen["box_id"],
                    to_row=specimen["position_row"],
                    to_col=specimen["position_col"],
                    quantity_change=specimen["quantity"],
                    status_after=specimen["status"].value,
                    reason=reason,
                )
                for specimen, specimen_id, reason in zip(specimens, ids, reasons, strict=True)
            ],
        )
        self.audit("specimen.accessioned", table, specimens, ids, reasons)

    def specimen(
        self,
        tube: _Tube,
        place: tuple[int, int],
        accession_id: str,
        people: dict[str, int],
        visits: dict[tuple[str, str], int],
    ) -> dict[str, Any]:
        plan = self.plan
        delay = (
            tube.processed_at - tube.collected_at
            if tube.collected_at and tube.processed_at
            else None
        )
        temperature = plan.sheet.precentrifugation_temperature
        return self.row(
            Specimen.__table__,
            accession_id=accession_id,
            legacy_id=tube.legacy_id,
            participant_id=people[tube.subject],
            visit_id=visits[tube.subject, tube.visit] if tube.visit else None,
            kind=SpecimenKind.primary,
            specimen_type=tube.specimen_type,
            sprec_code=_sprec(tube.specimen_type, delay, temperature),
            collected_at=tube.collected_at,
            processed_at=tube.processed_at,
            precentrifugation_temperature=temperature,
            initial_quantity=tube.quantity,
            quantity=tube.quantity,
            unit=plan.unit,
            freeze_thaw_count=tube.thaws,
            box_id=plan.units[tube.box.upper()].id,
            position_row=place[0],
            position_col=place[1],
            notes=tube.notes,
        )


def _values(unit: StorageUnit) -> dict[str, Any]:
    return {k: v for k, v in audit.snapshot(unit).items() if k != "id"}
