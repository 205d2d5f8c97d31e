"""The export file writers on their own (no database): every format holds the same rows with the
same types, files appear only when complete, hashes are of the bytes on disk, and memory does not
grow with the number of rows."""

from __future__ import annotations

import csv
import hashlib
import math
import random
import subprocess
import sys
import textwrap
import zipfile
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import openpyxl
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fhir.resources.R4B.bundle import Bundle

from biobank.domain.vocabulary import Sex
from biobank.errors import ValidationError
from biobank.export import (
    BATCH_ROWS,
    Column,
    write_csv,
    write_dictionary,
    write_fhir_bundle,
    write_miabis_csv,
    write_parquet,
    write_xlsx,
)
from biobank.export import tabular as tabular_writers
from biobank.export.cells import safe_rows
from biobank.export.fhir_resources import ConsentRecord, ParticipantRecord, StatementConsent

ROOT = Path(__file__).resolve().parent.parent
LOINC = "http://loinc.org"

COLUMNS = [
    Column("participant_code", "Participant", role="participant", miabis="Sample donor ID"),
    Column("specimen_code", "Specimen", role="specimen", miabis="Sample ID"),
    Column("parent_specimen_code", "Parent specimen", role="specimen"),
    Column("specimen_type", "Type", role="specimen", miabis="Sample type"),
    Column("sprec_code", "SPREC code", role="specimen"),
    Column(
        "collected",
        "Collected",
        kind="year",
        role="specimen",
        miabis="Sample creation date and time",
    ),
    Column("quantity", "Quantity", kind="decimal", role="specimen"),
    Column("unit", "Unit", role="specimen"),
    Column("sex", "Sex", role="participant", miabis="Sex"),
    Column("birth_year", "Birth year", kind="year", role="participant"),
    Column("age_at_collection", "Age at collection", role="participant"),
    Column("sledai2k", "SLEDAI-2K", kind="integer", description="Disease activity, 0–105"),
    Column("upcr", "UPCR", kind="decimal", unit="g/g", code_system=LOINC, code="2890-2"),
    Column("hcq_mg", "Hydroxychloroquine dose", kind="integer", unit="mg/day"),
    Column("ln_biopsy", "Renal biopsy", kind="boolean"),
    Column(
        "ln_class",
        "ISN/RPS class",
        choices=[{"code": "III", "label": "Class III"}, {"code": "IV", "label": "Class IV"}],
    ),
    Column("dx_date", "Diagnosis", kind="date", code_system="http://snomed.info/sct"),
    Column("cart_infusion_year", "CAR-T infusion", kind="year"),
    Column("cart_product", "CAR-T product", description="free text"),
]

KINDS = {c.name: c.kind for c in COLUMNS}


def make_rows(count: int = 50, seed: int = 7) -> list[dict]:
    """Rows of 12 participants in no particular order: primaries, aliquots of earlier rows, one
    aliquot whose parent is not exported; None in every column somewhere, "90+", "=…" text."""
    chance = random.Random(seed)
    rows = []
    for i in range(count):
        n = i % 12
        parent = rows[i - 12]["specimen_code"] if i >= 24 and i % 3 == 0 else None
        rows.append(
            {
                "participant_code": f"X{n:03d}",
                "specimen_code": f"S{i:04d}",
                "parent_specimen_code": "S9999" if i == 5 else parent,
                "specimen_type": ("SER", "PL1", "CEL", "URN", None)[i % 5],
                "sprec_code": "SER-SST-A-B-N-A-D" if i % 5 == 0 else None,
                "collected": 2015 + i % 6 if i != 7 else None,
                "quantity": round(chance.uniform(50, 500), 1) if i % 9 else None,
                "unit": "µL" if i % 9 else None,
                "sex": ("female", "male", "unknown", None)[n % 4],
                "birth_year": 1950 + n if n % 4 != 3 else None,
                "age_at_collection": "90+" if n == 0 else (None if n == 1 else str(20 + n)),
                "sledai2k": chance.randint(0, 30) if i % 4 else None,
                "upcr": round(chance.uniform(0, 3), 3) if i % 5 else None,
                "hcq_mg": 200 if i % 2 else None,
                "ln_biopsy": (True, False, None)[i % 3],
                "ln_class": ("III", "IV", "II", None)[i % 4],
                "dx_date": date(2010, 1 + n, 1 + i % 28) if i % 6 else None,
                "cart_infusion_year": 2023 if i % 10 == 0 else None,
                "cart_product": ("=1+1", 'ünïcode, "quoted"', "line\nbreak", None)[i % 4],
            }
        )
    chance.shuffle(rows)
    return rows


def ordered(columns: list[Column], rows):
    """Rows as the writers take them: each one's values in the columns' order."""
    return (tuple(r.get(c.name) for c in columns) for r in rows)


def consenting(codes):
    """FHIR's records of these participants: consent to genetic use, no values."""
    granted = ConsentRecord((StatementConsent("GENETIC", "granted"),))
    return {code: ParticipantRecord((), granted) for code in codes}


# Reading back, with one typing rule per kind -------------------------------------------------


def typed(kind: str, text: str):
    if text == "":
        return None
    return {
        "string": str,
        "integer": int,
        "year": int,
        "decimal": float,
        "boolean": {"True": True, "False": False}.__getitem__,
        "date": date.fromisoformat,
    }[kind](text)


def expected(rows: list[dict]) -> list[dict]:
    """What a file of these rows reads back as: every column present, "" read as empty."""
    return [
        {c.name: (None if r.get(c.name) == "" else r.get(c.name)) for c in COLUMNS} for r in rows
    ]


def in_a_spreadsheet(rows: list[dict]) -> list[dict]:
    """The rows as CSV and XLSX hold them: the text that would be a formula behind an apostrophe
    (the whole rule is tested in test_spreadsheet_safety.py)."""
    return [{k: "'=1+1" if v == "=1+1" else v for k, v in row.items()} for row in rows]


def read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        assert reader.fieldnames == [c.name for c in COLUMNS]
        return [{k: typed(KINDS[k], v) for k, v in row.items()} for row in reader]


def read_xlsx(path: Path) -> list[dict]:
    workbook = openpyxl.load_workbook(path, read_only=True)
    values = workbook["data"].iter_rows(values_only=True)
    header = next(values)
    assert list(header) == [c.name for c in COLUMNS]
    rows = []
    for line in values:  # a read-only sheet leaves out the empty cells that end a row
        row = dict(zip(header, [*line, *[None] * (len(header) - len(line))], strict=True))
        for name, value in row.items():
            if KINDS[name] == "date" and value is not None:
                assert isinstance(value, datetime), (name, value)
                row[name] = value.date()
        rows.append(row)
    workbook.close()
    return rows


def read_parquet(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def check_written(written, path: Path, rows: int) -> None:
    assert written.path == path
    assert written.rows == rows
    assert written.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert written.bytes == path.stat().st_size


# The tabular formats -------------------------------------------------------------------------


def test_csv_xlsx_and_parquet_read_back_as_the_same_typed_rows(tmp_path):
    rows = make_rows()
    paths = {kind: tmp_path / f"export.{kind}" for kind in ("csv", "xlsx", "parquet")}
    for kind, write in (("csv", write_csv), ("xlsx", write_xlsx), ("parquet", write_parquet)):
        check_written(write(paths[kind], COLUMNS, ordered(COLUMNS, rows)), paths[kind], 50)

    from_csv = read_csv(paths["csv"])
    assert from_csv == in_a_spreadsheet(expected(rows))
    assert read_xlsx(paths["xlsx"]) == from_csv
    assert read_parquet(paths["parquet"]) == expected(rows)
    assert {r["age_at_collection"] for r in from_csv} >= {"90+", None}


def test_xlsx_cells_are_typed_and_text_never_becomes_a_formula(tmp_path):
    path = tmp_path / "export.xlsx"
    write_xlsx(path, COLUMNS, ordered(COLUMNS, make_rows()))
    sheet = openpyxl.load_workbook(path)["data"]
    header = [cell.value for cell in sheet[1]]
    by_name = {
        name: [row[i] for row in sheet.iter_rows(min_row=2)] for i, name in enumerate(header)
    }
    quoted = [c for c in by_name["cart_product"] if c.value == "'=1+1"]
    assert quoted and all(c.data_type == "s" for c in quoted)
    assert not [c for cells in by_name.values() for c in cells if c.data_type == "f"]
    assert {c.data_type for c in by_name["ln_biopsy"] if c.value is not None} == {"b"}
    assert all(c.is_date for c in by_name["dx_date"] if c.value is not None)
    assert {c.data_type for c in by_name["sledai2k"] if c.value is not None} == {"n"}
    dictionary = openpyxl.load_workbook(path)["dictionary"]
    assert [row[0] for row in dictionary.iter_rows(min_row=2, values_only=True)] == [
        c.name for c in COLUMNS
    ]


def test_xlsx_is_the_same_bytes_whenever_it_is_written(tmp_path):
    path = tmp_path / "export.xlsx"
    write_xlsx(path, COLUMNS, ordered(COLUMNS, make_rows()))
    with zipfile.ZipFile(path) as archive:
        assert {info.date_time for info in archive.infolist()} == {(2000, 1, 1, 0, 0, 0)}
        core = archive.read("docProps/core.xml").decode()
    assert "2000-01-01T00:00:00Z" in core and str(date.today().year) not in core
    again = tmp_path / "again.xlsx"
    assert (
        write_xlsx(again, COLUMNS, ordered(COLUMNS, make_rows())).sha256
        == hashlib.sha256(path.read_bytes()).hexdigest()
    )


def test_pandas_reads_xlsx_as_typed_columns_and_formulas_as_text(tmp_path):
    path = tmp_path / "export.xlsx"
    write_xlsx(path, COLUMNS, ordered(COLUMNS, make_rows()))
    sheets = pd.read_excel(path, sheet_name=None, engine="openpyxl")
    assert list(sheets) == ["data", "dictionary"]
    data = sheets["data"]
    assert list(data.columns) == [c.name for c in COLUMNS]
    assert len(data) == 50
    assert pd.api.types.is_datetime64_any_dtype(data["dx_date"])
    for name in ("sledai2k", "upcr", "quantity", "birth_year", "hcq_mg"):
        assert pd.api.types.is_numeric_dtype(data[name]), name
    assert not pd.api.types.is_numeric_dtype(data["age_at_collection"])  # "90+" among ages
    assert set(data["cart_product"].dropna()) == {"'=1+1", 'ünïcode, "quoted"', "line\nbreak"}
    expected_days = {r["dx_date"] for r in make_rows() if r["dx_date"] is not None}
    assert {d.date() for d in data["dx_date"].dropna()} == expected_days
    assert list(sheets["dictionary"]["name"]) == [c.name for c in COLUMNS]


def test_xlsx_keeps_texts_whole_and_every_value_type(tmp_path):
    """Spaces at either end, markup characters, error-value lookalikes and formulas stay the text
    they are; decimals, date-times and text enums are written as their kinds."""
    columns = [
        Column("text", "Text"),
        Column("amount", "Amount", kind="decimal"),
        Column("taken", "Taken", kind="date"),
        Column("sex", "Sex"),
    ]
    texts = ["  padded  ", "<b>&amp;</b>", "#N/A", "=SUM(A1:A2)", "@cmd", "-5", "\ttab"]
    rows = [(text, Decimal("2.50"), datetime(2024, 5, 6, 7, 8, 9), Sex.female) for text in texts]
    path = tmp_path / "export.xlsx"
    write_xlsx(path, columns, rows)
    sheet = openpyxl.load_workbook(path)["data"]
    lines = list(sheet.iter_rows(min_row=2))
    assert [(c.value, c.data_type) for c in (line[0] for line in lines)] == [
        ("  padded  ", "s"), ("<b>&amp;</b>", "s"), ("#N/A", "s"), ("'=SUM(A1:A2)", "s"),
        ("'@cmd", "s"), ("-5", "s"), ("'\ttab", "s"),
    ]  # fmt: skip
    assert {(line[1].value, line[1].data_type) for line in lines} == {(2.5, "n")}
    assert {line[2].value for line in lines} == {datetime(2024, 5, 6, 7, 8, 9)}
    assert all(line[2].is_date for line in lines)
    assert {line[3].value for line in lines} == {"female"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (math.inf, "the number inf"),
        (datetime(2024, 1, 1, tzinfo=UTC), "time zone"),
        (b"x", "bytes"),
    ],
)
def test_a_value_xlsx_cannot_hold_is_refused_naming_column_and_row(tmp_path, value, reason):
    columns = [Column("specimen_code", "Specimen"), Column("upcr", "UPCR", kind="decimal")]
    rows = [("S1", 1.0), ("S2", value)]
    with pytest.raises(ValidationError, match=f"upcr: .*{reason}") as error:
        write_xlsx(tmp_path / "export.xlsx", columns, rows)
    assert (error.value.field, error.value.row) == ("upcr", 2)
    assert list(tmp_path.iterdir()) == []


def test_parquet_schema_follows_the_column_kinds(tmp_path):
    path = tmp_path / "export.parquet"
    write_parquet(path, COLUMNS, ordered(COLUMNS, make_rows()))
    schema = pq.read_schema(path)
    assert schema.field("sledai2k").type == pa.int64()
    assert schema.field("upcr").type == pa.float64()
    assert schema.field("ln_biopsy").type == pa.bool_()
    assert schema.field("dx_date").type == pa.date32()
    assert schema.field("collected").type == pa.int32()
    assert schema.field("age_at_collection").type == pa.string()
    assert schema.field("upcr").metadata == {
        b"label": b"UPCR",
        b"unit": b"g/g",
        b"code_system": LOINC.encode(),
        b"code": b"2890-2",
    }


def test_parquet_refuses_a_value_of_the_wrong_kind(tmp_path):
    rows = make_rows()
    rows[3]["sledai2k"] = "high"
    with pytest.raises(ValidationError) as error:
        write_parquet(tmp_path / "export.parquet", COLUMNS, ordered(COLUMNS, rows))
    assert error.value.field == "sledai2k"
    assert "rows 1–50" in error.value.message
    assert list(tmp_path.iterdir()) == []


def test_parquet_without_pyarrow_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ValidationError) as error:
        write_parquet(tmp_path / "export.parquet", COLUMNS, ordered(COLUMNS, make_rows()))
    assert error.value.message == (
        "Parquet needs the optional extra: pip install 'biobank[parquet]'"
    )
    assert (error.value.field, error.value.value) == ("format", "parquet")
    assert list(tmp_path.iterdir()) == []


def test_miabis_csv_has_the_miabis_columns_under_their_names_with_miabis_values(tmp_path):
    rows = make_rows()
    path = tmp_path / "miabis.csv"
    check_written(write_miabis_csv(path, COLUMNS, ordered(COLUMNS, rows), consenting), path, 50)
    with path.open(encoding="utf-8", newline="") as file:
        lines = list(csv.reader(file))
    assert lines[0] == [
        "Sample donor ID", "Sex", "Sample ID", "Sample type", "Sample creation date and time",
        "Sample content diagnosis", "Use & Access conditions", "Sample source",
    ]  # fmt: skip
    sexes = {"female": "Female", "male": "Male", "unknown": "Unknown", None: "Unknown"}
    types = {"SER": "Serum", "PL1": "Plasma", "URN": "Urine", None: "Other",
             "CEL": "Peripheral blood mononuclear cells (PBMC)"}  # fmt: skip
    assert lines[1:] == [
        [r["participant_code"], sexes[r["sex"]], r["specimen_code"], types[r["specimen_type"]],
         "" if r["collected"] is None else str(r["collected"]), "", "Genetic data use", "Human"]
        for r in rows
    ]  # fmt: skip


def test_the_dictionary_lists_every_column(tmp_path):
    path = tmp_path / "dictionary.csv"
    check_written(write_dictionary(path, COLUMNS), path, len(COLUMNS))
    with path.open(encoding="utf-8", newline="") as file:
        entries = {row["name"]: row for row in csv.DictReader(file)}
    assert list(entries) == [c.name for c in COLUMNS]
    assert entries["ln_class"]["choices"] == "III=Class III; IV=Class IV"
    assert entries["upcr"] | {"description": ""} == {
        "name": "upcr",
        "label": "UPCR",
        "kind": "decimal",
        "role": "phenotype",
        "unit": "g/g",
        "code_system": LOINC,
        "code": "2890-2",
        "choices": "",
        "miabis": "",
        "description": "",
    }
    assert entries["sledai2k"]["description"] == "Disease activity, 0–105"
    assert entries["specimen_code"]["miabis"] == "Sample ID"


def test_every_text_cell_is_guarded_whatever_its_column_holds_beside_it():
    """A formula is caught in a column of plain texts, beside numbers, in a row of another
    width; a formula after a line break is no formula (a spreadsheet reads the cell's start)."""
    plain = [(f"P-{n}", None, n, "ok\n=not first") for n in range(2500)]
    batch = [*plain, ("=1+1", "-cmd", 7, ""), ("@SUM(A1)", 0, "+x", None)]
    out = list(safe_rows(batch))
    assert out[:2500] == [list(row) for row in plain]  # nothing starts like a formula
    assert out[2500:] == [["'=1+1", "'-cmd", 7, ""], ["'@SUM(A1)", 0, "'+x", None]]
    assert list(safe_rows([("=a",), ("b", "=c")])) == [["'=a"], ["b", "'=c"]]


def test_value_labels_list_every_code_and_never_a_formula(tmp_path):
    coded = [
        Column("ln_class", "LN class", choices=(("III", "Class III"), ("IV", "=1+1"))),
        Column("meds", "Medications", choices=(("hcq", "HCQ"),), multiple=True),
        Column("upcr", "UPCR", kind="decimal"),
    ]
    path = tmp_path / "value_labels.csv"
    check_written(tabular_writers.write_value_labels(path, coded), path, 3)
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    assert rows == [
        ["column", "code", "label", "multiple"],
        ["ln_class", "III", "Class III", "False"],
        ["ln_class", "IV", "'=1+1", "False"],
        ["meds", "hcq", "HCQ", "True"],
    ]


def test_columns_are_checked_before_anything_is_written(tmp_path):
    with pytest.raises(ValidationError, match="kind 'float'"):
        Column("upcr", "UPCR", kind="float")
    with pytest.raises(ValidationError, match="not snake_case"):
        Column("UPCR ratio", "UPCR")
    with pytest.raises(ValidationError, match="two columns have the name 'upcr'"):
        write_csv(tmp_path / "x.csv", [*COLUMNS, Column("upcr", "again")], [])
    with pytest.raises(ValidationError, match="a MIABIS file needs a column for Sample donor"):
        write_miabis_csv(tmp_path / "x.csv", [Column("upcr", "UPCR")], [], consenting)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["csv", "xlsx", "parquet", "miabis", "fhir"])
def test_a_row_without_one_value_per_column_is_refused_naming_it(tmp_path, kind):
    rows = list(ordered(COLUMNS, make_rows()))
    rows[6] = rows[6][:-1]  # one value short: the rest would shift into the wrong columns
    with pytest.raises(ValidationError, match=f"row 7 has {len(COLUMNS) - 1} values") as error:
        WRITERS[kind](tmp_path / f"export.{kind}", COLUMNS, rows)
    assert error.value.row == 7
    with pytest.raises(TypeError, match="sequences of values"):
        WRITERS[kind](tmp_path / f"export.{kind}", COLUMNS, make_rows())  # names, not values
    assert list(tmp_path.iterdir()) == []


def test_fhir_refuses_a_number_json_cannot_hold(tmp_path):
    rows = make_rows(12)
    rows[3]["quantity"] = math.nan
    with pytest.raises(ValidationError, match="FHIR export: Out of range float"):
        write_fhir_bundle(tmp_path / "bundle.json", COLUMNS, ordered(COLUMNS, rows), consenting)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_export_still_writes_headers(tmp_path):
    assert write_csv(tmp_path / "x.csv", COLUMNS, []).rows == 0
    assert (tmp_path / "x.csv").read_text().splitlines() == [",".join(c.name for c in COLUMNS)]
    assert write_parquet(tmp_path / "x.parquet", COLUMNS, []).rows == 0
    assert read_parquet(tmp_path / "x.parquet") == []
    assert pq.read_schema(tmp_path / "x.parquet").names == [c.name for c in COLUMNS]
    written = write_fhir_bundle(tmp_path / "x.json", COLUMNS, [], consenting)
    assert Bundle.model_validate_json((tmp_path / "x.json").read_text()).entry is None
    assert written.rows == 0


# Atomic writing, progress, memory ------------------------------------------------------------

WRITERS = {
    "csv": write_csv,
    "xlsx": write_xlsx,
    "parquet": write_parquet,
    "miabis": lambda path, columns, rows, progress=None: write_miabis_csv(
        path, columns, rows, consenting, progress
    ),
    "fhir": lambda path, columns, rows, progress=None: write_fhir_bundle(
        path, columns, rows, consenting, progress
    ),
}


def failing_rows(columns=COLUMNS):
    """One whole batch (written to the temporary file), then a few rows, then a failure."""
    template = make_rows(12)
    for i in range(BATCH_ROWS + 10):
        yield from ordered(columns, [template[i % 12] | {"specimen_code": f"S{i}"}])
    raise RuntimeError("database went away")


@pytest.mark.parametrize("kind", WRITERS)
def test_a_failed_export_leaves_no_file_behind(tmp_path, kind):
    target = tmp_path / f"export.{kind}"
    seen: list[int] = []
    with pytest.raises(RuntimeError, match="database went away"):
        WRITERS[kind](target, COLUMNS, failing_rows(), progress=seen.append)
    assert seen == [BATCH_ROWS]
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_keeps_the_previous_complete_file(tmp_path):
    target = tmp_path / "export.csv"
    before = write_csv(target, COLUMNS, ordered(COLUMNS, make_rows()))
    with pytest.raises(RuntimeError):
        write_csv(target, COLUMNS, failing_rows())
    assert hashlib.sha256(target.read_bytes()).hexdigest() == before.sha256
    assert list(tmp_path.iterdir()) == [target]


def test_xlsx_over_the_sheet_limit_is_refused_without_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tabular_writers, "XLSX_MAX_ROWS", 30)
    with pytest.raises(ValidationError, match="at most 30 rows"):
        write_xlsx(tmp_path / "export.xlsx", COLUMNS, ordered(COLUMNS, make_rows()))
    assert list(tmp_path.iterdir()) == []


def test_a_control_character_is_refused_by_xlsx_naming_column_and_row(tmp_path):
    rows = make_rows()
    rows[4]["cart_product"] = "bell\x07"
    with pytest.raises(ValidationError, match="cart_product holds a control character") as error:
        write_xlsx(tmp_path / "export.xlsx", COLUMNS, ordered(COLUMNS, rows))
    assert (error.value.field, error.value.row) == ("cart_product", 5)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_target_is_a_validation_error(tmp_path):
    with pytest.raises(ValidationError, match="cannot write") as error:
        write_csv(tmp_path / "missing" / "export.csv", COLUMNS, ordered(COLUMNS, make_rows()))
    assert error.value.field == "path"


def test_progress_moves_once_per_batch(tmp_path):
    seen: list[int] = []
    rows = (make_rows(1)[0] | {"specimen_code": f"S{i}"} for i in range(25_000))
    written = write_csv(tmp_path / "export.csv", COLUMNS, ordered(COLUMNS, rows), seen.append)
    assert seen == [10_000, 20_000, 25_000]
    assert written.rows == 25_000


class Live(tuple):
    """A row that counts how many of its kind are alive at once."""

    alive = 0
    most = 0

    def __new__(cls, values):
        Live.alive += 1
        Live.most = max(Live.most, Live.alive)
        return super().__new__(cls, values)

    def __del__(self):
        Live.alive -= 1


@pytest.mark.parametrize("kind", WRITERS)
def test_writers_hold_at_most_two_batches_of_rows(tmp_path, kind):
    template = make_rows(12)
    count = 3 * BATCH_ROWS
    # FHIR (an entry per value) writes the first columns of wide rows.
    columns = COLUMNS[:3] if kind == "fhir" else COLUMNS
    rows = map(Live, ordered(columns, (template[i % 12] | {"specimen_code": f"S{i}"}
                                       for i in range(count))))  # fmt: skip
    Live.alive = Live.most = 0
    written = WRITERS[kind](tmp_path / f"export.{kind}", columns, rows)
    assert written.rows == count
    assert Live.most <= 2 * BATCH_ROWS
    assert Live.alive == 0


def test_memory_stays_flat_for_200k_rows_of_csv_and_xlsx(tmp_path):
    """In a process of its own, over the same wide rows: XLSX by the growth of its peak RSS
    (tracemalloc would slow it severalfold), then CSV by peak traced memory. Holding the rows would
    take ~250 MB."""
    script = textwrap.dedent(
        f"""
        import resource, sys, tracemalloc
        from pathlib import Path
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from test_export_writers import COLUMNS, make_rows, ordered
        from biobank.export import write_csv, write_xlsx

        template = make_rows(12)

        def rows(count):
            for i in range(count):
                row = template[i % 12] | {{"specimen_code": f"S{{i:07d}}", "sledai2k": i % 30}}
                yield from ordered(COLUMNS, [row])

        out = Path({str(tmp_path)!r})
        write_xlsx(out / "warm.xlsx", COLUMNS, rows(100))
        write_csv(out / "warm.csv", COLUMNS, rows(100))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        xlsx = write_xlsx(out / "big.xlsx", COLUMNS, rows(200_000))
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        tracemalloc.start()
        csv = write_csv(out / "big.csv", COLUMNS, rows(200_000))
        print(xlsx.rows, grown * 1024, csv.rows, tracemalloc.get_traced_memory()[1])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    xlsx_rows, xlsx_growth, csv_rows, csv_peak = (int(n) for n in result.stdout.split())
    assert xlsx_rows == csv_rows == 200_000
    assert xlsx_growth < 50 * 2**20
    assert csv_peak < 50 * 2**20
    assert (tmp_path / "big.xlsx").stat().st_size > 5 * 2**20
    assert (tmp_path / "big.csv").stat().st_size > 15 * 2**20
