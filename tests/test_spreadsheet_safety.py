"""No export opens with a formula: whatever text a cell holds, CSV and XLSX write it so that a
spreadsheet shows it and runs nothing (OWASP's rule against CSV injection: an apostrophe before a
text that starts with = + - @, a tab or a carriage return, unless it is a plain number), numbers
stay numbers, XLSX text is never a formula, and labels lose REDCap's HTML in every format."""

from __future__ import annotations

import csv
import json
import tempfile
from datetime import date, datetime
from pathlib import Path

import openpyxl
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from biobank.errors import ValidationError
from biobank.export import (
    Column,
    write_csv,
    write_dictionary,
    write_fhir_bundle,
    write_miabis_csv,
    write_parquet,
    write_xlsx,
)
from biobank.export.fhir_resources import (
    ConsentRecord,
    Observed,
    ParticipantRecord,
    StatementConsent,
    Variable,
)
from biobank.export.tabular import XLSX_MAX_TEXT
from biobank.html_text import plain_text
from biobank.services.reconcile import read_rack_scan
from tui.screens.reconcile import rows_text

DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def is_number(text: str) -> bool:
    """A plain number literal, told apart without the writers' pattern."""
    if not text or not set(text) <= set("0123456789.eE+-"):
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def neutral(text: str) -> str:
    """What a spreadsheet file must hold for `text`."""
    return "'" + text if text.startswith(DANGEROUS) and not is_number(text) else text


def harmless(cell: str) -> bool:
    return not cell.startswith(DANGEROUS) or is_number(cell)


# Text as exports meet it: anything, formulas and payloads, numbers signed and not, long text.
PAYLOADS = [
    "=1+1",
    '=HYPERLINK("http://x","y")',
    "@SUM(A1:A2)",
    "+cmd|' /C calc'!A0",
    "-2+3",
    "\t=1",
    "\r=1",
    "'=1",
    "-",
    "#N/A",
    "-1_000",
    "-inf",
    "- 5",
    "-٣",
    "--5",
    "-1e",
]
texts = st.one_of(
    st.text(),
    st.tuples(st.sampled_from(DANGEROUS), st.text()).map("".join),
    st.sampled_from(PAYLOADS),
    st.integers().map(lambda n: f"{n:+d}"),
    st.floats(allow_nan=False).map(lambda x: f"{x:+g}"),
    st.floats().map(repr),
    st.tuples(st.sampled_from([*DANGEROUS, "x"]), st.sampled_from([999, 32_766, 32_767])).map(
        lambda p: p[0] + "x" * p[1]  # the longest text an XLSX cell holds, and one more
    ),
)
rows = st.lists(
    st.tuples(
        texts,
        st.none() | texts,
        st.integers(-(10**15), 10**15),
        # XLSX keeps 15 significant digits: near the largest float that rounds up past it
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1e307, max_value=1e307),
        st.dates(min_value=date(1900, 3, 1)),  # XLSX counts days from 1900
        st.booleans(),
    ),
    max_size=4,
)
writes = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

COLUMNS = [
    Column("text", "Text"),
    Column("other", "Other text"),
    Column("count", "Count", kind="integer"),
    Column("amount", "Amount", kind="decimal"),
    Column("day", "Day", kind="date"),
    Column("flag", "Flag", kind="boolean"),
]


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.reader(file))


def read_sheet(path: Path, name: str) -> list[list[openpyxl.cell.Cell]]:
    return [list(row) for row in openpyxl.load_workbook(path)[name].iter_rows()]


def one_line(text: str) -> str:
    """XML reads every line break as LF, so a CR comes back from XLSX as one."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


# CSV -----------------------------------------------------------------------------------------


@writes
@given(rows=rows)
@example(rows=[("=1+1", "-5", -5, -1e-3, date(2024, 1, 1), False)])
def test_csv_text_never_starts_a_formula_and_numbers_stay_numbers(tmp_path, rows):
    path = tmp_path / "export.csv"
    write_csv(path, COLUMNS, rows)
    header, *lines = read_csv(path)
    assert header == [c.name for c in COLUMNS]
    assert len(lines) == len(rows)
    for line, (text, other, count, amount, day, flag) in zip(lines, rows, strict=True):
        assert all(harmless(cell) for cell in line)
        assert line[:2] == [neutral(text), "" if other is None else neutral(other)]
        assert int(line[2]) == count and float(line[3]) == amount
        assert (date.fromisoformat(line[4]), line[5]) == (day, str(flag))


@writes
@given(values=st.lists(st.tuples(texts, texts, texts)))
@example(values=[("=cmd", '=HYPERLINK("http://x","y")', "-3")])
def test_miabis_csv_guards_every_text_it_writes_as_given(tmp_path, values):
    """The codes and the creation date reach the MIABIS file as they are (the other values
    are the standard's, and its headers its attribute names): each is guarded."""
    columns = [
        Column("donor", "Donor", miabis="Sample donor ID"),
        Column("sample", "Sample", miabis="Sample ID"),
        Column("created", "Created", miabis="Sample creation date and time"),
        Column("sex", "Sex", miabis="Sex"),
        Column("kind", "Type", miabis="Sample type"),
    ]
    path = tmp_path / "miabis.csv"
    write_miabis_csv(path, columns, [(*v, None, None) for v in values], lambda codes: {})
    header, *lines = read_csv(path)
    assert header[:3] == ["Sample donor ID", "Sex", "Sample ID"]
    assert [[line[0], line[2], line[4]] for line in lines] == [
        [neutral(donor), neutral(sample), neutral(created)] for donor, sample, created in values
    ]
    assert all(harmless(cell) for line in [header, *lines] for cell in line)


@writes
@given(label=texts, unit=texts, description=texts, code=texts, choice=texts, miabis=texts)
def test_the_dictionary_guards_every_text_it_holds(
    tmp_path, label, unit, description, code, choice, miabis
):
    column = Column(
        "crp",
        label,
        unit=unit,
        description=description,
        choices=[(code, choice)],
        miabis=miabis,
    )
    path = tmp_path / "dictionary.csv"
    write_dictionary(path, [column])
    _, line = read_csv(path)
    told = [
        "crp",
        column.label,
        "string",
        "phenotype",
        column.unit,
        "",
        "",
        f"{code}={column.choice_label(code)}",
        miabis,
        column.description,
    ]
    assert line == [neutral(text) for text in told]
    assert all(harmless(cell) for cell in line)


# XLSX ----------------------------------------------------------------------------------------


def cannot_be_stored(texts: list[str | None]) -> bool:
    return any(
        t is not None and (len(neutral(t)) > XLSX_MAX_TEXT or ILLEGAL_CHARACTERS_RE.search(t))
        for t in texts
    )


@writes
@given(rows=rows, label=st.text())
@example(rows=[("=1+1", "#N/A", -5, -1e-3, date(2024, 1, 1), True)], label="@label")
@example(rows=[("bell\x07", None, 1, 1.0, date(2024, 1, 1), True)], label="")
@example(rows=[("-" * (XLSX_MAX_TEXT + 1), None, 1, 1.0, date(2024, 1, 1), True)], label="")
def test_xlsx_text_is_never_a_formula_and_numbers_stay_numbers(tmp_path, rows, label):
    columns = [Column("text", label), *COLUMNS[1:]]
    folder = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example
    path = folder / "export.xlsx"
    if cannot_be_stored([columns[0].label, *(t for row in rows for t in row[:2])]):
        with pytest.raises(ValidationError, match="XLSX"):
            write_xlsx(path, columns, rows)
        assert list(folder.iterdir()) == []
        return
    write_xlsx(path, columns, rows)

    header, *lines = read_sheet(path, "data")
    assert [c.value for c in header] == [c.name for c in columns]
    assert len(lines) == len(rows)
    for line, (text, other, count, amount, day, flag) in zip(lines, rows, strict=True):
        assert all(cell.data_type != "f" for cell in line)
        for cell, written in zip(line[:2], (text, other), strict=True):
            assert cell.value == (one_line(neutral(written)) if written else None)
            assert cell.data_type == "s" or not written
        assert [c.data_type for c in line[2:4]] == ["n", "n"]
        assert line[2].value == count
        assert line[3].value == pytest.approx(amount, rel=1e-14)  # XLSX keeps 15 digits
        assert (line[4].value, line[5].value) == (datetime(day.year, day.month, day.day), flag)

    _, entry, *_ = read_sheet(path, "dictionary")
    assert all(cell.data_type != "f" for cell in entry)
    assert entry[1].value == (one_line(neutral(columns[0].label)) or None)


# Labels and choices that were formulas or HTML -----------------------------------------------


def test_a_formula_in_a_label_or_a_choice_is_text_in_every_dictionary(tmp_path):
    columns = [
        Column("crp", "=1+1 CRP (mg/L)", kind="decimal"),
        Column("flare", "Flare", choices=[("1", '=HYPERLINK("http://x","y")')], miabis="Flare"),
    ]
    write_dictionary(tmp_path / "dictionary.csv", columns)
    with (tmp_path / "dictionary.csv").open(encoding="utf-8", newline="") as file:
        entries = {row["name"]: row for row in csv.DictReader(file)}
    assert entries["crp"]["label"] == "'=1+1 CRP (mg/L)"
    assert entries["flare"]["choices"] == '1==HYPERLINK("http://x","y")'  # starts with a 1

    write_xlsx(tmp_path / "export.xlsx", columns, [(1.5, "1")])
    sheet = read_sheet(tmp_path / "export.xlsx", "dictionary")
    assert all(cell.data_type != "f" for row in sheet for cell in row)
    assert (sheet[1][1].value, sheet[1][1].data_type) == ("'=1+1 CRP (mg/L)", "s")


def test_html_in_labels_is_plain_text_in_every_format(tmp_path):
    crp = Column(
        "crp",
        "<b>CRP</b>&nbsp;(mg/L)",
        kind="decimal",
        unit="mg/<i>L</i>",
        description="<span style='color:red'>Fasting</span><br>sample",
    )
    flare = Column("flare", "Flare", choices=[("1", "<i>Yes</i>,&nbsp;<b>active</b>")])
    columns = [
        Column("participant_code", "Participant", role="participant"),
        Column("specimen_code", "Specimen", role="specimen"),
        crp,
        flare,
    ]
    rows = [("P1", "S1", 1.5, "1")]

    write_dictionary(tmp_path / "dictionary.csv", columns)
    with (tmp_path / "dictionary.csv").open(encoding="utf-8", newline="") as file:
        entries = {row["name"]: row for row in csv.DictReader(file)}
    assert [entries["crp"][k] for k in ("label", "unit", "description")] == [
        "CRP (mg/L)",
        "mg/L",
        "Fasting sample",
    ]
    assert entries["flare"]["choices"] == "1=Yes, active"

    write_xlsx(tmp_path / "export.xlsx", columns, rows)
    sheet = read_sheet(tmp_path / "export.xlsx", "dictionary")
    assert sheet[3][1].value == "CRP (mg/L)"

    write_parquet(tmp_path / "export.parquet", columns, rows)
    metadata = pq.read_schema(tmp_path / "export.parquet").field("crp").metadata
    assert (metadata[b"label"], metadata[b"description"]) == (b"CRP (mg/L)", b"Fasting sample")

    values = (Observed(Variable("crp", crp, False), 1.5, None),
              Observed(Variable("flare", flare, False), "1", None))  # fmt: skip
    consent = ConsentRecord((StatementConsent("GENETIC", "granted"),))
    records = {"P1": ParticipantRecord(values, consent)}
    write_fhir_bundle(tmp_path / "bundle.json", columns, rows, lambda codes: records)
    bundle = json.loads((tmp_path / "bundle.json").read_text(encoding="utf-8"))
    observations = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    by_name = {o["code"]["coding"][-1]["code"]: o for o in observations}
    assert by_name["crp"]["code"]["text"] == "CRP (mg/L)"
    assert by_name["flare"]["valueCodeableConcept"]["text"] == "Yes, active"


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<b>CRP</b>&nbsp;(mg/L)", "CRP (mg/L)"),
        ("Platelets (10<sup>9</sup>/L)", "Platelets (10^9/L)"),
        ("C<sub>3</sub> level", "C3 level"),
        ("<p>One</p><p>Two</p>", "One Two"),
        ("Red<br>next\n\t line", "Red next line"),
        ("eGFR < 60 &amp; AT&T", "eGFR < 60 & AT&T"),
        ("&lt;b&gt;", "<b>"),
        ("<!-- note -->=1+1", "=1+1"),  # a formula stays one: the writers guard it, not this
    ],
)
def test_plain_text_reads_html_as_a_person_would(html, text):
    assert plain_text(html) == text


# The reconcile screen's scan ---------------------------------------------------------------


def test_hand_scans_reach_the_reconcile_service_as_scanned():
    """The reconcile screen's CSV is no export: it is the scan the service compares, never
    written to a file, so a code that starts like a formula must arrive as it was read."""
    scanned = [("A1", "=1+1", ""), ("A2", "-SLE-1", ""), ("A3", "", "NO TUBE"), ("A4", "@X", "")]
    rows = read_rack_scan(rows_text(scanned))
    assert [(row.position, row.raw) for row in rows] == [(p, code) for p, code, _ in scanned]
