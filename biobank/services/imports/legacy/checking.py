"""Checking a legacy sheet, a batch of rows at a time, against itself and the database: every
fault found before anything is written, and the plan writing follows."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from sqlmodel import Session, col, select

from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.positions import parse_position
from biobank.domain.visits import by_canonical_label
from biobank.domain.vocabulary import PositionLabels, QuantityUnit
from biobank.errors import ValidationError
from biobank.models import Participant, Specimen, StorageUnit, Study, Visit
from biobank.services.imports.common import (
    DataRow,
    FaultLog,
    ImportReport,
    batches,
    too_many_values,
)
from biobank.services.imports.legacy.planning import (
    STORAGE_KINDS,
    ImportPlan,
    Person,
    Scratch,
    Unit,
)
from biobank.services.imports.legacy.reading import (
    OPTIONAL_FIELDS,
    RowFault,
    RowReader,
    SheetFormat,
    Tube,
    header_key,
    quantity_unit,
    sheet_format,
)
from biobank.services.slots import check_box_accepts
from biobank.services.storage import subtree_range
from biobank.services.studies import get_study
from biobank.tabular import new_spool, open_source, spool_batch

HEADER_SEARCH = 10  # rows above the header a sheet may have: a title, a note, a blank cell


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
        self.source = open_source(path, notices, "sheet", sheet=sheet.sheet)
        self.report = ImportReport(
            file=path.name,
            study=study.code,
            encoding=self.source.encoding,
            delimiter=self.source.delimiter,
            notices=notices,
            new_participants=0,
            new_visits=0,
            new_units=0,
            imported=0,
        )
        self.log = FaultLog(self.report)
        self.headers: dict[str, str] = {}  # field → its header as the file spells it
        self.people: dict[str, Person] = {}  # the current batch's participants
        self.visit_days: dict[tuple[str, str], date] = {}  # its visits → earliest day
        self.visit_clashes: dict[tuple[str, str], str] = {}  # stored visits that are one
        self.units: dict[str, Unit] = {}
        self.stored_units: dict[str, StorageUnit | None] = {}  # barcode → as found
        self.scratch = Scratch()
        self.legacy_rows: dict[str, int] = {}  # the current batch's legacy IDs → first row
        self.recorded: set[str | None] = set()  # the batch's legacy IDs already recorded
        self.spool = new_spool()

    def run(self) -> ImportPlan:
        header, records = self.find_header(self.source.records())
        if header is None:
            self.fault(None, None, None, None, "the file is empty")
        columns, unit = self.read_header(*header) if header else ({}, QuantityUnit.uL)
        try:
            if header and columns:
                reader = RowReader(columns, self.sheet)
                for batch in batches(enumerate(records, start=1)):
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

    def fault(
        self, row: int | None, line: int | None, name: str | None, value: str | None, reason: str
    ) -> None:
        """A fault of field `name` (None: of the row or the file), shown under its header."""
        column = (self.headers.get(name) or self.sheet.columns[name]) if name else None
        self.log.add(row, line, column, value, reason)

    def find_header(
        self, records: Iterator[tuple[int, list[str]]]
    ) -> tuple[tuple[int, list[str]] | None, Iterator[tuple[int, list[str]]]]:
        """The header, and the rows after it. A lab's sheet may have a title or a note above
        its header: within the first HEADER_SEARCH rows, the first holding every required
        field's header is the header, and a notice says what was left above it; with none,
        the first row is (and its missing columns are faults)."""
        required = [h for name, h in self.sheet.columns.items() if name not in OPTIONAL_FIELDS]
        wanted = {header_key(h) for h in required}
        above: list[tuple[int, list[str]]] = []
        for line, cells in records:
            if wanted <= {header_key(cell) for cell in cells}:
                if above:
                    title = next(c.strip() for c in above[0][1] if c.strip())
                    self.report.notices.append(
                        f"the header is on line {line}: the {len(above)} row(s) above it were "
                        f"not read (the first begins {title[:40]!r})"
                    )
                return (line, cells), records
            above.append((line, cells))
            if len(above) > HEADER_SEARCH:
                break
        if not above:
            return None, records
        return above[0], itertools.chain(above[1:], records)

    def read_header(self, line: int, cells: list[str]) -> tuple[dict[str, int], QuantityUnit]:
        """Each field's column; nothing if a column is missing or named twice."""
        keys = [header_key(header) for header in cells]
        columns: dict[str, int] = {}
        for name, header in self.sheet.columns.items():
            if header_key(header) in keys:
                columns[name] = keys.index(header_key(header))
                self.headers[name] = cells[columns[name]].strip()
                if keys.count(header_key(header)) > 1:
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
            return quantity_unit(written.group(1), field="volume")
        except ValidationError as error:
            reason = f"{error.message}; give the unit with --unit"
            self.fault(None, line, "volume", self.headers["volume"], reason)
            return QuantityUnit.uL

    def check_batch(self, batch: list[DataRow], reader: RowReader, width: int) -> None:
        read = []
        for row, (line, cells) in batch:
            faults: list[RowFault] = []
            overflow = too_many_values(cells, width, self.source.delimiter)
            if overflow:
                faults.append((None, None, overflow))
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

    def look_up(self, tubes: list[Tube]) -> None:
        """What the database knows of a batch's participants, units and legacy IDs, with a
        few queries for the whole batch."""
        session = self.session
        codes = dict.fromkeys(t.subject for t in tubes)  # in the sheet's order
        self.people = self.scratch.people(codes)
        self.visit_days = {}
        met = {code: Person(None) for code in codes if code not in self.people}  # first met
        found = session.exec(
            select(col(Participant.code), col(Participant.id), col(Participant.study_id)).where(
                col(Participant.code).in_(met)
            )
        ).all()
        for code, participant_id, study_id in found:
            person = met[code] = Person(participant_id)
            if study_id != self.study.id:
                other = session.get_one(Study, study_id).code
                person.fault = f"participant {code} is in study {other}, not {self.study.code}"
        self.scratch.add_people(met)
        self.people |= met
        codes_by_id = {participant_id: code for code, participant_id, _ in found}
        stored: dict[str, dict[str, tuple[int | None, date]]] = {}
        for participant_id, label, visit_id, visit_date in session.exec(
            select(
                col(Visit.participant_id), col(Visit.label), col(Visit.id), col(Visit.visit_date)
            ).where(col(Visit.participant_id).in_(codes_by_id))
        ):
            stored.setdefault(codes_by_id[participant_id], {})[label] = (visit_id, visit_date)
        # the sheet's labels are canonical: a stored visit is noted so
        known: list[tuple[str, str, int | None, date]] = []
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
        units = select(StorageUnit).where(col(StorageUnit.barcode).in_(barcodes))
        for unit in session.exec(units):
            self.stored_units[unit.barcode] = unit
        self.recorded = set(
            session.exec(
                select(col(Specimen.legacy_id)).where(
                    col(Specimen.legacy_id).in_({t.legacy_id for t in tubes})
                )
            )
        )

    def check_tube(self, tube: Tube, row: int, faults: list[RowFault]) -> tuple[int, int] | None:
        first = self.legacy_rows.setdefault(tube.legacy_id, row)
        if first != row:
            faults.append(("legacy_id", tube.legacy_id, f"the same ID is on row {first}"))
        elif tube.legacy_id in self.recorded:
            faults.append(("legacy_id", tube.legacy_id, "a specimen with this ID is recorded"))
        person = self.people[tube.subject]
        if person.fault:
            faults.append(("subject", tube.subject, person.fault))
        elif tube.visit is not None:
            key = (tube.subject, tube.visit)
            if key in self.visit_clashes:
                faults.append(("visit", tube.visit, self.visit_clashes[key]))
            else:  # a visit recorded keeps its day (`add_visits`)
                day = self.visit_days.get(key)
                self.visit_days[key] = (
                    tube.collected_on if day is None else min(day, tube.collected_on)
                )
        box = self.place(tube, row, faults)
        return self.check_position(tube, box, row, faults) if box else None

    def place(self, tube: Tube, row: int, faults: list[RowFault]) -> Unit | None:
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

    def new_unit(self, kind: str, name: str, parent: str | None, row: int) -> Unit:
        barcode = name.upper()
        existing = self.stored_units[barcode]
        grid = (*self.sheet.box_grid, PositionLabels.letter_number) if kind == "box" else None
        unit = self.units[barcode] = Unit(kind, barcode, name, parent, row, grid, existing)
        if existing is None:
            return unit
        unit.id = existing.id
        container = self.units[parent].existing if parent else None
        if existing.holds_specimens != (kind == "box"):
            unit.fault = f"{barcode} is a {existing.kind} in the database, not a {kind}"
        elif parent and not (container and _inside(existing, container)):
            unit.fault = f"{barcode} is in {existing.path} in the database, not in {parent}"
        elif kind == "box":
            rows, cols = existing.grid_rows, existing.grid_cols
            assert rows and cols, "a unit that holds tubes has a grid"
            unit.grid = (rows, cols, existing.position_labels)
            tubes = select(
                col(Specimen.accession_id), col(Specimen.position_row), col(Specimen.position_col)
            ).where(Specimen.box_id == existing.id)
            unit.taken = {
                (r, c): accession_id
                for accession_id, r, c in self.session.exec(tubes)
                if r is not None and c is not None  # a tube in a box has a position
            }
        return unit

    def check_position(
        self, tube: Tube, box: Unit, row: int, faults: list[RowFault]
    ) -> tuple[int, int] | None:
        if box.existing is not None:
            try:
                check_box_accepts(box.existing, tube.specimen_type)
            except ValidationError as error:
                faults.append(("specimen_type", tube.specimen_type, error.message))
        assert box.grid is not None, "only a box has positions"
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
        report.new_participants = self.scratch.count_new("person")
        report.new_visits = self.scratch.count_new("visit")
        report.new_units = sum(u.existing is None for u in self.units.values())
        for unit in self.units.values():  # positions checked: writing needs only the count
            unit.first_rows, unit.taken = None, {}
        self.log.close()


def _inside(unit: StorageUnit, container: StorageUnit) -> bool:
    low, high = subtree_range(container)
    return low <= unit.sort_key < high
