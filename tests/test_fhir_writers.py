"""The FHIR writers on their own (no database): the Bundle and the Bulk Data files made from
rows and participants' records, every resource validated by the R4B models, each code in the
system it belongs to, refusals that name what is wrong, and memory flat in the rows."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import date
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from test_export_writers import COLUMNS, Live, make_rows, ordered

from biobank.errors import ValidationError
from biobank.export import BATCH_ROWS, Column, write_fhir_bundle
from biobank.export.fhir_ndjson import FILE_NAMES, write_fhir_ndjson
from biobank.export.fhir_resources import (
    ConsentRecord,
    Observed,
    ParticipantRecord,
    StatementConsent,
    Variable,
    resource_id,
)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
SPREC = "https://doi.org/10.1089/bio.2017.0109"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
STATES = ("granted", "refused", "withdrawn", "not_asked")
STATEMENTS = ("FUTURE_RESEARCH", "GENETIC", "COMMERCIAL")

UPCR = Variable(
    "upcr",
    Column("upcr", "UPCR", kind="decimal", unit="g/g", code_system=LOINC, code="2890-2"),
    per_participant=False, category="labs",
)  # fmt: skip
SLEDAI = Variable("sledai2k", Column("sledai2k", "SLEDAI-2K", kind="integer"), False, "activity")
PGA = Variable("pga", Column("pga", "Physician global", kind="decimal"), False, "activity")
DOSE = Variable("dose", Column("dose", "Dose", kind="decimal", unit="drops/week"), False, "diary")
LN_CLASS = Variable(
    "ln_class",
    Column("ln_class", "ISN/RPS class", choices=[("III", "Class III"), ("IV", "Class IV")]),
    per_participant=False, category="nephritis",
)  # fmt: skip
BIOPSY = Variable("ln_biopsy", Column("ln_biopsy", "Biopsy", kind="boolean"), False, "nephritis")
RACE = Variable(
    "race", Column("race", "Race", choices=[("white", "White"), ("multiple", "More than one")]),
    per_participant=True, category="demographics",
)  # fmt: skip
DX = Variable(
    "dx_date", Column("dx_date", "SLE diagnosis", kind="year", code_system=SNOMED,
                      code="55464009"),
    per_participant=True, category="demographics",
)  # fmt: skip
CART = Variable("cart_product", Column("cart_product", "CAR-T product"), True, "medications")


def record(n: int) -> ParticipantRecord:
    """Participant n's record: values at two visits (on days of their own), their own values,
    the consent of `STATES` turned by n."""
    values = (
        Observed(RACE, "white" if n % 2 else "multiple", None),
        Observed(DX, 2010 + n, 2010 + n),
        Observed(CART, '=HYPERLINK("http://x","y")', date(2023, 1, 2)),
        Observed(UPCR, 0.25 + n, date(2019, 12, 30), visit=f"V{n}-1"),
        Observed(SLEDAI, 4, date(2020, 1, 2), visit=f"V{n}-1"),
        Observed(UPCR, 0.5 + n, date(2020, 7, 1), visit=f"V{n}-2"),
        Observed(UPCR, 0.75 + n, date(2020, 7, 15), visit=f"V{n}-2", instance=2),
        Observed(PGA, 1.5, date(2020, 7, 1), visit=f"V{n}-2"),
        Observed(DOSE, 3.0, date(2020, 7, 1), visit=f"V{n}-2"),
        Observed(LN_CLASS, "IV" if n % 2 else "II", date(2020, 7, 1), visit=f"V{n}-2"),
        Observed(BIOPSY, False, date(2020, 7, 1), visit=f"V{n}-2"),
    )
    statements = tuple(
        StatementConsent(s, STATES[(n + j) % 4], date(2019, 5, 1) if (n + j) % 4 != 3 else None)
        for j, s in enumerate(STATEMENTS)
    )
    consent = ConsentRecord(
        statements, "MAIN", "2", "Biobank consent", date(2019, 5, 1), date(2015, 3, 4)
    )
    return ParticipantRecord(values, consent)


class Registry:
    """`fhir_resources.Records` of the 12 participants of `make_rows`, counting what it is
    asked."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def __call__(self, codes):
        self.asked.append(list(codes))
        return {code: record(int(code[1:])) for code in codes if code.startswith("X")}


def _bundle(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    Bundle.model_validate_json(text)
    resources = [entry["resource"] for entry in json.loads(text).get("entry", [])]
    for resource in resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return resources


def _ndjson(folder: Path) -> dict[str, list[dict]]:
    found = {}
    for name in FILE_NAMES:
        kind = name.removesuffix(".ndjson")
        found[kind] = [json.loads(line) for line in (folder / name).read_text().splitlines()]
        for resource in found[kind]:
            get_fhir_model_class(kind).model_validate(resource)
    return found


def test_the_bundle_validates_and_every_reference_resolves_inside_it(tmp_path):
    rows = make_rows()
    path = tmp_path / "bundle.json"
    written = write_fhir_bundle(path, COLUMNS, ordered(COLUMNS, rows), Registry())
    assert written.rows == 50
    assert written.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    resources = _bundle(path)
    entries = json.loads(path.read_text())["entry"]
    urls = {e["fullUrl"]: e["resource"] for e in entries}
    assert len(urls) == len(entries)
    for entry in entries:
        for key in ("subject", "patient"):
            if key in entry["resource"]:
                assert urls[entry["resource"][key]["reference"]]["resourceType"] == "Patient"
        for parent in entry["resource"].get("parent", []):
            assert urls[parent["reference"]]["resourceType"] == "Specimen"
    kinds = [r["resourceType"] for r in resources]
    assert kinds.count("Patient") == kinds.count("Consent") == kinds.count("Condition") == 12
    assert kinds.count("Specimen") == 51  # and the parent not exported: S9999
    # per participant: 8 visit values, the CAR-T note, "more than one" race for half of them
    assert kinds.count("Observation") == 12 * 9 + 6


def test_each_value_once_dated_when_observed_and_coded_in_its_system(tmp_path):
    rows = make_rows()
    write_fhir_ndjson(tmp_path, COLUMNS, ordered(COLUMNS, rows), Registry())
    bulk = _ndjson(tmp_path)
    patient = {p["identifier"][0]["value"]: p for p in bulk["Patient"]}

    def observations(code, name):
        subject = f"Patient/{patient[code]['id']}"
        return [
            o for o in bulk["Observation"]
            if o["subject"]["reference"] == subject and o["code"]["coding"][-1]["code"] == name
        ]  # fmt: skip

    upcr = observations("X001", "upcr")  # two visits, one of them two fillings of a form
    assert [(o["effectiveDateTime"], o["valueQuantity"]["value"]) for o in upcr] == [
        ("2019-12-30", 1.25), ("2020-07-01", 1.5), ("2020-07-15", 1.75),
    ]  # fmt: skip
    assert len({o["id"] for o in upcr}) == 3
    assert upcr[0]["code"]["coding"][0] == {"system": LOINC, "code": "2890-2"}
    assert upcr[0]["category"] == [
        {"coding": [{"system": CATEGORY, "code": "laboratory"}], "text": "labs"}
    ]
    assert upcr[0]["valueQuantity"] == {"value": 1.25, "unit": "g/g", "system": UCUM,
                                        "code": "g/g"}  # fmt: skip
    [pga] = observations("X001", "pga")  # no unit: UCUM's unity
    assert pga["valueQuantity"] == {"value": 1.5, "system": UCUM, "code": "1"}
    [dose] = observations("X001", "dose")  # a unit UCUM has no code for here: text, no guess
    assert dose["valueQuantity"] == {"value": 3.0, "unit": "drops/week"}
    assert dose["category"] == [{"text": "diary"}]  # a category FHIR has no code for: its name
    [sledai] = observations("X001", "sledai2k")
    assert sledai["valueInteger"] == 4
    assert sledai["category"][0]["coding"][0]["code"] == "survey"
    [ln] = observations("X001", "ln_class")
    assert ln["valueCodeableConcept"]["coding"] == [
        {"system": "urn:biobank:phenotype:ln_class", "code": "IV", "display": "Class IV"}
    ]
    assert observations("X002", "ln_class")[0]["valueString"] == "II"  # not a listed choice
    assert observations("X001", "ln_biopsy")[0]["valueBoolean"] is False
    [note] = observations("X001", "cart_product")
    assert note["valueString"] == '=HYPERLINK("http://x","y")'  # JSON text: nothing evaluates it
    assert note["category"][0]["coding"][0]["code"] == "therapy"
    # race: a US Core extension where the code maps, an Observation where it does not
    assert patient["X001"]["extension"][0]["url"].endswith("us-core-race")
    assert observations("X001", "race") == []
    assert "extension" not in patient["X002"]
    assert observations("X002", "race")[0]["valueCodeableConcept"]["text"] == "More than one"
    # the diagnosis: a Condition with its onset, never an Observation
    condition = next(
        c for c in bulk["Condition"] if c["subject"]["reference"].endswith(patient["X003"]["id"])
    )
    assert condition["onsetDateTime"] == "2013"
    assert [c["code"] for c in condition["code"]["coding"]] == ["55464009", "M32"]
    assert observations("X003", "dx_date") == []
    for observation in bulk["Observation"]:
        assert "specimen" not in observation  # a participant's value, not a tube's


def test_specimens_are_typed_in_snomed_and_keep_sprec_as_an_extension(tmp_path):
    rows = make_rows(10)
    rows[3] |= {"specimen_type": "DNA", "sprec_code": None}
    rows[4] |= {"specimen_type": "TIS", "sprec_code": None}
    rows[5] |= {"specimen_type": "BUF", "sprec_code": None, "unit": "mL", "quantity": 1.5}
    rows[6] |= {"specimen_type": "SER", "sprec_code": "SER-SST-A-B-N-A-D", "unit": "µL",
                "quantity": 250.0}  # fmt: skip
    write_fhir_ndjson(tmp_path, COLUMNS, ordered(COLUMNS, rows), Registry())
    specimens = {s["identifier"][0]["value"]: s for s in _ndjson(tmp_path)["Specimen"]}
    dna = specimens[rows[3]["specimen_code"]]
    assert dna["type"]["coding"] == [
        {"system": SNOMED, "code": "258566005", "display": "Deoxyribonucleic acid sample"}
    ]
    assert specimens[rows[4]["specimen_code"]]["type"] == {"text": "TIS"}  # no SNOMED CT code
    buffy = specimens[rows[5]["specimen_code"]]
    assert buffy["type"]["coding"][0]["code"] == "258587000"
    assert buffy["container"][0]["specimenQuantity"] == {
        "value": 1.5, "unit": "mL", "system": UCUM, "code": "mL",
    }  # fmt: skip
    serum = specimens[rows[6]["specimen_code"]]
    assert serum["type"]["coding"] == [
        {"system": SNOMED, "code": "119364003", "display": "Serum specimen"}
    ]
    assert serum["extension"] == [
        {"url": "urn:biobank:fhir:extension:sprec-code",
         "valueCoding": {"system": SPREC, "code": "SER-SST-A-B-N-A-D"}},
    ]  # fmt: skip
    assert serum["container"][0]["specimenQuantity"]["code"] == "uL"
    for specimen in specimens.values():
        for coding in specimen.get("type", {}).get("coding", []):
            assert coding["system"] == SNOMED  # SPREC is never a type coding


def test_consent_carries_its_document_dates_and_a_provision_per_statement(tmp_path):
    rows = make_rows()
    write_fhir_ndjson(tmp_path, COLUMNS, ordered(COLUMNS, rows), Registry())
    bulk = _ndjson(tmp_path)
    code_of = {f"Patient/{p['id']}": p["identifier"][0]["value"] for p in bulk["Patient"]}
    for consent in bulk["Consent"]:
        n = int(code_of[consent["patient"]["reference"]][1:])
        expected = record(n).consent
        assert consent["dateTime"] == "2019-05-01"
        assert consent["sourceReference"]["identifier"]["value"] == "MAIN|2"
        assert consent["sourceReference"]["display"] == "Biobank consent, version 2"
        assert consent["provision"]["period"] == {"start": "2015-03-04"}
        assert "type" not in consent["provision"]  # R4: the root rule has none
        given = {p["purpose"][0]["code"]: p for p in consent["provision"]["provision"]}
        for statement in expected.statements:
            provision = given[statement.statement]
            assert provision["type"] == ("permit" if statement.state == "granted" else "deny")
            assert ("period" in provision) == (statement.since is not None)
        granted = any(s.state == "granted" for s in expected.statements)
        assert consent["status"] == ("active" if granted else "inactive")


def test_bundle_and_bulk_files_are_the_same_resources_and_the_same_bytes_again(tmp_path):
    rows = make_rows()
    bundle = [r for r in _bundle(_written_bundle(tmp_path / "a.json", rows))]
    first = write_fhir_ndjson(_folder(tmp_path / "a"), COLUMNS, ordered(COLUMNS, rows), Registry())
    again = write_fhir_ndjson(_folder(tmp_path / "b"), COLUMNS, ordered(COLUMNS, rows), Registry())
    assert [w.sha256 for w in first] == [w.sha256 for w in again]
    assert [w.path.name for w in first] == list(FILE_NAMES)
    bulk = _ndjson(tmp_path / "a")
    assert sorted(r["id"] for r in bundle) == sorted(r["id"] for k in bulk.values() for r in k)
    for written in first:
        assert written.rows == len(bulk[written.path.stem])
        assert written.sha256 == hashlib.sha256(written.path.read_bytes()).hexdigest()
        assert written.bytes == written.path.stat().st_size
    references = {r["id"]: r for k in bulk.values() for r in k}
    for specimen in bulk["Specimen"]:
        kind, id_ = specimen["subject"]["reference"].split("/")
        assert kind == "Patient" and references[id_]["resourceType"] == "Patient"


def _written_bundle(path: Path, rows) -> Path:
    write_fhir_bundle(path, COLUMNS, ordered(COLUMNS, rows), Registry())
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def test_refusals_name_what_is_wrong_and_leave_no_file(tmp_path):
    rows = make_rows()
    stranger = [*rows, rows[0] | {"participant_code": "Q001", "specimen_code": "S7777"}]
    with pytest.raises(ValidationError, match="no consent given for participant Q001"):
        write_fhir_ndjson(tmp_path, COLUMNS, ordered(COLUMNS, stranger), Registry())
    twice = [*rows, rows[0]]
    with pytest.raises(ValidationError, match=f"specimen {rows[0]['specimen_code']} appears twice"):
        write_fhir_bundle(tmp_path / "bundle.json", COLUMNS, ordered(COLUMNS, twice), Registry())
    rows[0]["sex"] = "F?"
    with pytest.raises(ValidationError, match="sex 'F\\?'") as error:
        write_fhir_ndjson(tmp_path, COLUMNS, ordered(COLUMNS, rows), Registry())
    assert error.value.row == 1

    def odd_state(codes):
        found = Registry()(codes)
        return {c: ParticipantRecord((), ConsentRecord((StatementConsent("GENETIC", "maybe"),)))
                for c in found}  # fmt: skip

    with pytest.raises(ValidationError, match="consent state 'maybe'"):
        write_fhir_ndjson(tmp_path, COLUMNS, ordered(COLUMNS, make_rows()), odd_state)
    with pytest.raises(ValidationError, match="needs the column specimen_code"):
        write_fhir_ndjson(tmp_path, COLUMNS[:1], [], Registry())
    assert list(tmp_path.iterdir()) == []


def test_an_empty_export_writes_every_bulk_file_empty(tmp_path):
    written = write_fhir_ndjson(tmp_path, COLUMNS, [], Registry())
    assert [(w.path.name, w.rows, w.bytes) for w in written] == [(n, 0, 0) for n in FILE_NAMES]


def test_records_are_asked_a_batch_at_a_time_for_new_participants_only(tmp_path):
    template = make_rows(12)
    count = 2 * BATCH_ROWS + 5
    rows = (template[i % 12] | {"specimen_code": f"S{i}", "parent_specimen_code": None,
                                "participant_code": f"X{i // 100:03d}"}
            for i in range(count))  # fmt: skip
    registry = Registry()
    write_fhir_ndjson(tmp_path, COLUMNS, ordered(COLUMNS, rows), registry)
    assert [len(asked) for asked in registry.asked] == [100, 100, 1]
    assert len({code for asked in registry.asked for code in asked}) == 201


def test_bulk_files_stream_holding_at_most_two_batches_of_rows(tmp_path):
    """Resources are written as they are made: the first batch's are on disk before the second
    batch is read, and no more than two batches of rows are ever alive."""
    template = make_rows(12)
    count = 3 * BATCH_ROWS
    sizes: list[int] = []

    def rows():
        for i in range(count):
            if i == BATCH_ROWS:  # the second batch begins: the first is written already
                sizes.append(sum(p.stat().st_size for p in tmp_path.iterdir()))
            yield Live(next(ordered(COLUMNS[:3], [template[i % 12] | {"specimen_code": f"T{i}"}])))

    Live.alive = Live.most = 0
    written = write_fhir_ndjson(tmp_path, COLUMNS[:3], rows(), Registry())
    assert sizes[0] > 0
    specimens = next(w for w in written if w.path.name == "Specimen.ndjson")
    assert specimens.rows == count + 1  # and the parent not exported
    assert Live.most <= 2 * BATCH_ROWS
    assert Live.alive == 0


def test_a_failed_bulk_export_leaves_no_file_behind(tmp_path):
    template = make_rows(12)

    def failing():
        for i in range(BATCH_ROWS + 10):
            yield from ordered(COLUMNS, [template[i % 12] | {"specimen_code": f"S{i}"}])
        raise RuntimeError("database went away")

    seen: list[int] = []
    with pytest.raises(RuntimeError, match="database went away"):
        write_fhir_ndjson(tmp_path, COLUMNS, failing(), Registry(), progress=seen.append)
    assert seen == [BATCH_ROWS]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "codes", [("Patient", "P-ABCD"), ("Observation", "X001", "upcr", "V-1", "2"), ("Specimen", "ü")]
)
def test_a_resource_id_is_the_name_based_uuid_of_its_codes(codes):
    """Ids must come out the same for the same codes, run after run and version after version."""
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, "urn:biobank:export")
    assert resource_id(*codes) == str(uuid.uuid5(namespace, "/".join(codes)))
