"""The MIABIS file of a real export, on both engines, held to the standard's lists as shipped
(`biobank/reference/miabis.json`, copied from BBMRI-ERIC's component specifications): every
header an attribute of Sample, Sample donor or Event, every enumerated value one of its list
(written spreadsheet-safe, as every CSV cell is), and each value the one the inventory's data
says: sample types through the SPREC mapping, storage temperatures from the units' temperature
classes, Use & Access conditions from consent, the SLE diagnosis as ICD-10."""

from __future__ import annotations

import csv
import json
from datetime import date, datetime
from pathlib import Path

import pytest

from biobank.db import uow
from biobank.domain.cohort import CohortQuery
from biobank.domain.vocabulary import DeidentificationMode
from biobank.errors import ValidationError
from biobank.export.cells import FORMULA_STARTS, safe_text
from biobank.export.columns import Column
from biobank.export.fhir_resources import ConsentRecord, ParticipantRecord, StatementConsent
from biobank.export.miabis import storage_temperature
from biobank.export.tabular import write_miabis_csv
from biobank.services import consent, exports, participants, phenotypes, specimens, storage, studies
from biobank.services.exports import ExportRequest

REFERENCE = Path(__file__).resolve().parent.parent / "biobank" / "reference"
MIABIS = json.loads((REFERENCE / "miabis.json").read_text(encoding="utf-8"))
MAPPING = json.loads((REFERENCE / "sample_types.json").read_text(encoding="utf-8"))
ATTRIBUTES = set(MIABIS["attributes"].values())
LISTS: dict[str, list[str]] = MIABIS["values"]
REQUIRED = ("Sample donor ID", "Sex", "Sample ID", "Sample type")  # cardinality 1
STATEMENTS = ["FUTURE_RESEARCH", "GENETIC", "COMMERCIAL", "DATA_SHARING", "RECONTACT"]


def test_the_mapping_names_only_sample_types_of_the_list():
    """Every SPREC type the shared mapping maps becomes a value of the Sample type list."""
    assert {t["miabis"] for t in MAPPING["types"].values()} <= set(LISTS["Sample type"])
    assert "BBMRI-ERIC/miabis" in MIABIS["_source"] and "ICD-10" in MIABIS["_source"]


def _seed(engine, admin) -> None:
    """Two participants. SLE-0001 (born 1930: 94 at collection, over 89), a diagnosis date,
    every statement granted: serum in a -80C freezer, PBMC in a box of a liquid nitrogen tank
    (the box records no class, the tank does). SLE-0002 (sex `other`, no diagnosis, genetic use
    only): buffy coat in that tank, urine in no box, a tissue SPREC does not map."""
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="SLE", title="Lupus registry")
        consent.add_document(
            session, actor=admin, code="MAIN", version="1", title="Consent",
            effective_on=date(2015, 1, 1), statements=STATEMENTS,
        )  # fmt: skip
        freezer = storage.add_freezer(
            session, actor=admin, name="-80 #1", shelves=1, racks_per_shelf=1,
            boxes_per_rack=1, temperature_class="-80C",
        )  # fmt: skip
        tank = storage.add_unit(
            session, actor=admin, kind="tank", name="LN2 tank", temperature_class="LN2 vapour"
        )
        box = storage.add_unit(
            session, actor=admin, kind="box", name="PBMC box", parent=tank.barcode,
            grid=(9, 9), holds_specimens=True,
        )  # fmt: skip
        people = {
            "SLE-0001": ("female", 1930, dict.fromkeys(STATEMENTS, True)),
            "SLE-0002": ("other", 1980, {s: s == "GENETIC" for s in STATEMENTS}),
        }
        for code, (sex, born, answers) in people.items():
            participants.add_participant(
                session, actor=admin, study="SLE", code=code, sex=sex, birth_year=born
            )
            participants.add_visit(
                session, actor=admin, participant=code, label="baseline",
                visit_date=date(2024, 6, 3),
            )  # fmt: skip
            consent.record_consent(
                session, actor=admin, participant=code, document="MAIN", version="1",
                signed_on=date(2024, 6, 3), answers=answers,
            )  # fmt: skip
        phenotypes.set_value(
            session, actor=admin, participant="SLE-0001", variable="dx_date", value="2001-04-02"
        )
        collected = datetime(2024, 6, 3, 9, 0).astimezone()
        for code, kind, amount, unit, destination in (
            ("SLE-0001", "SER", 500, "uL", freezer.barcode),
            ("SLE-0001", "CEL", 1_000_000, "cells", box.barcode),
            ("SLE-0002", "BUF", 500, "uL", box.barcode),
            ("SLE-0002", "URN", 10, "mL", None),
            ("SLE-0002", "TIS", 20, "mg", None),
        ):
            specimens.accession(
                session, actor=admin, participant=code, visit="baseline", specimen_type=kind,
                quantity=amount, unit=unit, collected_at=collected, destination=destination,
            )  # fmt: skip


def _read(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.reader(file))


def _dicts(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize(
    "mode", [DeidentificationMode.safe_harbor, DeidentificationMode.identified]
)
def test_a_real_export_holds_every_header_and_value_to_the_standards_lists(
    engine, admin, tmp_path, mode
):
    _seed(engine, admin)
    request = ExportRequest(
        query=CohortQuery(), uses=["GENETIC"], mode=mode, formats=["miabis", "csv"]
    )
    with uow(engine) as session:
        result = exports.run_export(session, actor=admin, request=request, directory=tmp_path)
    header, *lines = _read(result.directory / "specimens_miabis.csv")
    assert header == [
        "Sample donor ID", "Sex", "Sample ID", "Sample type", "Sample storage temperature",
        "Sample creation date and time", "Sample content diagnosis", "Use & Access conditions",
        "Sample source", "Event ID", "Age at event", "Age at event unit",
    ]  # fmt: skip
    assert set(header) <= ATTRIBUTES
    assert len(lines) == 5
    for line in lines:
        cells = dict(zip(header, line, strict=True))
        for attribute in REQUIRED:
            assert cells[attribute], (attribute, line)
        for attribute, text in cells.items():
            assert not text.startswith(FORMULA_STARTS) or text.startswith("'"), text
            if attribute in LISTS and text:
                allowed = {safe_text(value) for value in LISTS[attribute]}
                assert set(text.split("|")) <= allowed, (attribute, text)

    # each sample as the inventory says it, found by its code in the CSV
    table = {r["specimen_code"]: r for r in _dicts(result.directory / "specimens.csv")}
    shown = {}
    for line in lines:
        cells = dict(zip(header, line, strict=True))
        row = table[cells["Sample ID"]]
        assert cells["Sample donor ID"] == row["participant_code"]
        assert cells["Event ID"] == f"{cells['Sample ID']}-C"
        assert cells["Sample creation date and time"] == row["collected"]
        shown[row["specimen_type"]] = [
            cells[a] for a in ("Sex", "Sample type", "Sample storage temperature",
                               "Sample content diagnosis", "Use & Access conditions",
                               "Sample source", "Age at event", "Age at event unit")
        ]  # fmt: skip
    first = "Commercial use|Collaboration|Genetic data use"
    oldest = "90" if mode is DeidentificationMode.safe_harbor else "94"
    assert shown == {
        "SER": ["Female", "Serum", "'-60 °C to -85 °C", "M32", first, "Human", oldest, "years"],
        "CEL": ["Female", "Peripheral blood mononuclear cells (PBMC)",
                "Liquid nitrogen vapor-phase", "M32", first, "Human", oldest, "years"],
        "BUF": ["Unknown", "Buffy Coat", "Liquid nitrogen vapor-phase", "", "Genetic data use",
                "Human", "44", "years"],
        "URN": ["Unknown", "Urine", "Other", "", "Genetic data use", "Human", "44", "years"],
        "TIS": ["Unknown", "Other", "Other", "", "Genetic data use", "Human", "44", "years"],
    }  # fmt: skip
    created = {r["Sample creation date and time"]
               for r in _dicts(result.directory / "specimens_miabis.csv")}  # fmt: skip
    assert created == ({"2024"} if mode is DeidentificationMode.safe_harbor else {"2024-06-03"})


def test_the_export_columns_carry_miabis_names_and_the_dictionary_says_which(
    engine, admin, tmp_path
):
    _seed(engine, admin)
    request = ExportRequest(query=CohortQuery(), uses=["GENETIC"], formats=["csv"])
    with uow(engine) as session:
        result = exports.run_export(session, actor=admin, request=request, directory=tmp_path)
    named = {r["name"]: r["miabis"] for r in _dicts(result.directory / "dictionary.csv")
             if r["miabis"]}  # fmt: skip
    assert named == {
        "participant_code": "Sample donor ID", "sex": "Sex", "specimen_code": "Sample ID",
        "specimen_type": "Sample type", "storage_temperature": "Sample storage temperature",
        "collected": "Sample creation date and time", "age_at_collection": "Age at event",
    }  # fmt: skip
    assert set(named.values()) <= ATTRIBUTES
    rows = _dicts(result.directory / "specimens.csv")
    # the class as the freezer records it (spreadsheet-safe); empty for a tube in no box
    assert sorted(r["storage_temperature"] for r in rows) == [
        "", "", "'-80C", "LN2 vapour", "LN2 vapour"]  # fmt: skip


@pytest.mark.parametrize(
    ("recorded", "miabis"),
    [
        ("-80C", "-60 °C to -85 °C"), ("-70 °C", "-60 °C to -85 °C"),
        ("-20C", "-18 °C to -35 °C"), ("4C", "2 °C to 10°C"), ("+8 C", "2 °C to 10°C"),
        ("RT", "RT"), ("22C", "RT"), ("-150C", "<-135 °C"), ("LN2", "<-135 °C"),
        ("LN2 vapour", "Liquid nitrogen vapor-phase"), ("ln2 vapor", "Liquid nitrogen vapor-phase"),
        ("LN2 liquid", "Liquid nitrogen liquid-phase"), ("-40C", "Other"), ("30C", "Other"),
        ("cold room", "Other"), ("", "Other"), (None, "Other"),
    ],
)  # fmt: skip
def test_temperature_classes_become_the_lists_storage_temperatures(recorded, miabis):
    assert storage_temperature(recorded) == miabis
    assert miabis in LISTS["Sample storage temperature"]


def test_every_cell_is_spreadsheet_safe_and_every_header_a_miabis_attribute(tmp_path):
    columns = [
        Column("participant_code", "Participant", role="participant", miabis="Sample donor ID"),
        Column("sex", "Sex", role="participant", miabis="Sex"),
        Column("specimen_code", "Specimen", role="specimen", miabis="Sample ID"),
        Column("specimen_type", "Type", role="specimen", miabis="Sample type"),
        Column("storage_temperature", "Storage", role="specimen",
               miabis="Sample storage temperature"),
        Column("collected", "Collected", kind="date", role="specimen",
               miabis="Sample creation date and time"),
        Column("age_at_collection", "Age", kind="integer", role="specimen",
               miabis="Age at event"),
        Column("dx_date", "SLE diagnosis", kind="year", code_system="http://snomed.info/sct",
               code="55464009"),
    ]  # fmt: skip

    def records(codes):
        statements = (StatementConsent("COMMERCIAL", "granted"),
                      StatementConsent("GENETIC", "withdrawn"))  # fmt: skip
        return {code: ParticipantRecord((), ConsentRecord(statements)) for code in codes}

    rows = [
        ("=HYPERLINK(1)", "male", "@SUM(A1)", "PL1", "-20C", date(2024, 1, 2), 40, 2001),
        ("+cmd", None, "-2+3", None, None, None, None, None),
    ]
    path = tmp_path / "miabis.csv"
    assert write_miabis_csv(path, columns, rows, records).rows == 2
    header, *lines = _read(path)
    assert lines == [
        ["'=HYPERLINK(1)", "Male", "'@SUM(A1)", "Plasma", "'-18 °C to -35 °C", "2024-01-02",
         "M32", "Commercial use", "Human", "'@SUM(A1)-C", "40", "years"],
        ["'+cmd", "Unknown", "'-2+3", "Other", "Other", "", "", "Commercial use", "Human",
         "", "", ""],
    ]  # fmt: skip
    assert set(header) <= ATTRIBUTES

    renamed = [*columns[:3], Column("specimen_type", "Type", miabis="Material type")]
    with pytest.raises(ValidationError, match="'Material type' is not a MIABIS attribute"):
        write_miabis_csv(tmp_path / "x.csv", renamed, [], records)
    with pytest.raises(ValidationError, match="needs a column for Sample type"):
        write_miabis_csv(tmp_path / "x.csv", columns[:3], [], records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["miabis.csv"]
