"""A legacy inventory kept as an Excel workbook imports as its CSV would: dates, times and
numbers stored as Excel stores them, the sheet chosen by name, faults named by the row the
spreadsheet shows; a REDCap data dictionary saved as a workbook reads as its download; and
what is not a workbook to read here is refused, changing nothing."""

import csv
import json
import zipfile
from contextlib import closing
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import openpyxl
import pytest
import sqlalchemy as sa

from biobank import workbooks
from biobank.db import uow
from biobank.errors import ValidationError
from biobank.models import Specimen
from biobank.services import scan, studies
from biobank.services.imports import legacy, redcap

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "legacy_inventory.csv"
REDCAP = DATA / "redcap"
NEW_YORK = "America/New_York"
NUMBERS = {"Volume (uL)", "Thaws"}


@pytest.fixture
def study(engine, admin):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="SLE", title="Lupus registry")


def _sample_rows() -> list[list[str]]:
    """The sample with its month-12 tubes renamed, as `test_legacy_import` cleans it."""
    with SAMPLE.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    return [rows[0]] + [
        [c.replace("-MO-", "-M12-", 1) if row[2] == "month_12" else c for c in row]
        for row in rows[1:]
    ]


def _excel_cell(header: str, text: str) -> object:
    """A cell as Excel stores what a technician typed: dates and times as numbers shown in a
    date or time format (openpyxl writes them so), counts and volumes as numbers."""
    if not text:
        return None
    if header == "Date collected":
        return datetime.strptime(text, "%m/%d/%Y")
    if header.startswith("Time"):
        return datetime.strptime(text, "%H:%M").time()
    if header in NUMBERS and text.isdigit():
        return float(text)  # Excel keeps every number as a double
    return text


def _workbook(path: Path, rows: list[list[str]], *, first_sheet: str | None = "Read me") -> Path:
    book = openpyxl.Workbook()
    notes = book.active
    if first_sheet:
        notes.title = first_sheet
        notes.append(["Freezer inventory, kept by the lab since 2017"])
        tubes = book.create_sheet("Tubes")
    else:
        tubes, tubes.title = notes, "Tubes"
    header = rows[0]
    tubes.append(header)
    for row in rows[1:]:
        tubes.append(
            [_excel_cell(h, c) for h, c in zip([*header, *row[len(header) :]], row, strict=False)]
        )
    for column, name in enumerate(header, start=1):
        formats = {"Date collected": "m/d/yyyy", "Time collected": "h:mm", "Time processed": "h:mm"}
        if name in formats:
            for (cell,) in tubes.iter_rows(min_row=2, min_col=column, max_col=column):
                cell.number_format = formats[name]
    book.save(path)
    return path


def _import(engine, admin, path: Path, **options):
    with uow(engine) as session:
        sheet = legacy.sheet_format(**options)
        plan = legacy.check_inventory(session, actor=admin, path=path, study="SLE", sheet=sheet)
        with closing(plan):
            if plan.report.faults:
                return plan.report
            return legacy.write_inventory(session, actor=admin, plan=plan)


def _specimens(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(Specimen)).scalar_one()


def test_a_workbook_imports_as_its_csv_does(engine, admin, study, tmp_path):
    rows = _sample_rows()
    path = _workbook(tmp_path / "inventory.xlsx", rows)
    report = _import(engine, admin, path, timezone=NEW_YORK, sheet="tubes")  # any case
    assert (report.encoding, report.delimiter) == ("xlsx", "")
    assert (report.rows, report.imported, report.fault_count) == (len(rows) - 1, 401, 0)
    with uow(engine, readonly=True) as session:
        tube = scan.resolve_scan(session, actor=admin, scanned="SLE0001-BA-SER-01").specimen
    assert (tube.participant_code, tube.visit_label, tube.quantity) == ("SLE0001", "baseline", 500)
    assert tube.collected_at == datetime(2017, 4, 28, 13, 0, tzinfo=UTC)  # 09:00 in New York
    assert tube.processed_at == datetime(2017, 4, 28, 18, 0, tzinfo=UTC)
    assert tube.location == "FRZ-01 > R01 > BOX-0001 A7" and tube.freeze_thaw_count == 1
    with engine.connect() as connection:
        query = sa.select(Specimen.legacy_id, Specimen.initial_quantity)
        volumes = {legacy_id: quantity for legacy_id, quantity in connection.execute(query)}
    assert volumes == {row[0]: float(row[4]) for row in rows[1:]}


def test_the_first_sheet_is_read_unless_another_is_named(engine, admin, study, tmp_path):
    rows = _sample_rows()[:6]
    alone = _workbook(tmp_path / "alone.xlsx", rows, first_sheet=None)
    report = _import(engine, admin, alone)
    assert (report.imported, report.notices) == (5, [])

    several = _workbook(tmp_path / "several.xlsx", rows)  # "Read me" first, then "Tubes"
    report = _import(engine, admin, several)
    assert report.faults and report.faults[0].column == "Sample ID"  # the notes have no header
    assert "read its first sheet, 'Read me', of 'Read me', 'Tubes'" in report.notices[0]
    with pytest.raises(
        ValidationError, match=r"no sheet 'Freezer 2' \(sheets: 'Read me', 'Tubes'\)"
    ):
        _import(engine, admin, several, sheet="Freezer 2")
    assert _specimens(engine) == 5


def test_faults_name_the_row_the_spreadsheet_shows(engine, admin, study, tmp_path):
    rows = _sample_rows()[:8]
    rows[4][4] = "lots"  # the volume of the tube on the sheet's row 5
    book_path = _workbook(tmp_path / "faulty.xlsx", rows, first_sheet=None)
    book = openpyxl.load_workbook(book_path)
    sheet = book["Tubes"]
    sheet.insert_rows(3)  # a blank row the technician left: it counts as the spreadsheet shows
    sheet["E8"] = "=E2*2"  # a formula no program has computed: no value to read
    book.save(book_path)
    report = _import(engine, admin, book_path)
    assert [(f.row, f.line, f.column, f.value) for f in report.faults] == [
        (4, 6, "Volume (uL)", "lots"),
        (6, 8, "Volume (uL)", ""),
    ]
    assert _specimens(engine) == 0


def test_a_row_past_the_header_says_so_without_a_delimiter(engine, admin, study, tmp_path):
    rows = _sample_rows()[:3]
    rows[2] = rows[2] + ["", "shelf 3"]
    report = _import(engine, admin, _workbook(tmp_path / "wide.xlsx", rows, first_sheet=None))
    (fault,) = report.faults
    assert (fault.row, fault.line) == (2, 3)
    assert fault.reason == "16 values for 14 columns: a value beyond the header's last column"


def test_iso_dates_read_whatever_the_sheet_format(engine, admin, study, tmp_path):
    """A date typed as text in ISO form is a date in any lab's sheet; other text still needs
    the sheet's format."""
    rows = _sample_rows()[:3]
    rows[1][5], rows[2][5] = "2017-04-28", "28/04/2017"
    with (tmp_path / "mixed.csv").open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(rows)
    report = _import(engine, admin, tmp_path / "mixed.csv")
    assert [(f.row, f.column, f.value) for f in report.faults] == [
        (2, "Date collected", "28/04/2017")
    ]
    assert "not a date like 04/28/2017" in report.faults[0].reason


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_what_is_not_a_readable_workbook_is_refused(engine, admin, study, tmp_path, monkeypatch):
    xls = tmp_path / "old.xls"
    xls.write_bytes(workbooks.OLE_SIGNATURE + bytes(504))
    ods = _zip(tmp_path / "inventory.ods", {"mimetype": workbooks._ODS, "content.xml": b"<x/>"})
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(workbooks.ZIP_SIGNATURE + b"not really a zip")
    not_excel = _zip(tmp_path / "other.xlsx", {"readme.txt": b"hello"})
    cases = [
        (xls, "Excel 97-2003 workbook (.xls): save it as .xlsx or CSV"),
        (ods, "OpenDocument spreadsheet (.ods): save it as .xlsx or CSV"),
        (broken, "not a readable .xlsx workbook"),
        (not_excel, "not a readable .xlsx workbook"),
    ]
    for path, reason in cases:
        with pytest.raises(
            ValidationError, match=reason.replace("(", r"\(").replace(")", r"\)")
        ) as caught:
            _import(engine, admin, path)
        assert caught.value.field == "file" and str(path) in caught.value.message
    merged = _workbook(tmp_path / "merged.xlsx", _sample_rows()[:3], first_sheet=None)
    with zipfile.ZipFile(merged) as archive:  # a merge no spreadsheet could make
        parts = {n: archive.read(n) for n in archive.namelist()}
    sheet = "xl/worksheets/sheet1.xml"
    parts[sheet] = parts[sheet].replace(
        b"</worksheet>", b'<mergeCells count="1"><mergeCell ref="A1:@@"/></mergeCells></worksheet>'
    )
    broken_merge = _zip(tmp_path / "broken_merge.xlsx", parts)
    with pytest.raises(ValidationError, match="its merged cells are not readable"):
        _import(engine, admin, broken_merge)
    parts[sheet] = parts[sheet].replace(b"A1:@@", b"A1:XFD1048576")  # every cell there can be
    with pytest.raises(ValidationError, match="merged across more than 256 columns"):
        _import(engine, admin, _zip(tmp_path / "wide_merge.xlsx", parts))
    bomb = _workbook(tmp_path / "bomb.xlsx", _sample_rows()[:3], first_sheet=None)
    monkeypatch.setattr(workbooks, "IMPORT_LIMIT", 10_000)  # the sheets unpack to more
    with pytest.raises(ValidationError, match="unpacks to more than"):
        _import(engine, admin, bomb)
    assert _specimens(engine) == 0


def test_a_csv_named_xlsx_reads_as_csv(engine, admin, study, tmp_path):
    """What a file is goes by what it holds, not by its name."""
    path = tmp_path / "saved-as.xlsx"
    with path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(_sample_rows()[:4])
    report = _import(engine, admin, path, sheet="Tubes")
    assert (report.encoding, report.imported) == ("utf-8", 3)
    assert "not a workbook: it has no sheets, --sheet is ignored" in report.notices[0]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        ("SLE0001", "SLE0001"),
        (250.0, "250"),
        (12.5, "12.5"),
        (7, "7"),
        (True, "TRUE"),
        (datetime(2017, 4, 28), "2017-04-28"),
        (datetime(2017, 4, 28, 9, 30), "2017-04-28 09:30"),
        (datetime(2017, 4, 28, 9, 30, 15), "2017-04-28 09:30:15"),
        (date(2017, 4, 28), "2017-04-28"),
        (time(9, 30), "09:30"),
        (time(14, 5, 9), "14:05:09"),
        (timedelta(hours=5, minutes=30), "05:30"),
        ("#N/A", "#N/A"),
    ],
)
def test_cells_read_as_a_csv_export_writes_them(value, text):
    assert workbooks.cell_text(value) == text


def test_cli_imports_a_workbooks_named_sheet(fresh_cli, tmp_path):
    fresh_cli("study", "add", "SLE", "--title", "Lupus registry")
    path = _workbook(tmp_path / "inventory.xlsx", _sample_rows()[:11])
    dry = fresh_cli(
        "import", "inventory", path, "--study", "SLE", "--sheet", "Tubes", "--dry-run", "--json"
    )
    assert json.loads(dry.stdout)["rows"] == 10 and json.loads(dry.stdout)["encoding"] == "xlsx"
    done = fresh_cli("import", "inventory", path, "--study", "SLE", "--sheet", "Tubes")
    assert "imported 10 specimens" in done.stderr
    missing = fresh_cli("import", "inventory", path, "--study", "SLE", "--sheet", "Box 9", code=2)
    assert "no sheet 'Box 9'" in missing.stderr


def test_a_mapping_file_names_the_sheet(engine, admin, study, tmp_path):
    path = _workbook(tmp_path / "inventory.xlsx", _sample_rows()[:4])
    mapping = tmp_path / "map.toml"
    mapping.write_text('sheet = "Tubes"\ntimezone = "America/New_York"\n')
    report = _import(engine, admin, path, mapping=mapping)
    assert (report.imported, report.notices) == (3, [])
    mapping.write_text("sheet = 2\n")
    with pytest.raises(ValidationError, match="sheet must name a sheet") as caught:
        legacy.sheet_format(mapping)
    assert caught.value.field == "sheet"


def test_a_redcap_dictionary_saved_as_a_workbook_reads_as_its_download(
    engine, admin, study, tmp_path
):
    """Someone opened the dictionary in Excel to read it, and saved it as a workbook."""
    book = openpyxl.Workbook()
    with (REDCAP / "redcap_data_dictionary.csv").open(encoding="utf-8-sig", newline="") as file:
        for row in csv.reader(file):
            book.active.append(row)
    book.save(tmp_path / "dictionary.xlsx")
    reports = []
    for dictionary in (REDCAP / "redcap_data_dictionary.csv", tmp_path / "dictionary.xlsx"):
        with uow(engine, readonly=True) as session:
            plan = redcap.check_redcap(
                session, actor=admin, dictionary=dictionary, records=REDCAP / "redcap_records.csv"
            )
            reports.append(plan.report.model_dump(exclude={"dictionary"}))
    assert reports[0]["fault_count"] == 0 and reports[0]["fields"] > 10
    assert reports[1] == reports[0]


def test_a_title_above_the_header_is_passed_over_and_said(engine, admin, study, tmp_path):
    """Labs head their sheets: a title, a line of notes, a blank row, then the header."""
    rows = _sample_rows()[:4]
    path = _workbook(tmp_path / "titled.xlsx", rows, first_sheet=None)
    book = openpyxl.load_workbook(path)
    sheet = book["Tubes"]
    sheet.insert_rows(1, amount=3)
    sheet["A1"], sheet["B2"] = "Freezer inventory, lupus registry", "kept by J. Doe"
    book.save(path)
    report = _import(engine, admin, path)
    assert (report.imported, report.fault_count) == (3, 0)
    assert report.notices == [
        "the header is on line 4: the 2 row(s) above it were not read (the first begins "
        "'Freezer inventory, lupus registry')"
    ]

    csv_path = tmp_path / "titled.csv"  # the same sheet saved as CSV: its title too
    sample = _sample_rows()
    with csv_path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([["Inventory 2019"], [], sample[0], *sample[4:7]])
    report = _import(engine, admin, csv_path)
    assert report.imported == 3 and "the header is on line 3" in report.notices[0]


def test_with_no_header_in_its_first_rows_the_first_row_is_read_as_one(
    engine, admin, study, tmp_path
):
    rows = [["Tube", "Patient"], *_sample_rows()[1:3]]
    path = tmp_path / "headless.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(rows)
    report = _import(engine, admin, path)
    assert {(f.line, f.column) for f in report.faults} >= {(1, "Sample ID"), (1, "Subject")}
    assert report.rows == 0 and _specimens(engine) == 0


def test_a_merged_cell_reads_as_its_value_in_every_row_it_spans(engine, admin, study, tmp_path):
    """A lab merges the freezer, rack and box cells down the rows of one box: each row reads
    the value shown beside it."""
    rows = _sample_rows()[:7]
    header = rows[0]
    freezer, rack, box = (header.index(h) + 1 for h in ("Freezer", "Rack", "Box"))
    for row in rows[2:]:
        row[freezer - 1] = row[rack - 1] = row[box - 1] = ""  # what a merge leaves below
    path = _workbook(tmp_path / "merged.xlsx", rows, first_sheet=None)
    book = openpyxl.load_workbook(path)
    sheet = book["Tubes"]
    for column in (freezer, rack, box):
        sheet.merge_cells(start_row=2, end_row=7, start_column=column, end_column=column)
    sheet.merge_cells("N2:N3")  # the first two tubes share a comment
    sheet["N2"] = "drawn late"
    book.save(path)
    report = _import(engine, admin, path)
    assert (report.imported, report.fault_count) == (6, 0)
    assert "4 merged cells (I2:I7, J2:J7, K2:K7, …) read as their value" in report.notices[0]
    with engine.connect() as connection:
        found = connection.execute(
            sa.select(Specimen.legacy_id, Specimen.notes).order_by(Specimen.id)
        ).all()
    later = [row[-1] or None for row in rows[3:]]  # the sheet's own comments
    assert [notes for _, notes in found] == ["drawn late", "drawn late", *later]
    with uow(engine, readonly=True) as session:
        last = scan.resolve_scan(session, actor=admin, scanned=rows[6][0]).specimen
    assert last.location.startswith("FRZ-01 > R01 > BOX-0001 ")


def test_a_date_cell_holding_the_time_too_gives_the_time_collected(engine, admin, study, tmp_path):
    """Some labs keep the draw's date and time in one cell: its time is the time collected
    when the sheet gives none beside it, and one that disagrees with it is a fault."""
    rows = _sample_rows()[:4]
    header = rows[0]
    day, clock = header.index("Date collected"), header.index("Time collected")
    path = _workbook(tmp_path / "moments.xlsx", rows, first_sheet=None)
    book = openpyxl.load_workbook(path)
    sheet = book["Tubes"]
    for number in (2, 3, 4):
        cell = sheet.cell(row=number, column=day + 1)
        cell.value, cell.number_format = datetime(2017, 4, 28, 9, 15), "m/d/yyyy h:mm"
    sheet.cell(row=2, column=clock + 1).value = None  # the time only in the date's cell
    sheet.cell(row=3, column=clock + 1).value = time(9, 15)  # the same time beside it
    book.save(path)
    report = _import(engine, admin, path, timezone=NEW_YORK)
    assert [(f.row, f.column, f.value) for f in report.faults] == [
        (3, "Date collected", "2017-04-28 09:15")  # the sample's 09:00 beside it
    ]
    assert "is not the time collected" in report.faults[0].reason
    sheet.cell(row=4, column=clock + 1).value = None
    book.save(path)
    report = _import(engine, admin, path, timezone=NEW_YORK)
    assert (report.imported, report.fault_count) == (3, 0)
    with engine.connect() as connection:
        collected = connection.execute(sa.select(Specimen.collected_at)).scalars().all()
    assert {c.replace(tzinfo=UTC) if c.tzinfo is None else c for c in collected} == {
        datetime(2017, 4, 28, 13, 15, tzinfo=UTC)  # 09:15 in New York
    }
