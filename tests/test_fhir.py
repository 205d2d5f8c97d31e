"""The FHIR export through the real export service on both engines, read back as a FHIR
consumer would: every resource validated by the R4B models, the Bundle and the Bulk Data files
(`--format fhir-ndjson`) saying the same, codes and systems checked, participant values once,
visit values once per visit dated when observed, the diagnosis a Condition, consent with its
document, and the guards (consent, Safe Harbor) holding in every file."""

from __future__ import annotations

import csv
import json
import re
from datetime import date
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.domain.cohort import CohortQuery
from biobank.domain.vocabulary import DeidentificationMode
from biobank.export.fhir_ndjson import FILE_NAMES
from biobank.services import exports, participants, phenotypes, withdrawals
from biobank.services.exports import ExportRequest

UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
SPREC = "https://doi.org/10.1089/bio.2017.0109"
RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
FULL_DATE = re.compile(r"^\d{4}-\d{2}")


@pytest.fixture
def registry(cohort_db, admin):
    """The cohort of `cohort_seed` with more of a lupus record: P-0001 (two serum tubes, at
    baseline 2020-03-01 and month 6 2020-09-01) has race, ethnicity, an ANA titre and a
    diagnosis date, a C3 measured on 2020-02-10 at a visit without a tube (what the baseline
    tube borrows), and a free-text note that reads like a formula; P-0002 is of more than one
    race (no US Core category) and withdrew future research on 2021-06-01."""
    with uow(cohort_db) as session:

        def value(participant, variable, value, **where):
            phenotypes.set_value(
                session, actor=admin, participant=participant, variable=variable, value=value,
                **where,
            )  # fmt: skip

        value("P-0001", "race", "white")
        value("P-0001", "ethnicity", "no")
        value("P-0001", "ana_titre", "1:320")
        value("P-0001", "dx_date", "2012-06-15")
        value("P-0001", "cart_product", '=HYPERLINK("http://x","y")')
        value("P-0002", "race", "multiple")
        participants.add_visit(
            session, actor=admin, participant="P-0001", label="labs", visit_date=date(2020, 2, 10)
        )
        value("P-0001", "c3", "71", visit="labs")
        withdrawals.withdraw(
            session, actor=admin, participant="P-0002", withdrawn_on=date(2021, 6, 1),
            requested_by="participant", disposition="keep_no_use", statement="FUTURE_RESEARCH",
        )  # fmt: skip
    return cohort_db


def _export(engine, actor, folder, **request):
    asked = {"query": CohortQuery(), "uses": ["GENETIC"], "formats": ["fhir", "fhir-ndjson"]}
    with uow(engine) as session:
        return exports.run_export(
            session, actor=actor, request=ExportRequest(**(asked | request)), directory=folder
        )


def _ndjson(folder: Path) -> dict[str, list[dict]]:
    """Each Bulk Data file's resources, every one validated by its R4B model."""
    found = {}
    for name in FILE_NAMES:
        kind = name.removesuffix(".ndjson")
        lines = (folder / name).read_text(encoding="utf-8").splitlines()
        found[kind] = [json.loads(line) for line in lines]
        for resource in found[kind]:
            assert resource["resourceType"] == kind
            get_fhir_model_class(kind).model_validate(resource)
    return found


def _bundle(folder: Path) -> dict[str, list[dict]]:
    text = (folder / "bundle.json").read_text(encoding="utf-8")
    Bundle.model_validate_json(text)
    found: dict[str, list[dict]] = {kind.removesuffix(".ndjson"): [] for kind in FILE_NAMES}
    for entry in json.loads(text)["entry"]:
        assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}"
        found[entry["resource"]["resourceType"]].append(entry["resource"])
    return found


def _strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def _of(resources, patient_id, name):
    """The Observations of one patient whose local code is `name`."""
    return [
        o for o in resources["Observation"]
        if o["subject"]["reference"].endswith(patient_id)
        and o["code"]["coding"][-1]["code"] == name
    ]  # fmt: skip


def test_bulk_files_and_bundle_hold_the_same_valid_resources_linked_by_id(
    registry, admin, tmp_path
):
    result = _export(registry, admin, tmp_path)
    bulk, bundle = _ndjson(result.directory), _bundle(result.directory)
    assert {k: [r["id"] for r in v] for k, v in bulk.items()} == {
        k: [r["id"] for r in v] for k, v in bundle.items()
    }
    ids = {(kind, r["id"]) for kind, resources in bulk.items() for r in resources}
    for resources in bulk.values():
        for resource in resources:
            for text in _strings(resource):
                if "/" in text and text.split("/")[0] in bulk:  # a reference: Type/id
                    assert tuple(text.split("/")) in ids, text
    assert len(bulk["Patient"]) == len(bulk["Consent"]) == 3
    assert len(bulk["Specimen"]) == 6
    manifest = json.loads(result.manifest.read_text())
    for name in FILE_NAMES:
        lines = (result.directory / name).read_text().count("\n")
        assert manifest["files"][name]["rows"] == lines
    assert manifest["files"]["bundle.json"]["rows"] == 6  # the spreadsheet rows


def test_participant_values_once_visit_values_once_per_visit_each_dated_when_observed(
    registry, admin, tmp_path
):
    result = _export(registry, admin, tmp_path, mode=DeidentificationMode.identified)
    bulk = _ndjson(result.directory)
    patient = next(p for p in bulk["Patient"] if p["identifier"][0]["value"] == "P-0001")
    pid = patient["id"]
    # race and ethnicity map to US Core: extensions of the Patient, no Observation
    extensions = {e["url"]: e["extension"] for e in patient["extension"]}
    assert extensions[RACE][0]["valueCoding"] == {
        "system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3", "display": "White",
    }  # fmt: skip
    assert extensions[RACE][1] == {"url": "text", "valueString": "White"}
    assert extensions[ETHNICITY][0]["valueCoding"]["code"] == "2186-5"
    assert _of(bulk, pid, "race") == _of(bulk, pid, "ethnicity") == []
    # "more than one race" names no OMB category: one Observation of the participant instead
    other = next(p for p in bulk["Patient"] if p["identifier"][0]["value"] == "P-0002")
    assert "extension" not in other
    [race] = _of(bulk, other["id"], "race")
    assert race["valueCodeableConcept"]["coding"][0]["code"] == "multiple"
    assert race["category"][0]["coding"][0] == {"system": CATEGORY, "code": "social-history"}
    # a participant's own value: once, though two tubes are exported
    [ana] = _of(bulk, pid, "ana_titre")
    assert ana["code"]["coding"][0] == {"system": LOINC, "code": "5048-4"}
    assert "effectiveDateTime" not in ana  # recorded without a date
    # a visit's values: once per visit, each on its visit's day (not the tube's)
    upcr = sorted(_of(bulk, pid, "upcr"), key=lambda o: o["effectiveDateTime"])
    assert [(o["effectiveDateTime"], o["valueQuantity"]["value"]) for o in upcr] == [
        ("2020-03-01", 0.6), ("2020-09-01", 0.2),
    ]  # fmt: skip
    for observation in upcr:
        assert observation["valueQuantity"] | {"value": 0} == {
            "value": 0, "unit": "g/g", "system": UCUM, "code": "g/g",
        }  # fmt: skip
        assert observation["code"]["coding"][0] == {"system": LOINC, "code": "2890-2"}
        assert observation["category"][0]["coding"] == [{"system": CATEGORY, "code": "laboratory"}]
        assert "specimen" not in observation
    # the C3 the baseline tube borrows: dated when measured, once
    [c3] = _of(bulk, pid, "c3")
    assert c3["effectiveDateTime"] == "2020-02-10"
    assert c3["valueQuantity"] == {"value": 71.0, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}
    five = next(p for p in bulk["Patient"] if p["identifier"][0]["value"] == "P-0005")
    [sledai] = _of(bulk, five["id"], "sledai2k")
    assert sledai["valueInteger"] == 8
    assert sledai["category"][0]["coding"][0]["code"] == "survey"
    [ln_class] = _of(bulk, five["id"], "ln_class")
    assert ln_class["effectiveDateTime"] == "2020-09-01"
    assert ln_class["category"][0]["coding"][0]["code"] == "exam"
    # every quantity of every Observation is UCUM-coded
    for observation in bulk["Observation"]:
        if "valueQuantity" in observation:
            assert observation["valueQuantity"]["system"] == UCUM
            assert observation["valueQuantity"]["code"]


def test_the_diagnosis_date_is_a_condition_with_its_onset(registry, admin, tmp_path):
    result = _export(registry, admin, tmp_path, mode=DeidentificationMode.identified)
    bulk = _ndjson(result.directory)
    [condition] = bulk["Condition"]
    assert condition["code"]["coding"] == [
        {"system": SNOMED, "code": "55464009"},
        {"system": ICD10, "code": "M32", "display": "Systemic lupus erythematosus"},
    ]
    assert condition["onsetDateTime"] == "2012-06-15"
    patient = next(p for p in bulk["Patient"] if p["identifier"][0]["value"] == "P-0001")
    assert condition["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert not any(o["code"]["coding"][-1]["code"] == "dx_date" for o in bulk["Observation"])


def test_specimens_are_typed_in_snomed_with_sprec_kept_as_an_extension(registry, admin, tmp_path):
    bulk = _ndjson(_export(registry, admin, tmp_path).directory)
    for specimen in bulk["Specimen"]:
        assert specimen["type"] == {
            "coding": [{"system": SNOMED, "code": "119364003", "display": "Serum specimen"}],
            "text": "Serum",
        }
        [sprec] = specimen["extension"]
        assert sprec["valueCoding"]["system"] == SPREC
        assert sprec["valueCoding"]["code"].startswith("SER")
        assert specimen["container"][0]["specimenQuantity"] == {
            "value": 500.0, "unit": "uL", "system": UCUM, "code": "uL",
        }  # fmt: skip


def test_consent_names_its_document_date_period_and_each_statement(registry, admin, tmp_path):
    result = _export(registry, admin, tmp_path, mode=DeidentificationMode.identified)
    bulk = _ndjson(result.directory)
    patients = {p["id"]: p["identifier"][0]["value"] for p in bulk["Patient"]}
    for consent in bulk["Consent"]:
        code = patients[consent["patient"]["reference"].removeprefix("Patient/")]
        assert consent["status"] == "active"
        assert consent["dateTime"] == "2020-03-01"
        assert consent["sourceReference"] == {
            "identifier": {"system": "urn:biobank:consent-document", "value": "MAIN|1"},
            "display": "Consent, version 1",
        }
        assert consent["provision"]["period"] == {"start": "2020-03-01"}
        statements = {
            p["purpose"][0]["code"]: (p["type"], p.get("period", {}).get("start"))
            for p in consent["provision"]["provision"]
        }
        withdrawn = code == "P-0002"  # a withdrawal of one statement: from its day
        assert statements == {
            "FUTURE_RESEARCH": ("deny", "2021-06-01") if withdrawn else ("permit", "2020-03-01"),
            "GENETIC": ("permit", "2020-03-01"),
            "COMMERCIAL": ("deny", "2020-03-01"),  # answered no
            "DATA_SHARING": ("deny", None),  # never asked
            "RECONTACT": ("deny", None),
        }


def test_safe_harbor_leaves_no_full_date_in_any_resource(registry, admin, tmp_path):
    result = _export(registry, admin, tmp_path)
    bundle = json.loads((result.directory / "bundle.json").read_text(encoding="utf-8"))
    for value in _strings(bundle):
        assert not FULL_DATE.match(value), value
    for name in FILE_NAMES:
        text = (result.directory / name).read_text(encoding="utf-8")
        for line in text.splitlines():
            for value in _strings(json.loads(line)):
                assert not FULL_DATE.match(value), (name, value)
        assert "2020-" not in text and "2012-" not in text, name
    bulk = _ndjson(result.directory)
    [condition] = bulk["Condition"]
    assert condition["onsetDateTime"] == "2012"
    assert {c["dateTime"] for c in bulk["Consent"]} == {"2020"}
    assert {c["provision"]["period"]["start"] for c in bulk["Consent"]} == {"2020"}
    assert {o.get("effectiveDateTime") for o in bulk["Observation"]} == {"2020", None}
    for patient in bulk["Patient"]:
        assert not patient["identifier"][0]["value"].startswith("P-000")  # export codes only
    assert not any(o["code"]["coding"][-1]["code"] == "cart_product" for o in bulk["Observation"])


def test_a_withdrawn_or_refusing_participant_is_in_no_file(registry, admin, tmp_path):
    """P-0004 withdrew everything, P-0003 refused genetic use: neither is in any file, though
    both have values, consent and tubes."""
    result = _export(registry, admin, tmp_path, mode=DeidentificationMode.identified)
    for name in (*FILE_NAMES, "bundle.json"):
        text = (result.directory / name).read_text(encoding="utf-8")
        assert "P-0004" not in text and "P-0003" not in text, name
    bulk = _ndjson(result.directory)
    assert sorted(p["identifier"][0]["value"] for p in bulk["Patient"]) == [
        "P-0001", "P-0002", "P-0005",
    ]  # fmt: skip
    patient_ids = {p["id"] for p in bulk["Patient"]}
    for kind in ("Observation", "Condition", "Specimen"):
        for resource in bulk[kind]:
            assert resource["subject"]["reference"].removeprefix("Patient/") in patient_ids
    for consent in bulk["Consent"]:
        assert consent["patient"]["reference"].removeprefix("Patient/") in patient_ids


def test_a_formula_like_text_stays_inert_text_in_fhir_and_guarded_in_the_csv(
    registry, admin, tmp_path
):
    result = _export(
        registry, admin, tmp_path, mode=DeidentificationMode.identified,
        formats=["csv", "fhir-ndjson"],
    )  # fmt: skip
    bulk = _ndjson(result.directory)
    [note] = [o for o in bulk["Observation"] if o["code"]["coding"][-1]["code"] == "cart_product"]
    assert note["valueString"] == '=HYPERLINK("http://x","y")'  # a string, never evaluated
    with (result.directory / "specimens.csv").open(newline="", encoding="utf-8") as file:
        cells = {r["cart_product"] for r in csv.DictReader(file) if r["participant_code"]
                 == "P-0001"}  # fmt: skip
    assert cells and all(not cell.startswith("=") for cell in cells)


def test_the_cli_writes_bulk_files_and_replays_them(registry, monkeypatch, tmp_path):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", registry.url.render_as_string(False))
    runner = CliRunner()
    done = runner.invoke(
        app,
        ["-u", "admin", "export", "run", "--to", str(tmp_path), "--use", "GENETIC",
         "--format", "fhir-ndjson", "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    folder = Path(result["directory"])
    assert {p.name for p in folder.iterdir()} == {*FILE_NAMES, "dictionary.csv", "manifest.json"}
    assert len(_ndjson(folder)["Patient"]) == 3
    again = runner.invoke(app, ["-u", "admin", "export", "replay", result["run_code"]])
    assert again.exit_code == 0 and "the same files again" in again.stderr
