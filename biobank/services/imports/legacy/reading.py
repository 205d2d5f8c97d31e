"""Reading a legacy sheet: its format (which header is which field, how dates, times, volumes
and boxes are written), and each row turned into the values of one tube, or its faults."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from biobank.domain.positions import parse_grid
from biobank.domain.specimen_values import (
    check_times,
    positive_quantity,
    specimen_type_code,
    temperature_code,
)
from biobank.domain.visits import canonical_visit_label
from biobank.domain.vocabulary import QuantityUnit
from biobank.errors import ValidationError
from biobank.inputs import read_toml
from biobank.services.participants import PARTICIPANT_CODE
from biobank.stored_text import check_text

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
TIME_FORMATS = ("%H:%M", "%H:%M:%S", "%I:%M %p", "%I:%M:%S %p")
CLOCK_SKEW = timedelta(days=1)  # the lab's calendar may be a day ahead of this workstation's
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
    sheet: str | None = None  # a workbook's sheet to read; None: its first


def sheet_format(
    mapping: Path | None = None,
    *,
    columns: Mapping[str, str] | None = None,
    date_format: str | None = None,
    unit: str | None = None,
    timezone: str | None = None,
    box_grid: str | None = None,
    precentrifugation_temperature: str | None = None,
    sheet: str | None = None,
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
        "sheet": sheet,
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
        unit=quantity_unit(chosen["unit"], field="unit") if "unit" in chosen else None,
        timezone=_zone(chosen["timezone"]) if "timezone" in chosen else None,
        box_grid=_grid(chosen.get("box_grid", SheetFormat.box_grid)),
        precentrifugation_temperature=temperature_code(
            chosen.get("precentrifugation_temperature"), "precentrifugation_temperature"
        ),
        sheet=_sheet_name(chosen.get("sheet")),
    )


def _sheet_name(given: object) -> str | None:
    if given is not None and (not isinstance(given, str) or not given.strip()):
        raise ValidationError("sheet must name a sheet of the workbook", field="sheet", value=given)
    return given


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


def quantity_unit(text: object, *, field: str) -> QuantityUnit:
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


def header_key(header: str) -> str:
    """Headers match without regard to case or spacing."""
    return " ".join(header.split()).casefold()


# --- One row ------------------------------------------------------------------------------


class Tube(NamedTuple):
    """One row's values, checked and converted (times in UTC)."""

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
def _day(raw: str, pattern: str) -> tuple[date, time | None]:
    """A date in the sheet's format, or in ISO's (`2017-04-28`: how a workbook's date cells
    read, and unambiguous whatever the sheet's format), or ISO's date and time of day
    (`2017-04-28 09:30`: a workbook's cell holding both); and that time of day, if any."""
    day: date | None
    clock: time | None = None
    try:
        day = datetime.strptime(raw, pattern).date()
    except ValueError:
        day, clock = _iso_moment(raw)
    if day is None:
        example = date(2017, 4, 28).strftime(pattern)
        raise ValidationError(f"not a date like {example} ({pattern})")
    if day > date.today() + CLOCK_SKEW:
        raise ValidationError("the collection date is in the future")
    return day, clock


def _iso_moment(raw: str) -> tuple[date | None, time | None]:
    """`YYYY-MM-DD`, or that and ` HH:MM[:SS]`; (None, None) for anything else."""
    if len(raw) not in (10, 16, 19) or raw[4:5] != "-" or raw[7:8] != "-":
        return None, None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None, None
    return moment.date(), (moment.time() if len(raw) > 10 else None)


class RowReader:
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

    def read(self, cells: list[str], faults: list[RowFault]) -> Tube | None:
        """The values of one row, or None (and `faults` filled) if any is wrong."""
        found = len(faults)
        width = len(cells)
        values: list[Any] = []  # each field's value as converted, or None
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
        *tube, (day, at), collected, processed, freezer, rack, box, position, thaws, notes = values
        if at is not None and collected not in (None, at):
            reason = f"the date's time of day, {at:%H:%M}, is not the time collected"
            faults.append(("date_collected", cells[self.columns["date_collected"]].strip(), reason))
            return None
        collected = collected or at  # a date cell's time of day is when it was collected
        collected_at, processed_at = self.utc(day, collected), self.utc(day, processed)
        try:
            check_times({"collected_at": collected_at, "processed_at": processed_at})
        except ValidationError as error:
            name = "time_processed" if error.field == "processed_at" else "time_collected"
            faults.append((name, cells[self.columns[name]].strip(), error.message))
            return None
        tube += [day, collected_at, processed_at, freezer, rack, box, position, thaws or 0, notes]
        return Tube._make(tube)

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
