"""Exports an analyst loads at once, on both engines, read back as an analyst would: each
phenotype value with the day it was observed and its days from collection (a value borrowed from
an earlier visit, a repeat instance's, a participant's own), numeric ages with Safe Harbor's
top-coding flagged, the long shape (one row per specimen and value) with its replay, and the
loading scripts and value labels written beside the tables."""

import csv
import json
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from inventory import accession_tube
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.domain.cohort import CohortQuery
from biobank.domain.vocabulary import DeidentificationMode
from biobank.export.shapes import Shape
from biobank.models import ExportRun, Participant
from biobank.services import consent, export_runs, exports, participants, phenotypes
from biobank.services.deidentification import export_code
from biobank.services.exports import ExportRequest
from biobank.services.phenotype_at_collection import specimen_phenotypes

TABLES = ["csv", "xlsx", "parquet"]
FORMULA = '=HYPERLINK("http://example.invalid/x","open")'


def _local(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 9, 0).astimezone()


@pytest.fixture
def registry(cohort_db, admin):
    """The cohort (`cohort_seed`) and: P-0002's C3 measured at a visit a month before its
    month 6 tube; P-0001's C4 measured again within its baseline visit (a repeat instance,
    three days after the draw); P-0001's diagnosis date recorded on a day of its own, its
    CAR-T product a text that starts like a formula; P-0006, born 1925, a baseline tube."""
    with uow(cohort_db) as session:
        participants.add_visit(
            session, actor=admin, participant="P-0002", label="month 5",
            visit_date=date(2020, 8, 1),
        )  # fmt: skip
        for participant, variable, value, extra in (
            ("P-0002", "c3", "80", {"visit": "month 5"}),
            ("P-0001", "c4", "20", {"visit": "baseline", "instance": 1,
                                    "observed_on": date(2020, 3, 4)}),
            ("P-0001", "dx_date", "2015-06-01", {"observed_on": date(2016, 1, 10)}),
            ("P-0001", "race", "black", {}),
            ("P-0001", "cart_product", FORMULA, {}),
        ):  # fmt: skip
            phenotypes.set_value(
                session, actor=admin, participant=participant, variable=variable, value=value,
                **extra,
            )  # fmt: skip
        participants.add_participant(
            session, actor=admin, study="SLE", code="P-0006", sex="female", birth_year=1925,
        )  # fmt: skip
        participants.add_visit(
            session, actor=admin, participant="P-0006", label="baseline",
            visit_date=date(2020, 3, 1),
        )  # fmt: skip
        phenotypes.set_value(
            session, actor=admin, participant="P-0006", variable="ln_class", value="III",
            visit="baseline",
        )  # fmt: skip
        accession_tube(session, admin, "P-0006", visit="baseline",
                       collected_at=_local(date(2020, 3, 1)))  # fmt: skip
        consent.record_consent(
            session, actor=admin, participant="P-0006", document="MAIN", version="1",
            signed_on=date(2020, 3, 1),
            answers={"FUTURE_RESEARCH": True, "GENETIC": True, "COMMERCIAL": False},
        )  # fmt: skip
    return cohort_db


def _export(engine, actor, folder, **request):
    request = {"query": CohortQuery(), "uses": ["GENETIC"], "formats": TABLES} | request
    with uow(engine) as session:
        return exports.run_export(
            session, actor=actor, request=ExportRequest(**request), directory=folder
        )


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _xlsx(path: Path) -> list[dict[str, object]]:
    sheet = openpyxl.load_workbook(path, read_only=True)["data"]
    header, *rows = sheet.iter_rows(values_only=True)
    return [dict(zip(header, row, strict=False)) for row in rows]


def _key(engine, run_code: str) -> str:
    with uow(engine, readonly=True) as session:
        query = sa.select(ExportRun.code_key).where(ExportRun.run_code == run_code)
        return session.execute(query).scalar_one()


def _accessions(engine, code: str) -> list[str]:
    with uow(engine, readonly=True) as session:
        return list(
            session.execute(
                sa.text(
                    "SELECT s.accession_id FROM specimen s JOIN participant p "
                    "ON p.id = s.participant_id WHERE p.code = :code ORDER BY s.collected_at"
                ),
                {"code": code},
            ).scalars()
        )


def test_each_value_at_collection_knows_when_it_was_observed(registry, admin):
    first_baseline, _ = _accessions(registry, "P-0001")
    _, second_month6 = _accessions(registry, "P-0002")
    with uow(registry, readonly=True) as session:
        mine = specimen_phenotypes(session, actor=admin, accession=first_baseline)
        borrowed = specimen_phenotypes(session, actor=admin, accession=second_month6)
    # the visit's own value: its visit's date; a repeat instance: its own; a participant's
    # own value: its date if it has one, else none
    assert (mine["upcr"], mine.observed["upcr"]) == (0.6, date(2020, 3, 1))
    assert (mine["c4"], mine.observed["c4"]) == (20.0, date(2020, 3, 4))
    assert (mine["dx_date"], mine.observed["dx_date"]) == (date(2015, 6, 1), date(2016, 1, 10))
    assert mine["race"] == "black" and mine.observed["race"] is None
    # month 6 has no C3: the one measured at month 5, within the window, with its own day
    assert (borrowed["c3"], borrowed.observed["c3"]) == (80.0, date(2020, 8, 1))
    assert borrowed.observed.keys() == borrowed.keys()


def test_every_table_dates_each_value_and_safe_harbor_keeps_only_years(registry, admin, tmp_path):
    result = _export(registry, admin, tmp_path)
    folder = result.directory
    key = _key(registry, result.run_code)
    with uow(registry, readonly=True) as session:
        ids = dict(session.execute(sa.select(Participant.code, Participant.id)).all())
    p1, p2, p6 = (export_code(key, "P", ids[c]) for c in ("P-0001", "P-0002", "P-0006"))
    as_csv = _csv(folder / "specimens.csv")
    table = pq.read_table(folder / "specimens.parquet")
    for rows in (as_csv, _xlsx(folder / "specimens.xlsx"), table.to_pylist()):
        by = {}
        for row in rows:
            by.setdefault(row["participant_code"], []).append(
                {k: (None if v == "" else v) for k, v in row.items()}
            )
        borrowed = next(r for r in by[p2] if r["c3"] is not None)
        baseline = next(r for r in by[p1] if r["c4"] is not None)
        oldest = by[p6][0]
        # what each format holds, as text: CSV's cells, XLSX's and Parquet's typed values
        said = {k: str(v) for k, v in {**borrowed, **baseline, **oldest}.items()}
        assert float(borrowed["c3"]) == 80 and float(baseline["c4"]) == 20
        assert [str(borrowed[c]) for c in ("c3__observed", "c3__days_from_collection")] == [
            "2020", "-31",
        ]  # fmt: skip
        assert [str(baseline[c]) for c in ("c4__observed", "c4__days_from_collection")] == [
            "2020", "3",
        ]  # fmt: skip
        assert str(baseline["dx_date__observed"]) == "2016"
        assert str(baseline["dx_date__days_from_collection"]) == str(
            (date(2016, 1, 10) - date(2020, 3, 1)).days
        )
        assert baseline["race__observed"] is None and baseline["race"] == "black"
        assert str(oldest["age_at_collection"]) == "90" and str(oldest["age_top_coded"]) == "True"
        assert str(baseline["age_at_collection"]) == "40"
        assert str(baseline["age_top_coded"]) == "False"
        assert "cart_product" not in said  # free text never leaves a de-identified export
    schema = table.schema
    assert schema.field("age_at_collection").type == pa.int64()
    assert schema.field("age_top_coded").type == pa.bool_()
    assert schema.field("c3__observed").type == pa.int32()  # a year
    assert schema.field("c3__days_from_collection").type == pa.int64()
    sheet = openpyxl.load_workbook(folder / "specimens.xlsx", read_only=True)["data"]
    header, *cells = sheet.iter_rows(values_only=True)
    ages = [row[header.index("age_at_collection")] for row in cells]
    assert all(isinstance(age, int) for age in ages) and max(ages) == 90
    everything = (
        b"".join((folder / name).read_bytes() for name in ("specimens.csv", "dictionary.csv"))
        + repr(table.to_pylist()).encode()
    )
    for day in ("2020-08-01", "2020-03-04", "2016-01-10", "2015-06-01", "1925"):
        assert day.encode() not in everything, day
    dictionary = {r["name"]: r for r in _csv(folder / "dictionary.csv")}
    assert dictionary["age_at_collection"]["kind"] == "integer"
    assert dictionary["age_top_coded"]["kind"] == "boolean"
    assert "90" in dictionary["age_top_coded"]["description"]
    assert dictionary["c3__observed"]["kind"] == "year"
    assert dictionary["c3__days_from_collection"]["unit"] == "d"
    assert list(as_csv[0]).index("c3__observed") == list(as_csv[0]).index("c3") + 1


def test_an_identified_table_keeps_the_observation_dates_and_no_formula(registry, admin, tmp_path):
    result = _export(registry, admin, tmp_path, mode=DeidentificationMode.identified)
    folder = result.directory
    rows = [r for r in _csv(folder / "specimens.csv") if r["participant_code"] == "P-0001"]
    borrowed = next(
        r for r in _csv(folder / "specimens.csv") if r["participant_code"] == "P-0002"
        and r["c3"]
    )  # fmt: skip
    assert (borrowed["c3__observed"], borrowed["c3__days_from_collection"]) == (
        "2020-08-01", "-31",
    )  # fmt: skip
    assert {r["dx_date__observed"] for r in rows} == {"2016-01-10"}
    assert {r["age_at_collection"] for r in rows} == {"40"}
    assert "age_top_coded" not in rows[0]  # nothing is top-coded outside Safe Harbor
    # the text kept, but never as a formula: CSV and XLSX start it with an apostrophe
    assert {r["cart_product"] for r in rows} == {"'" + FORMULA}
    xlsx = [r for r in _xlsx(folder / "specimens.xlsx") if r["participant_code"] == "P-0001"]
    assert {r["cart_product"] for r in xlsx} == {"'" + FORMULA}
    assert isinstance(xlsx[0]["c4__observed"], datetime)  # a date cell
    assert {r["cart_product"] for r in pq.read_table(folder / "specimens.parquet").to_pylist()
            if r["participant_code"] == "P-0001"} == {FORMULA}  # fmt: skip  # no spreadsheet


def test_the_long_shape_writes_a_row_per_specimen_and_value(registry, admin, tmp_path):
    wide = _export(registry, admin, tmp_path / "wide", formats=["csv"])
    long = _export(registry, admin, tmp_path / "long", formats=[*TABLES, "fhir"],
                   shape=Shape.long)  # fmt: skip
    folder = long.directory
    assert {f.name for f in long.files} == {
        "dictionary.csv", "value_labels.csv", "load.py", "load.R", "bundle.json",
        *(f"{table}.{ext}" for table in ("specimens", "phenotype_values") for ext in TABLES),
    }  # fmt: skip
    assert json.loads(long.manifest.read_text())["shape"] == "long"
    specimens = _csv(folder / "specimens.csv")
    values = _csv(folder / "phenotype_values.csv")
    assert "c3" not in specimens[0] and "age_at_collection" in specimens[0]
    assert list(values[0]) == [
        "participant_code",
        "specimen_code",
        "variable",
        "value",
        "value_unit",
        "observed",
        "days_from_collection",
    ]
    # the same values as the wide table: one row for each filled phenotype cell
    wide_rows = _csv(wide.directory / "specimens.csv")
    variables = [c for c in wide_rows[0] if f"{c}__observed" in wide_rows[0]]
    filled = sorted((r[v], r[f"{v}__observed"], r[f"{v}__days_from_collection"])
                    for r in wide_rows for v in variables if r[v])  # fmt: skip
    assert sorted((r["value"], r["observed"], r["days_from_collection"]) for r in values) \
        == filled  # fmt: skip
    assert len(values) == len(filled) and {r["specimen_code"] for r in values} <= {
        r["specimen_code"] for r in specimens
    }
    c3 = next(r for r in values if r["variable"] == "c3")
    assert (c3["value"], c3["value_unit"], c3["observed"], c3["days_from_collection"]) == (
        "80.0", "mg/dL", "2020", "-31",
    )  # fmt: skip
    race = [r for r in values if r["variable"] == "race"]  # a participant's, once per specimen
    assert len(race) == 2 and {r["observed"] for r in race} == {""}
    # consent leaves the same people out: P-0003 refused genetic use, P-0004 withdrew
    key = _key(registry, long.run_code)
    with uow(registry, readonly=True) as session:
        ids = dict(session.execute(sa.select(Participant.code, Participant.id)).all())
    shown = {r["participant_code"] for r in values}
    assert shown == {export_code(key, "P", ids[c]) for c in ("P-0001", "P-0002", "P-0005",
                                                               "P-0006")}  # fmt: skip
    for ext in ("xlsx", "parquet"):
        again = (_xlsx if ext == "xlsx" else lambda p: pq.read_table(p).to_pylist())(
            folder / f"phenotype_values.{ext}"
        )
        assert len(again) == len(values)
    typed = pq.read_table(folder / "phenotype_values.parquet").schema
    assert (typed.field("observed").type, typed.field("days_from_collection").type) == (
        pa.int32(), pa.int64(),
    )  # fmt: skip
    dictionary = {r["name"] for r in _csv(folder / "dictionary.csv")}
    assert {"variable", "value", "observed", "days_from_collection", "c3"} <= dictionary
    assert "c3__observed" not in dictionary  # no table of the long shape has it
    with uow(registry) as session:  # the replay writes every table again, byte for byte
        replay = export_runs.replay_export(session, actor=admin, run_code=long.run_code)
    assert replay.matches, replay.differences
    with uow(registry) as session:
        phenotypes.set_value(session, actor=admin, participant="P-0002", variable="c3",
                             value="81", visit="month 5")  # fmt: skip
    with uow(registry) as session:
        replay = export_runs.replay_export(session, actor=admin, run_code=long.run_code)
    assert {d.split(":")[0] for d in replay.differences} == {
        f"phenotype_values.{ext}" for ext in TABLES
    } | {"bundle.json"}


def test_a_long_identified_table_guards_its_text_values(registry, admin, tmp_path):
    result = _export(registry, admin, tmp_path, mode=DeidentificationMode.identified,
                     shape=Shape.long)  # fmt: skip
    folder = result.directory
    # P-0001's own value, once for each of its two tubes
    texts = [r["value"] for r in _csv(folder / "phenotype_values.csv")
             if r["variable"] == "cart_product"]  # fmt: skip
    assert texts == ["'" + FORMULA] * 2
    cells = [r["value"] for r in _xlsx(folder / "phenotype_values.xlsx")
             if r["variable"] == "cart_product"]  # fmt: skip
    assert cells == ["'" + FORMULA] * 2
    dated = next(r for r in _csv(folder / "phenotype_values.csv") if r["variable"] == "c4")
    assert (dated["observed"], dated["days_from_collection"]) == ("2020-03-04", "3")


def test_the_loading_script_reads_each_table_typed_and_labelled(registry, admin, tmp_path):
    result = _export(registry, admin, tmp_path, shape=Shape.long)
    folder = result.directory
    labels = _csv(folder / "value_labels.csv")
    race = {r["code"]: r["label"] for r in labels if r["column"] == "race"}
    assert race["black"] != "black" and {r["multiple"] for r in labels} == {"False"}
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from load import load\n"
        "out = {}\n"
        "for name in ('specimens.csv', 'specimens.parquet', 'phenotype_values.csv'):\n"
        "    table = load(name)\n"
        "    out[name] = {f.name: str(f.type) for f in table.schema}\n"
        "values = load('phenotype_values.csv').to_pylist()\n"
        "out['race'] = sorted({r['value_label'] for r in values if r['variable'] == 'race'})\n"
        "out['sex'] = sorted(set(load('specimens.csv').column('sex').to_pylist()))\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    read = json.loads(done.stdout)
    for name in ("specimens.csv", "specimens.parquet"):
        assert read[name]["age_at_collection"] == "int64"
        assert read[name]["age_top_coded"] == "bool"
        assert read[name]["collected"] == "int32"  # a year under Safe Harbor
        assert read[name]["sex"] == "dictionary<values=string, indices=int32, ordered=0>"
    values = read["phenotype_values.csv"]
    assert values["days_from_collection"] == "int64" and values["value"] == "string"
    assert read["race"] == [race["black"]]
    assert read["sex"] == ["Female"]
    script_r = (folder / "load.R").read_text()
    assert 'export_tables <- c("specimens.csv", "phenotype_values.csv"' in script_r


def test_the_cli_exports_the_long_shape_and_replays_it(registry, monkeypatch, tmp_path):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", registry.url.render_as_string(False))
    runner = CliRunner()
    done = runner.invoke(
        app,
        ["-u", "admin", "export", "run", "--to", str(tmp_path), "--use", "GENETIC",
         "--shape", "long", "--format", "parquet", "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    names = {f["name"] for f in result["files"]}
    assert {"specimens.parquet", "phenotype_values.parquet", "load.py"} <= names
    again = runner.invoke(app, ["-u", "admin", "export", "replay", result["run_code"]])
    assert again.exit_code == 0 and "the same files again" in again.stderr
    bad = runner.invoke(app, ["-u", "admin", "export", "run", "--to", str(tmp_path),
                              "--shape", "tall"])  # fmt: skip
    assert bad.exit_code == 2 and "tall" in bad.output
