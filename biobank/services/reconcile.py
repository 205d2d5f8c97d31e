"""Box reconciliation: compare a box/rack scanner's export with what the inventory records for
the box, position by position, and on commit make the inventory say what the scanner saw.

Scanners differ in column names, position style (`A01` or `A1`) and the words they write for an
empty well or an unreadable tube; all of these are accepted. An unreadable position proves
nothing, so it never marks the tube recorded there missing.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
from _csv import Reader
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, computed_field
from sqlmodel import Session, col, select

from biobank.domain.identifiers import check_specimen_id, normalize_scan
from biobank.domain.lifecycle import ALLOWED
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.positions import parse_position, position_label
from biobank.domain.vocabulary import SpecimenStatus
from biobank.errors import ValidationError
from biobank.inputs import SMALL_LIMIT, read_input
from biobank.models import Specimen, StorageUnit
from biobank.services import audit, custody, slots
from biobank.services.events import slot_text
from biobank.services.storage import get_unit, holder_grid

Status = Literal["match", "moved", "unexpected", "missing", "unread", "empty"]
STATUSES: tuple[Status, ...] = ("match", "moved", "unexpected", "missing", "unread", "empty")
AGREEING: frozenset[Status] = frozenset({"match", "empty"})

# Header names scanners use, compared lowercase without spaces or punctuation.
COLUMNS = {
    "rack": {"rackid", "rack", "rackbarcode", "box", "boxid", "boxbarcode", "plate", "plateid"},
    "position": {"position", "location", "well", "pos", "tubeposition", "wellposition"},
    "tube": {"tubeid", "tube", "tubebarcode", "barcode", "code", "sampleid", "specimenid"},
    "status": {"status", "result", "readstatus", "state"},
}
EMPTY_WORDS = frozenset({"NOTUBE", "EMPTY", "NOSAMPLE"})
UNREAD_WORDS = frozenset({"NOREAD", "ERROR", "UNREADABLE", "NOCODE", "FAILED", "MISREAD"})


@dataclass(frozen=True)
class ScanRow:
    """One line of a scanner export: its row in the file (the header is row 1), the rack it
    names, the position as written, and what was there (a tube's code, nothing, or a tube the
    scanner could not read)."""

    row: int
    rack: str | None
    position: str
    reading: Literal["tube", "empty", "unread"]
    raw: str
    code: str


class ReconcileLine(BaseModel):
    position: str
    status: Status
    expected: str | None = None
    printed: str | None = None  # the recorded tube's label: what a technician looks for
    found: str | None = None
    note: str | None = None


class PlannedMove(BaseModel):
    accession_id: str
    from_location: str | None
    to_position: str


class ReconcileReport(BaseModel):
    box: str
    path: str
    source: str | None
    committed: bool
    lines: list[ReconcileLine]
    moves: list[PlannedMove]
    missing: list[str]
    released: list[str]

    @computed_field  # type: ignore[prop-decorator]  # mypy takes no decorator over a property
    @property
    def counts(self) -> dict[str, int]:
        """Positions by status, but missing counts the tubes a commit marks missing: a tube seen
        nowhere is missing even where another tube (moved or unexpected) now stands."""
        counts: dict[str, int] = {
            status: sum(line.status == status for line in self.lines) for status in STATUSES
        }
        return counts | {"missing": len(self.missing)}

    @computed_field  # type: ignore[prop-decorator]  # mypy takes no decorator over a property
    @property
    def in_agreement(self) -> bool:
        """Every position a match, or empty as recorded."""
        return all(line.status in AGREEING for line in self.lines)


def read_scan_file(path: Path) -> str:
    """The text of a scanner's file (at most SMALL_LIMIT bytes: a rack's is a few KB)."""
    return scan_text(read_input(path, SMALL_LIMIT, "rack scan"))


def scan_text(data: bytes) -> str:
    """A scanner file's text: UTF-8 (with or without BOM), UTF-16 with a BOM, else Latin-1."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _word(text: str) -> str:
    return re.sub(r"[\s_-]+", "", text).upper()


def _reading(tube: str, status: str) -> Literal["tube", "empty", "unread"]:
    word, flag = _word(tube), _word(status)
    if word in UNREAD_WORDS or flag in UNREAD_WORDS or re.fullmatch(r"\?+", word):
        return "unread"
    if not word or word in EMPTY_WORDS:
        return "empty"
    if flag in EMPTY_WORDS:
        return "unread"  # a code where the scanner saw no tube: trust neither
    return "tube"


def read_rack_scan(text: str) -> list[ScanRow]:
    """The rows of a scanner export (comma, semicolon or tab separated, with a header; lines
    ending in LF, CR LF or CR alone)."""
    lines = io.StringIO(text.removeprefix("\ufeff"), newline="")
    delimiter = max(",;\t", key=lines.readline().count)
    lines.seek(0)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        return _scan_rows(reader)
    except csv.Error as error:  # a cell longer than csv's limit
        raise ValidationError(
            f"the scan cannot be read: {error}", field="file", row=reader.line_num
        ) from None


def _scan_rows(reader: Reader) -> list[ScanRow]:
    """The rows a `csv.reader` of the scan gives (its `line_num` is their row)."""
    header = next(reader, None)
    if not header:
        raise ValidationError("the scan file is empty", field="file")
    names = [re.sub(r"[^a-z0-9]", "", name.lower()) for name in header]
    index = {
        role: next((i for i, name in enumerate(names) if name in accepted), None)
        for role, accepted in COLUMNS.items()
    }
    for role, example in (("position", "Position or Location"), ("tube", "Tube ID or Barcode")):
        if index[role] is None:
            raise ValidationError(
                f"the scan has no {role} column (like {example})",
                field="columns",
                value=",".join(header),
                row=reader.line_num,
            )
    rows = []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        value = {
            role: cells[i].strip() if i is not None and i < len(cells) else ""
            for role, i in index.items()
        }
        if not value["position"]:
            raise ValidationError(
                "the row has no position", field="position", value="", row=reader.line_num
            )
        rows.append(
            ScanRow(
                row=reader.line_num,
                rack=value["rack"] or None,
                position=value["position"],
                reading=_reading(value["tube"], value["status"]),
                raw=value["tube"],
                code=normalize_scan(value["tube"]),
            )
        )
    return rows


def _grid(rows: list[ScanRow], box: StorageUnit) -> dict[tuple[int, int], ScanRow]:
    """Each row at its (row, column) of the box: the rack must be this box, and every
    position inside the grid and given once."""
    grid: dict[tuple[int, int], ScanRow] = {}
    size = holder_grid(box)
    for line in rows:
        if line.rack is not None and normalize_scan(line.rack) != box.barcode:
            raise ValidationError(
                f"the scan is of rack {line.rack}, not of box {box.barcode}",
                field="rack",
                value=line.rack,
                row=line.row,
            )
        try:
            key = parse_position(
                line.position, rows=size[0], cols=size[1], scheme=box.position_labels
            )
        except ValidationError as error:
            raise ValidationError(
                error.message, field="position", value=line.position, row=line.row
            ) from None
        if key in grid:
            raise ValidationError(
                f"position {line.position} is also on row {grid[key].row}",
                field="position",
                value=line.position,
                row=line.row,
            )
        grid[key] = line
    return grid


def _identify(
    session: Session, grid: dict[tuple[int, int], ScanRow]
) -> dict[tuple[int, int], Specimen]:
    """The specimens the scanned codes name: by accession ID, else by legacy ID (as
    `get_specimen` finds them). A tube read at two positions is an error."""
    tubes = {key: line for key, line in grid.items() if line.reading == "tube"}
    codes = {line.code for line in tubes.values()}
    legacy = codes | {line.raw for line in tubes.values()}
    by_accession: dict[str, Specimen] = {}
    by_legacy: dict[str, Specimen] = {}
    if tubes:
        for row in session.exec(
            select(Specimen).where(
                sa.or_(col(Specimen.accession_id).in_(codes), col(Specimen.legacy_id).in_(legacy))
            )
        ):
            by_accession[row.accession_id] = row
            if row.legacy_id is not None:
                by_legacy.setdefault(row.legacy_id, row)
    found: dict[tuple[int, int], Specimen] = {}
    first_row: dict[str, ScanRow] = {}  # by accession ID
    for key, line in tubes.items():
        specimen = (
            by_accession.get(line.code) or by_legacy.get(line.raw) or by_legacy.get(line.code)
        )
        if specimen is None:
            continue
        if specimen.accession_id in first_row:
            earlier = first_row[specimen.accession_id]
            raise ValidationError(
                f"{specimen.accession_id} is read at {earlier.position} (row {earlier.row}) "
                f"and again at {line.position}",
                field="tube",
                value=line.raw,
                row=line.row,
            )
        first_row[specimen.accession_id] = line
        found[key] = specimen
    return found


@dataclass
class _Plan:
    lines: list[ReconcileLine]
    moves: list[PlannedMove]
    missing: list[str]
    released: list[str]


def _compare(
    session: Session,
    box: StorageUnit,
    grid: dict[tuple[int, int], ScanRow],
    found: dict[tuple[int, int], Specimen],
) -> _Plan:
    recorded = {
        (s.position_row, s.position_col): s
        for s in session.exec(select(Specimen).where(Specimen.box_id == box.id))
    }

    rows, cols = holder_grid(box)

    def label(key: tuple[int, int]) -> str:
        return position_label(*key, cols=cols, scheme=box.position_labels)

    found_at = {s.id: key for key, s in found.items() if s.status in custody.PLACEABLE}
    plan = _Plan([], [], [], [])

    def gone(tube: Specimen) -> str | None:
        """A tube recorded here and seen nowhere is missing, unless it is out of the freezer
        (then only a tube found in its held position takes that position from it)."""
        if tube.status == SpecimenStatus.checked_out:
            plan.released.append(tube.accession_id)
            return "checked out: its held position is released"
        plan.missing.append(tube.accession_id)
        if SpecimenStatus.missing not in ALLOWED[tube.status]:
            return f"{tube.status.value}: cannot be marked missing"
        return None

    def account_for(tube: Specimen, out: ReconcileLine) -> None:
        """Where the tube recorded at `out` is: found elsewhere, or seen nowhere and so gone,
        whatever now stands in its place."""
        if tube.id in found_at:
            if out.status == "empty":
                out.note = f"found at {label(found_at[tube.id])}"
        elif out.status != "empty":  # another tube, known or not, stands in its place
            out.note = f"{out.note}; {tube.accession_id} {gone(tube) or 'not found: missing'}"
        elif tube.status == SpecimenStatus.checked_out:
            out.note = "checked out: its position is held"
        else:
            out.status, out.note = "missing", gone(tube)

    for key in ((r, c) for r in range(1, rows + 1) for c in range(1, cols + 1)):
        line, expected, tube = grid.get(key), recorded.get(key), found.get(key)
        out = ReconcileLine(  # unread, unless the scan says more
            position=label(key),
            status="unread",
            expected=expected.accession_id if expected is not None else None,
            printed=(expected.legacy_id or expected.accession_id) if expected is not None else None,
        )
        if line is None:
            out.note = "not in the scan file"
        elif line.reading == "tube" and tube is None:
            out.found = line.code
            if check_specimen_id(line.code) == "misread":
                out.note = "misread: fails its check character"
            else:
                out.status, out.note = "unexpected", "not in the inventory"
        elif tube is not None and tube is expected:
            out.status, out.found = "match", tube.accession_id
            if tube.status == SpecimenStatus.checked_out:
                out.note = "checked out, yet here: check it in"
        elif tube is not None and tube.id not in found_at:
            out.status, out.found = "unexpected", tube.accession_id
            out.note = f"recorded as {tube.status.value}"
        elif tube is not None:
            out.status, out.found = "moved", tube.accession_id
            origin = slot_text(session, tube.box_id, tube.position_row, tube.position_col)
            out.note = (
                f"recorded at {origin}"
                if origin
                else "recorded as missing"
                if tube.status == SpecimenStatus.missing
                else "not placed"
            )
            plan.moves.append(
                PlannedMove(
                    accession_id=tube.accession_id, from_location=origin, to_position=out.position
                )
            )
        elif line.reading == "empty":
            out.status = "empty"
        if expected is not None and out.status not in {"match", "unread"}:
            account_for(expected, out)  # an unread position proves nothing
        plan.lines.append(out)
    return plan


def reconcile_box(
    session: Session,
    *,
    actor: Actor,
    box: str,
    scan: str,
    source: str | None = None,
    commit: bool = False,
    reason: str | None = None,
) -> ReconcileReport:
    """Compare the text of a scanner export (`scan`, from the file `source`) with the box.

    Without `commit` nothing changes. With it, tubes found elsewhere are moved here (swaps
    included), tubes seen nowhere are marked missing, whatever stands in their place (a
    checked-out tube only loses its held position when another tube took it), and the
    reconciliation is audited: all in the caller's transaction. Unexpected and unread positions
    change nothing.
    """
    require(actor, Permission.move if commit else Permission.view_inventory)
    unit = get_unit(session, box, field="box")
    if not unit.holds_specimens:
        raise ValidationError(f"{unit.barcode} is a {unit.kind}, not a box", field="box", value=box)
    if commit:
        unit = slots.lock_box(session, unit)
    grid = _grid(read_rack_scan(scan), unit)
    plan = _compare(session, unit, grid, _identify(session, grid))
    report = ReconcileReport(
        box=unit.barcode,
        path=unit.path,
        source=source,
        committed=commit,
        lines=plan.lines,
        moves=plan.moves,
        missing=plan.missing,
        released=plan.released,
    )
    if commit:
        _apply(session, actor=actor, unit=unit, report=report, scan=scan, reason=reason)
    return report


def _apply(
    session: Session,
    *,
    actor: Actor,
    unit: StorageUnit,
    report: ReconcileReport,
    scan: str,
    reason: str | None,
) -> None:
    why = reason or f"reconciled {unit.barcode} with a rack scan"
    for accession in report.released:
        custody.release_position(session, actor=actor, accession=accession, reason=why)
    for accession in report.missing:
        custody.mark_missing(session, actor=actor, accession=accession, reason=why)
    if report.moves:
        custody.rearrange(
            session,
            actor=actor,
            box=unit.barcode,
            placements={m.accession_id: m.to_position for m in report.moves},
            reason=why,
        )
    audit.record(
        session,
        actor=actor,
        action="storage.reconcile",
        entity="storage_unit",
        entity_id=unit.id,
        after={
            "box": unit.barcode,
            "source": report.source,
            "scan_sha256": hashlib.sha256(scan.encode()).hexdigest(),
            "counts": report.counts,
            "differences": [
                line.model_dump() for line in report.lines if line.status not in AGREEING
            ],
            "moved": [m.accession_id for m in report.moves],
            "missing": report.missing,
            "released": report.released,
        },
        reason=reason,
    )
