"""Importing a REDCap project (data dictionary + raw longitudinal export): participants, visits,
phenotype values, consent and identity; every fault reported and nothing written when any row
is faulty; the same files again change nothing; a changed value is changed and audited."""

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from import_checks import audit_since, last_audit_id, written_state

from biobank.db import uow
from biobank.domain.vocabulary import Role
from biobank.errors import PermissionDenied, ValidationError
from biobank.services import (
    audit,
    consent,
    consent_checks,
    demo,
    participants,
    phenotype_variables,
    phenotypes,
    studies,
)
from biobank.services.imports import redcap
from biobank.services.imports.common import Counts, ImportReport, LeftOut, LeftOutRecord

DATA = Path(__file__).parent / "data" / "redcap"
DICTIONARY = DATA / "redcap_data_dictionary.csv"  # the samples, as the registry gave them
RECORDS = DATA / "redcap_records.csv"
EXTRA_DICTIONARY = DATA / "extra_dictionary.csv"  # every other field type, another mapping
EXTRA_RECORDS = DATA / "extra_records.csv"
EXTRA_MAPPING = DATA / "extra_mapping.toml"
NOT_VARIABLES = {"record_id", "redcap_event_name", "mrn", "sex", "birth_year", "visit_date"}
CONSENT = {
    "consent_future": "FUTURE_RESEARCH",
    "consent_genetic": "GENETIC",
    "consent_commercial": "COMMERCIAL",
    "consent_share": "DATA_SHARING",
    "consent_recontact": "RECONTACT",
}


@pytest.fixture
def study(engine, admin):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="SLE", title="Lupus registry")


def _rows(path: Path = RECORDS) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _row(rows: list[dict[str, str]], code: str, event: str) -> int:
    """The index of a record's event row (its data row number is one more)."""
    return next(
        i for i, r in enumerate(rows) if (r["record_id"], r["redcap_event_name"]) == (code, event)
    )


def _variable_cells(rows: list[dict[str, str]]) -> int:
    """The values the sample holds: the filled cells of fields that are phenotype variables."""
    skip = NOT_VARIABLES | {"consent_version", "consent_date", *CONSENT}
    return sum(1 for r in rows for name, cell in r.items() if name not in skip and cell)


def _check(engine, actor, records=RECORDS, **options) -> ImportReport:
    with uow(engine, readonly=True) as session:
        return redcap.check_redcap(
            session,
            actor=actor,
            dictionary=options.pop("dictionary", DICTIONARY),
            records=records,
            **options,
        ).report


def _import(engine, actor, records=RECORDS, **options) -> ImportReport:
    with uow(engine) as session:
        plan = redcap.check_redcap(
            session,
            actor=actor,
            dictionary=options.pop("dictionary", DICTIONARY),
            records=records,
            **options,
        )
        assert plan.report.faults == [], plan.report.faults[:5]
        return redcap.write_redcap(session, actor=actor, plan=plan)


def _record_rows(rows: list[dict[str, str]], record: str) -> list[int]:
    """The data row numbers of a record's rows."""
    return [i + 1 for i, r in enumerate(rows) if r["record_id"] == record]


def _without(rows: list[dict[str, str]], records: set[str]) -> list[dict[str, str]]:
    return [r for r in rows if r["record_id"] not in records]


def _codes(engine) -> dict[str, str]:
    """Record ID → the participant code the import gave it (a code of ours, not the ID)."""
    with engine.connect() as connection:
        return dict(
            connection.execute(
                sa.text(
                    "SELECT x.value, p.code FROM participant_external_id x "
                    "JOIN participant p ON p.id = x.participant_id"
                )
            ).all()
        )


def _by_record(session, actor, record: str, study: str = "SLE", **options):
    """The participant of a REDCap record."""
    return participants.show_participant(
        session, actor=actor, study=study, record=record, **options
    )


def _tables(engine) -> list[str]:
    return [t for t in sa.inspect(engine).get_table_names() if t != "alembic_version"]


def _state(engine) -> tuple[dict[str, int], str | None]:
    """Every table's row count and the audit chain's tail."""
    return written_state(engine, tuple(_tables(engine)))


# --- The samples ---------------------------------------------------------------------------


def test_the_samples_import(engine, admin, study):
    rows = _rows()
    codes = {r["record_id"] for r in rows}
    signed = [r for r in rows if r["consent_version"]]
    last = last_audit_id(engine)
    report = _import(engine, admin)

    assert (report.rows, report.fault_count, report.notices) == (len(rows), 0, [])
    assert report.participants == Counts(added=len(codes))
    assert report.identities == Counts(added=len(codes))
    assert report.visits == Counts(added=len(rows))
    assert report.variables == Counts(unchanged=18)  # all in the lupus core: matched
    assert report.values == Counts(added=_variable_cells(rows))
    assert report.consents == Counts(added=len(signed))
    assert report.documents == ["SLE-REGISTRY 2.1", "SLE-REGISTRY 3.0"]
    counts, _ = _state(engine)
    assert counts["participant"] == counts["participant_identity"] == len(codes) == 24
    assert Counter(action for action, *_ in audit_since(engine, last)) == {
        "participant.add": 24,
        "participant_external_id.add": 24,
        "participant_identity.add": 24,
        "visit.add": len(rows),
        "phenotype_value.add": report.values.added,
        "consent_document.add": 2,
        "consent.sign": len(signed),
    }
    assert counts["visit"] == len(rows) and counts["phenotype_value"] == report.values.added
    assert counts["participant_consent"] == len(signed)
    assert counts["consent_answer"] == len(signed) * 5

    code = _codes(engine)
    with uow(engine, readonly=True) as session:
        first = _by_record(session, admin, "SLE0001")
        documents = consent.list_documents(session, actor=admin)
        values = phenotypes.participant_phenotypes(
            session, actor=admin, participant=code["SLE0012"]
        )
        nephritis = phenotypes.participant_phenotypes(
            session, actor=admin, participant=code["SLE0020"]
        )
        status = consent.consent_status(session, actor=admin, participant=code["SLE0017"])
        assert audit.verify_chain(session, actor=admin).entries == counts["audit_entry"]
    assert (first.sex, first.birth_year) == ("male", 1970)
    assert [(v.label, v.visit_date) for v in first.visits] == [
        ("baseline", date(2017, 4, 28)),
        ("month 6", date(2017, 10, 24)),
        ("month 12", date(2018, 4, 25)),
    ]
    for version in ("2.1", "3.0"):
        document = next(d for d in documents if d.version == version)
        earliest = min(r["consent_date"] for r in signed if r["consent_version"] == f"v{version}")
        assert document.effective_on == date.fromisoformat(earliest)
        assert document.statements == list(CONSENT.values())
    by_name = {(v.variable, v.visit): v for v in values}
    # REDCap codes become the lupus core's codes, matched by label: 6 "More than one", 4 "IV"
    assert by_name["race", None].value == "multiple" and by_name["ethnicity", None].value == "yes"
    assert by_name["dx_date", None].value == date(2006, 10, 11)
    assert by_name["ln_class", "baseline"].value == "IV"
    assert by_name["ln_biopsy", "baseline"].value is True
    assert by_name["upcr", "baseline"].value == 0.274
    assert by_name["sledai2k", "baseline"].observed_on == date(2016, 8, 14)
    assert by_name["sledai2k", "baseline"].source == "redcap"
    assert {(v.variable, v.visit): v.value for v in nephritis}["ln_class", "baseline"] == "IV+V"
    assert status.signatures[0].version == "3.0"
    assert status.signatures[0].answers == {
        "FUTURE_RESEARCH": True,
        "GENETIC": False,
        "COMMERCIAL": True,
        "DATA_SHARING": True,
        "RECONTACT": True,
    }


def test_mrns_are_only_in_the_identity_table(engine, admin, study):
    mrns = {r["mrn"] for r in _rows() if r["mrn"]}
    _import(engine, admin)
    tables = _tables(engine)
    with engine.connect() as connection:
        stored = set(connection.execute(sa.text("SELECT mrn FROM participant_identity")).scalars())
        assert stored == mrns
        for table in tables:
            if table in ("participant_identity", "audit_entry"):
                continue
            for row in connection.execute(sa.text(f"SELECT * FROM {table}")):
                cells = " ".join(str(cell) for cell in row)
                assert not [m for m in mrns if m in cells], (table, row)
        entries = connection.execute(
            sa.text("SELECT entity, action, before, after, reason FROM audit_entry")
        ).all()
    # The audit trail (admins only) snapshots the identity rows it records, and nothing else
    holding = [e for e in entries if any(m in " ".join(map(str, e[2:])) for m in mrns)]
    assert sorted((e.entity, e.action) for e in holding) == [
        ("participant_identity", "participant_identity.add")
    ] * len(mrns)


def test_consent_as_of_after_the_import(engine, admin, study):
    _import(engine, admin)
    with uow(engine, readonly=True) as session:
        ids = {
            p.code: p.id for p in participants.list_participants(session, actor=admin, limit=100)
        }
        codes = _codes(engine)

        def decision(record: str, use: str, as_of: date):
            participant = ids[codes[record]]
            return consent_checks.consent_decisions(
                session, participant_ids=[participant], uses=[use], as_of=as_of
            )[participant]

        refused = decision("SLE0017", "GENETIC", date(2024, 1, 1))  # answered 0
        assert not refused.allowed and refused.denied == {"GENETIC": "refused"}
        assert decision("SLE0001", "GENETIC", date(2024, 1, 1)).allowed
        assert decision("SLE0001", "COMMERCIAL", date(2024, 1, 1)).denied == {
            "COMMERCIAL": "refused"
        }
        before = decision("SLE0001", "GENETIC", date(2017, 4, 27))  # the day before signing
        assert before.denied == {"GENETIC": "not_asked"}


# --- Again, and changed ---------------------------------------------------------------------


def test_a_dry_run_and_a_second_import_change_nothing(engine, admin, study):
    empty = _state(engine)
    dry = _check(engine, admin)
    assert _state(engine) == empty
    first = _import(engine, admin)
    assert dry == first  # the check says what the import then does
    imported = _state(engine)
    again = _import(engine, admin)
    assert _state(engine) == imported
    total = first.values.added
    assert again.values == Counts(unchanged=total) and again.documents == []
    assert again.participants == again.identities == Counts(unchanged=24)
    assert again.visits == Counts(unchanged=47) and again.consents == Counts(unchanged=24)


def test_a_changed_value_changes_that_value_and_one_audit_entry(engine, admin, study, tmp_path):
    _import(engine, admin)
    rows = _rows()
    at = _row(rows, "SLE0002", "month_6_arm_1")
    assert rows[at]["sledai2k"] == "0"
    rows[at]["sledai2k"] = "4"
    counts, _ = _state(engine)
    last = last_audit_id(engine)
    report = _import(engine, admin, _write(tmp_path / "changed.csv", rows))
    assert report.values == Counts(changed=1, unchanged=_variable_cells(rows) - 1)
    assert report.participants == Counts(unchanged=24) and report.visits == Counts(unchanged=47)
    after_counts, _ = _state(engine)
    assert after_counts == counts | {"audit_entry": counts["audit_entry"] + 1}
    [(action, before, after, _)] = audit_since(engine, last)
    assert action == "phenotype_value.change"
    assert (before["value_number"], after["value_number"]) == (0, 4)
    code = _codes(engine)["SLE0002"]
    assert (after["participant"], after["variable"], after["visit"]) == (
        code,
        "sledai2k",
        "month 6",
    )
    with uow(engine, readonly=True) as session:
        values = phenotypes.participant_phenotypes(session, actor=admin, participant=code)
    assert {(v.variable, v.visit): v.value for v in values}["sledai2k", "month 6"] == 4


def test_changed_dates_sex_and_mrn_are_updated_and_audited(engine, admin, study, tmp_path):
    _import(engine, admin)
    rows = _rows()
    baseline, month_6 = (
        _row(rows, "SLE0001", "baseline_arm_1"),
        _row(rows, "SLE0001", "month_6_arm_1"),
    )
    rows[month_6]["visit_date"] = "2017-10-31"
    rows[baseline]["sex"], rows[baseline]["mrn"] = "1", "53464098"
    last = last_audit_id(engine)
    report = _import(engine, admin, _write(tmp_path / "changed.csv", rows))
    assert report.visits == Counts(changed=1, unchanged=46)
    assert report.participants == Counts(changed=1, unchanged=23)
    assert report.identities == Counts(changed=1, unchanged=23)
    assert report.values == Counts(unchanged=_variable_cells(rows))
    entries = audit_since(engine, last)
    month_6_values = sum(
        1 for name, cell in rows[month_6].items() if cell and name not in NOT_VARIABLES
    )
    assert Counter(action for action, *_ in entries) == {
        "participant.change": 1,
        "participant_identity.change": 1,
        "visit.change": 1,
        "phenotype_value.change": month_6_values,  # observed on the visit's new date
    }
    visit = next(e for e in entries if e[0] == "visit.change")
    assert (visit[1]["visit_date"], visit[2]["visit_date"]) == ("2017-10-24", "2017-10-31")
    with uow(engine, readonly=True) as session:
        person = _by_record(session, admin, "SLE0001", with_identity=True)
        values = phenotypes.participant_phenotypes(session, actor=admin, participant=person.code)
    assert (person.sex, person.identity.mrn) == ("female", "53464098")
    assert {v.observed_on for v in values if v.visit == "month 6"} == {date(2017, 10, 31)}


def test_a_signed_consent_is_not_changed_by_an_import(engine, admin, study, tmp_path):
    _import(engine, admin)
    rows = _rows()
    at = _row(rows, "SLE0017", "baseline_arm_1")
    rows[at]["consent_genetic"] = "1"
    state = _state(engine)
    report = _check(engine, admin, _write(tmp_path / "changed.csv", rows))
    [fault] = report.faults
    assert (fault.row, fault.column, fault.value) == (at + 1, "consent_genetic", "1")
    assert "SLE-REGISTRY 3.0 signed 2017-06-27 is recorded with other answers" in fault.reason
    assert _state(engine) == state


# --- Faults ----------------------------------------------------------------------------------


def test_every_faulty_row_is_reported_and_nothing_is_imported(engine, admin, study, tmp_path):
    rows = _rows()
    expected = []

    def spoil(code: str, event: str, name: str, value: str) -> None:
        at = _row(rows, code, event)
        rows[at][name] = value
        expected.append((at + 1, at + 2, name, value))

    spoil("SLE0002", "baseline_arm_1", "sledai2k", "106")  # above the maximum 105
    spoil("SLE0003", "baseline_arm_1", "race", "9")  # no such choice
    spoil("SLE0004", "baseline_arm_1", "visit_date", "2017-02-30")  # no such day
    spoil("SLE0005", "month_6_arm_1", "pga", "high")  # not a number
    spoil("SLE0010", "month_6_arm_1", "redcap_event_name", "month6")  # no arm
    spoil("SLE0011", "month_6_arm_1", "record_id", "")  # no record ID
    rows.append(dict(rows[_row(rows, "SLE0012", "baseline_arm_1")]))  # the same record and event
    expected.append((len(rows), len(rows) + 1, "redcap_event_name", "baseline_arm_1"))
    for r in rows:
        r["favourite_colour"] = "blue"  # a field the dictionary does not have
    expected.append((None, 1, "favourite_colour", "favourite_colour"))
    faulty = _write(tmp_path / "faulty.csv", rows)
    state = _state(engine)

    with uow(engine) as session:
        plan = redcap.check_redcap(session, actor=admin, dictionary=DICTIONARY, records=faulty)
        with pytest.raises(ValidationError, match="nothing was imported"):
            redcap.write_redcap(session, actor=admin, plan=plan)
    report = plan.report
    found = [(f.row, f.line, f.column, f.value) for f in report.faults]
    assert sorted(found, key=str) == sorted(expected, key=str)
    assert (report.fault_count, report.faulty_rows, report.rows) == (8, 7, len(rows))
    reasons = {f.column: f.reason for f in report.faults}
    assert reasons["sledai2k"] == "sledai2k: 106 is above the maximum 105"
    assert reasons["race"].startswith("race: '9' is not one of the choices: 1 (White),")
    assert reasons["visit_date"] == "visit_date: '2017-02-30' is not a date (YYYY-MM-DD)"
    assert reasons["pga"] == "pga: 'high' is not a number"
    assert reasons["record_id"] == "a record ID is required"
    assert reasons["favourite_colour"] == "not a field of the data dictionary"
    by_row = {f.row: f.reason for f in report.faults}
    month6 = _row(rows, "SLE0010", "month6") + 1
    assert by_row[month6].startswith("'month6' is not a REDCap event name like baseline_arm_1")
    first = _row(rows, "SLE0012", "baseline_arm_1") + 1
    assert by_row[len(rows)] == f"row {first} has the same record and event (SLE0012, baseline)"
    assert _state(engine) == state


def test_dictionary_faults_name_the_line_field_and_value(engine, admin, study, tmp_path):
    text = DICTIONARY.read_text(encoding="utf-8")
    text = text.replace("SLEDAI-2K,,,integer,0,105", "SLEDAI-2K,,,,,")  # text, not integer
    text = text.replace('"1, White | 2, Black', '"1, White | 8, Martian | 2, Black')
    text = text.replace("ln_biopsy,visit,,yesno", "ln_biopsy,visit,,fancy")
    text = text.replace("Visit date,,,date_ymd", "Visit date,,,")
    text += 'hcq_split,visit,,dropdown,Split dose,"1, Once | 1, Twice",,,,,,,,,,,,\n'
    dictionary = tmp_path / "dictionary.csv"
    dictionary.write_text(text, encoding="utf-8")
    report = _check(engine, admin, dictionary=dictionary)
    assert {f.file for f in report.faults} == {"dictionary.csv"}
    assert [(f.line, f.column, f.value, f.reason) for f in report.faults] == [
        (
            11,
            "visit_date",
            "text",
            "visit_date (visit_date in the mapping) must be of type date, not text",
        ),
        (
            18,
            "ln_biopsy",
            "fancy",
            "Field Type: unknown field type 'fancy' (known: calc, checkbox, descriptive, "
            "dropdown, file, notes, radio, slider, sql, text, truefalse, yesno)",
        ),
        (
            32,
            "hcq_split",
            "1, Once | 1, Twice",
            "Choices, Calculations, OR Slider Labels: the choice code '1' is given twice",
        ),
    ]
    assert report.notices == [  # fields of another meaning than the variables of their names
        "race is imported as the variable sle__race, not as race, which is another meaning "
        "here: it has no choice for 8, Martian",
        "sledai2k is imported as the variable sle__sledai2k, not as sledai2k, which is another "
        "meaning here: it is of type integer, the field text",
        "the records were not checked: fix the faults above first",
    ]


def test_faults_of_identifiers_do_not_show_them(engine, admin, study, tmp_path):
    rows = _rows()
    first, second = _row(rows, "SLE0001", "baseline_arm_1"), _row(rows, "SLE0002", "baseline_arm_1")
    rows[second]["mrn"] = rows[first]["mrn"]
    report = _check(engine, admin, _write(tmp_path / "same_mrn.csv", rows))
    assert [(f.row, f.column, f.value, f.reason) for f in report.faults] == [
        (second + 1, "mrn", "(hidden)", "record SLE0001 has the same MRN")
    ]
    assert rows[first]["mrn"] not in report.model_dump_json()


# Identifier values a faulty row holds, which no report or output may show.
BAD_DOB, BAD_PHONE, OTHER_DOB = "1985-02-30", "617-555-0199", "1970-03-04"


def _identifier_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A project whose date of birth goes to the identity table and whose (number-validated)
    phone is another identifier: EX-001 has an impossible date of birth and a phone that is
    not a number, EX-002 a birth year that its date of birth contradicts."""
    header = DICTIONARY.read_text(encoding="utf-8").splitlines()[0]
    fields = [
        ["study_id", "enrolment", "", "text", "Study ID"],
        ["dob", "enrolment", "", "text", "Date of birth", "", "", "date_ymd", "", "", "y"],
        ["phone", "enrolment", "", "text", "Phone", "", "", "number", "", "", "y"],
        ["sex", "enrolment", "", "radio", "Sex", "F, Female | M, Male"],
        ["birth_year", "enrolment", "", "text", "Year of birth", "", "", "integer", "1920"],
        ["seen_on", "followup", "", "text", "Visit date", "", "", "date_ymd"],
    ]
    dictionary = tmp_path / "identifiers_dictionary.csv"
    with dictionary.open("w", encoding="utf-8", newline="") as file:
        file.write(header + "\n")
        csv.writer(file).writerows(f + [""] * (18 - len(f)) for f in fields)
    records = _write(
        tmp_path / "identifiers_records.csv",
        [
            {"study_id": "ex-001", "redcap_event_name": "screening_arm_1", "dob": BAD_DOB,
             "phone": BAD_PHONE, "sex": "F", "birth_year": "1985", "seen_on": "2023-01-10"},
            {"study_id": "ex-002", "redcap_event_name": "screening_arm_1", "dob": OTHER_DOB,
             "phone": "6175550123", "sex": "M", "birth_year": "1971", "seen_on": "2023-03-01"},
        ],
    )  # fmt: skip
    mapping = tmp_path / "identifiers_mapping.toml"
    mapping.write_text(
        'record_id = "study_id"\nvisit_date = "seen_on"\nparticipant_forms = ["enrolment"]\n'
        '[identity]\ndate_of_birth = "dob"\n[consent]\n',
        encoding="utf-8",
    )
    return dictionary, records, mapping


def test_faults_of_identifiers_do_not_quote_them(engine, admin, study, tmp_path):
    dictionary, records, mapping = _identifier_files(tmp_path)
    report = _check(
        engine, admin, records, dictionary=dictionary, mapping=redcap.redcap_mapping(mapping)
    )
    assert [(f.row, f.column, f.value, f.reason) for f in report.faults] == [
        (1, "dob", "(hidden)", "dob: (hidden) is not a date (YYYY-MM-DD)"),
        (1, "phone", "(hidden)", "phone: (hidden) is not a number"),
        (2, "birth_year", "1971", "birth year 1971 does not match date of birth (hidden)"),
    ]
    shown = report.model_dump_json()
    assert [v for v in (BAD_DOB, BAD_PHONE, OTHER_DOB) if v in shown] == []


def test_record_ids_are_per_study(engine, admin, study, tmp_path):
    """A project's record IDs name its study's participants: the same IDs in another study
    are that study's own participants (the MRNs left out: they are unique across studies)."""
    _import(engine, admin)
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="OTHER", title="Another")
    rows = [r | {"mrn": ""} for r in _rows()]
    report = _check(engine, admin, _write(tmp_path / "other.csv", rows), study="OTHER")
    assert report.faults == [] and report.participants == Counts(added=24)
    with pytest.raises(ValidationError, match="--study"):
        _check(engine, admin)  # two studies: name one


def test_only_an_admin_imports(engine, actors, study):
    with pytest.raises(PermissionDenied):
        _check(engine, actors[Role.technician])


# --- Faults per row, and skipping the faulty ------------------------------------------------


def test_faulty_records_stop_the_import_or_are_left_out_whole(engine, admin, study, tmp_path):
    rows = _rows()
    month_6 = _row(rows, "SLE0010", "month_6_arm_1")
    baseline = _row(rows, "SLE0007", "baseline_arm_1")
    rows[month_6]["pga"], rows[baseline]["sledai2k"] = "high", "106"
    faulty = _write(tmp_path / "faulty.csv", rows)
    kept = _write(tmp_path / "kept.csv", _without(rows, {"SLE0010", "SLE0007"}))
    expected = _check(engine, admin, kept)  # what importing only the other records would do
    state = _state(engine)
    with uow(engine) as session:
        plan = redcap.check_redcap(session, actor=admin, dictionary=DICTIONARY, records=faulty)
        assert plan.report.left_out is None and not plan.writable
        with pytest.raises(ValidationError, match="nothing was imported"):
            redcap.write_redcap(session, actor=admin, plan=plan)
    assert _state(engine) == state  # the default: all or nothing

    last = last_audit_id(engine)
    with uow(engine) as session:
        plan = redcap.check_redcap(
            session, actor=admin, dictionary=DICTIONARY, records=faulty, skip_faulty=True
        )
        report = redcap.write_redcap(session, actor=admin, plan=plan)
    left = _record_rows(rows, "SLE0010") + _record_rows(rows, "SLE0007")
    assert (report.fault_count, report.faulty_rows) == (2, 2)
    assert report.left_out == LeftOut(
        records=2,
        rows=len(left),
        listed=[
            LeftOutRecord(
                record="SLE0007",
                rows=_record_rows(rows, "SLE0007"),
                reason=f"row {baseline + 1}: sledai2k: 106 is above the maximum 105",
            ),
            LeftOutRecord(
                record="SLE0010",
                rows=_record_rows(rows, "SLE0010"),
                reason=f"row {month_6 + 1}: pga: 'high' is not a number",
            ),
        ],
    )
    for part in ("participants", "identities", "visits", "values", "consents", "documents"):
        assert getattr(report, part) == getattr(expected, part), part
    *_, summary = audit_since(engine, last)
    assert summary[:3] == (
        "study.import_left_out",
        None,
        {"records_left_out": 2, "rows_left_out": len(left), "fields_left_out": []},
    )
    assert _codes(engine).keys() == {r["record_id"] for r in rows} - {"SLE0010", "SLE0007"}
    again = _check(engine, admin, kept)  # exactly the other records were written
    assert again.values == Counts(unchanged=expected.values.added)
    assert again.visits == Counts(unchanged=len(rows) - len(left))
    assert again.participants == again.consents == Counts(unchanged=22)


def test_faults_name_the_row_record_event_and_instance(engine, admin, study, tmp_path):
    rows = _rows()
    for r in rows:
        r["redcap_repeat_instrument"] = r["redcap_repeat_instance"] = ""
    at = _row(rows, "SLE0005", "month_6_arm_1")
    rows[at]["pga"] = "high"
    repeated = rows[_row(rows, "SLE0010", "month_12_arm_1")]
    rows.append(repeated | {"redcap_repeat_instrument": "labs", "redcap_repeat_instance": "2"})
    report = _check(engine, admin, _write(tmp_path / "repeating.csv", rows))
    [pga] = [f for f in report.faults if f.row == at + 1]
    assert (pga.line, pga.record, pga.event, pga.instance, pga.column, pga.value) == (
        at + 2,
        "SLE0005",
        "month_6_arm_1",
        None,
        "pga",
        "high",
    )
    repeating = [f for f in report.faults if f.row == len(rows)]
    assert repeating  # a repeating row is refused, and its faults name its instance
    assert {(f.line, f.record, f.event, f.instance) for f in repeating} == {
        (len(rows) + 1, "SLE0010", "month_12_arm_1", 2)
    }
    written = json.loads(report.model_dump_json())["faults"]
    assert set(written[-1]) == {
        "file", "row", "line", "record", "event", "instance", "column", "value", "reason",
    }  # fmt: skip


def test_a_record_id_that_is_phi_is_never_shown(engine, admin, study, tmp_path):
    text = DICTIONARY.read_text(encoding="utf-8")
    required = "record_id,demographics,,text,Record ID,,,,,,,,y"
    assert required in text
    dictionary = tmp_path / "dictionary.csv"  # the record ID flagged Identifier? = y
    dictionary.write_text(text.replace(required, required[:-3] + "y,,y"), encoding="utf-8")
    rows = _rows()
    rows[_row(rows, "SLE0002", "baseline_arm_1")]["sledai2k"] = "106"
    too_long = "SLE0005" + "9" * 100
    rows[_row(rows, "SLE0005", "month_6_arm_1")]["record_id"] = too_long  # over 100 characters
    rows.append(dict(rows[_row(rows, "SLE0012", "baseline_arm_1")]))  # the same record and event
    records = _write(tmp_path / "records.csv", rows)
    report = _check(engine, admin, records, dictionary=dictionary, skip_faulty=True)
    assert report.fault_count == 3 and {f.record for f in report.faults} == {None}
    assert [(r.record, r.rows) for r in report.left_out.listed] == [
        (None, _record_rows(rows, record)) for record in ("SLE0002", too_long, "SLE0012")
    ]
    shown = report.model_dump_json()
    assert [r for r in ("SLE0002", too_long, "SLE0012") if r in shown] == []
    assert "(hidden)" in {f.value for f in report.faults if f.column == "record_id"}


def test_a_faulty_field_is_a_fault_or_left_out(engine, admin, study, tmp_path):
    text = DICTIONARY.read_text(encoding="utf-8")
    dictionary = tmp_path / "dictionary.csv"
    dictionary.write_text(
        text.replace('"1, White | 2, Black', '"1, White | 1, Martian | 2, Black'),
        encoding="utf-8",
    )
    refused = _check(engine, admin, dictionary=dictionary)
    [fault] = refused.faults
    assert fault.column == "race" and refused.left_out is None
    with uow(engine) as session:
        plan = redcap.check_redcap(
            session, actor=admin, dictionary=dictionary, records=RECORDS, skip_faulty=True
        )
        report = redcap.write_redcap(session, actor=admin, plan=plan)
    assert report.left_out == LeftOut(fields={"race": fault.reason})
    assert report.variables == Counts(unchanged=17) and report.participants == Counts(added=24)
    with uow(engine, readonly=True) as session:
        code = _by_record(session, admin, "SLE0012").code
        values = phenotypes.participant_phenotypes(session, actor=admin, participant=code)
    assert "race" not in {v.variable for v in values} and "ethnicity" in {
        v.variable for v in values
    }


def test_an_unreadable_header_stops_the_import_even_skipping(engine, admin, study, tmp_path):
    rows = [{("study_id" if k == "record_id" else k): v for k, v in r.items()} for r in _rows()]
    state = _state(engine)
    with uow(engine) as session:
        plan = redcap.check_redcap(
            session,
            actor=admin,
            dictionary=DICTIONARY,
            records=_write(tmp_path / "no_record_id.csv", rows),
            skip_faulty=True,
        )
        assert not plan.writable and plan.report.left_out is None
        assert "no column 'record_id'" in {f.reason for f in plan.report.faults}
        with pytest.raises(ValidationError, match="nothing was imported"):
            redcap.write_redcap(session, actor=admin, plan=plan)
    assert _state(engine) == state


# --- Other field types and another mapping -------------------------------------------------


def test_other_field_types_become_variables(engine, admin, study):
    mapping = redcap.redcap_mapping(EXTRA_MAPPING)
    report = _import(engine, admin, EXTRA_RECORDS, dictionary=EXTRA_DICTIONARY, mapping=mapping)
    assert report.notices == ["fields without values (descriptive, file): intro, signed_form"]
    assert report.variables == Counts(added=5)
    assert report.participants == report.identities == Counts(added=2)
    assert report.visits == Counts(added=3) and report.consents == Counts()
    with uow(engine, readonly=True) as session:
        made = {
            v.name: v
            for v in phenotype_variables.list_variables(session, actor=admin)
            if v.name in ("smoking", "symptoms", "fatigue", "bmi", "comments")
        }
        first = _by_record(session, admin, "ex-001", with_identity=True)  # as REDCap has it
        second = _by_record(session, admin, "ex-002", with_identity=True)
        values = phenotypes.participant_phenotypes(session, actor=admin, participant=first.code)
    assert {n: (v.value_type, v.scope) for n, v in made.items()} == {
        "smoking": ("choice", "participant"),
        "symptoms": ("multi_choice", "visit"),
        "fatigue": ("integer", "visit"),
        "bmi": ("decimal", "visit"),
        "comments": ("text", "visit"),
    }
    assert (made["fatigue"].min_value, made["fatigue"].max_value) == (0, 100)
    assert made["bmi"].label == "Body mass index" and made["bmi"].description == "kg/m2"
    assert made["smoking"].choices[1] == {"code": "1", "label": "Former"}
    assert (first.sex, first.birth_year, second.sex) == ("female", 1980, "male")
    assert [(v.label, v.visit_date) for v in first.visits] == [
        ("screening", date(2023, 1, 10)),
        ("week 4", date(2023, 2, 7)),
    ]
    assert second.visits[0].label == "screening"  # arm 2's screening, by [visit_labels]
    assert first.identity.other == {"zip_code": "02139"}  # an identifier, kept as written
    assert first.identity.mrn is None
    by_name = {(v.variable, v.visit): v.value for v in values}
    assert by_name == {
        ("smoking", None): "1",
        ("symptoms", "screening"): ["1", "3"],
        ("fatigue", "screening"): 35,
        ("bmi", "screening"): 24.2,
        ("comments", "screening"): "Feels well, some rash",
        ("fatigue", "week 4"): 60,  # no box ticked: no value
    }
    tables = _tables(engine)
    with engine.connect() as connection:
        for table in tables:
            if table not in ("participant_identity", "audit_entry"):
                for row in connection.execute(sa.text(f"SELECT * FROM {table}")):
                    assert "02139" not in " ".join(map(str, row)), table
    again = _import(engine, admin, EXTRA_RECORDS, dictionary=EXTRA_DICTIONARY, mapping=mapping)
    assert again.variables == Counts(unchanged=5) and again.values.added == 0


def test_a_bad_mapping_is_refused(tmp_path):
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('record_id = "id"\nvisit_dates = "seen"\n', encoding="utf-8")
    with pytest.raises(ValidationError, match=r"wrong\.toml: visit_dates is not a setting"):
        redcap.redcap_mapping(wrong)
    wrong.write_text('[identity]\nssn = "ssn"\n', encoding="utf-8")
    with pytest.raises(ValidationError, match=r"identity\.ssn is not an identity column"):
        redcap.redcap_mapping(wrong)
    wrong.write_text('sex = "record_id"\n', encoding="utf-8")
    with pytest.raises(ValidationError, match="names the field record_id for two things"):
        redcap.redcap_mapping(wrong)


# --- The command line ------------------------------------------------------------------------


@pytest.fixture
def cli(fresh_cli):
    fresh_cli("study", "add", "SLE", "--title", "Lupus registry")
    return fresh_cli


def test_cli_dry_run_import_and_again(cli):
    files = ("--dictionary", DICTIONARY, "--records", RECORDS)
    dry = json.loads(cli("import", "redcap", *files, "--dry-run", "--json").stdout)
    assert dry["dry_run"] and dry["participants"]["added"] == 24
    assert dry["documents"] == ["SLE-REGISTRY 2.1", "SLE-REGISTRY 3.0"]
    assert json.loads(cli("participant", "list", "--json").stdout) == []
    done = cli("import", "redcap", *files, "--study", "SLE")
    assert done.stdout == "" and "importing" in done.stderr  # the progress bar, on stderr
    assert "redcap_records.csv: all 47 rows imported" in done.stderr
    assert "consent document SLE-REGISTRY 3.0: created" in done.stderr
    again = json.loads(cli("import", "redcap", *files, "--json").stdout)
    assert again["values"]["added"] == again["values"]["changed"] == 0
    assert "chain intact" in cli("audit", "verify").stderr


def test_cli_lists_the_faults_and_imports_nothing(cli, tmp_path):
    rows = _rows()
    rows[_row(rows, "SLE0002", "baseline_arm_1")]["sledai2k"] = "106"
    rows[_row(rows, "SLE0005", "month_6_arm_1")]["pga"] = "high"
    faulty = _write(tmp_path / "faulty.csv", rows)
    result = cli("import", "redcap", "--dictionary", DICTIONARY, "--records", faulty, code=2)
    header, *lines = result.stdout.splitlines()
    assert header.split() == [
        "FILE", "ROW", "LINE", "RECORD", "EVENT", "INSTANCE", "FIELD", "VALUE", "REASON",
    ]  # fmt: skip
    assert lines[0].split()[:7] == [
        "faulty.csv", "4", "5", "SLE0002", "baseline_arm_1", "sledai2k", "106",
    ]  # fmt: skip
    assert lines[1].split()[:7] == [
        "faulty.csv",
        "9",
        "10",
        "SLE0005",
        "month_6_arm_1",
        "pga",
        "high",
    ]
    assert "2 faulty (2 faults in all); nothing was imported" in result.stderr
    assert json.loads(cli("participant", "list", "--json").stdout) == []
    mapped = cli(
        "import", "redcap", "--dictionary", EXTRA_DICTIONARY, "--records", EXTRA_RECORDS,
        "--mapping", EXTRA_MAPPING, "--dry-run",
    )  # fmt: skip
    assert "all 3 rows checked; dry run" in mapped.stderr


def test_cli_faults_of_identifiers_do_not_quote_them(cli, tmp_path):
    dictionary, records, mapping = _identifier_files(tmp_path)
    files = ("--dictionary", dictionary, "--records", records, "--mapping", mapping)
    table = cli("import", "redcap", *files, code=2)
    as_json = cli("import", "redcap", *files, "--json", code=2)
    faults = [line.split()[1:6] for line in table.stdout.splitlines()[1:]]
    assert faults == [
        ["1", "2", "ex-001", "screening_arm_1", "dob"],
        ["1", "2", "ex-001", "screening_arm_1", "phone"],
        ["2", "3", "ex-002", "screening_arm_1", "birth_year"],
    ]
    assert [f["column"] for f in json.loads(as_json.stdout)["faults"]] == [
        "dob", "phone", "birth_year",
    ]  # fmt: skip
    shown = table.stdout + table.stderr + as_json.stdout + as_json.stderr
    assert [v for v in (BAD_DOB, BAD_PHONE, OTHER_DOB) if v in shown] == []


def test_cli_skip_faulty_imports_the_other_records_and_lists_the_faulty(cli, tmp_path):
    rows = _rows()
    baseline = _row(rows, "SLE0002", "baseline_arm_1")
    rows[baseline]["sledai2k"] = "106"
    rows[_row(rows, "SLE0005", "month_6_arm_1")]["pga"] = "high"
    files = ("--dictionary", DICTIONARY, "--records", _write(tmp_path / "faulty.csv", rows))
    refused = json.loads(cli("import", "redcap", *files, "--json", code=2).stdout)
    assert refused["fault_count"] == 2 and "left_out" not in refused
    left = _record_rows(rows, "SLE0002") + _record_rows(rows, "SLE0005")
    dry = cli("import", "redcap", *files, "--skip-faulty", "--dry-run")
    assert dry.stdout.splitlines()[1].split()[:7] == [
        "faulty.csv", str(baseline + 1), str(baseline + 2), "SLE0002", "baseline_arm_1",
        "sledai2k", "106",
    ]  # fmt: skip
    shown_rows = ", ".join(map(str, _record_rows(rows, "SLE0002")))
    assert (
        f"left out: record SLE0002, rows {shown_rows} (row {baseline + 1}: sledai2k: 106 is "
        "above the maximum 105)"
    ) in dry.stderr
    assert (
        f"would import {len(rows) - len(left)} of {len(rows)} rows, leaving out 2 faulty "
        f"records ({len(left)} rows); dry run, nothing changed"
    ) in dry.stderr
    assert json.loads(cli("participant", "list", "--json").stdout) == []
    done = json.loads(cli("import", "redcap", *files, "--skip-faulty", "--json").stdout)
    assert [(r["record"], r["rows"]) for r in done["left_out"]["listed"]] == [
        ("SLE0002", _record_rows(rows, "SLE0002")),
        ("SLE0005", _record_rows(rows, "SLE0005")),
    ]
    assert [(f["row"], f["record"], f["event"]) for f in done["faults"]] == [
        (baseline + 1, "SLE0002", "baseline_arm_1"),
        (_row(rows, "SLE0005", "month_6_arm_1") + 1, "SLE0005", "month_6_arm_1"),
    ]
    assert len(json.loads(cli("participant", "list", "--json").stdout)) == 22
    shown = json.loads(
        cli("participant", "show", "--study", "SLE", "--record", "SLE0001", "--json").stdout
    )
    assert shown["external_ids"] == [
        {"system": "redcap", "namespace": "", "value": "SLE0001", "phi": False}
    ]
    cli("participant", "show", "--study", "SLE", "--record", "SLE0002", code=4)  # left out
    unreadable = _write(
        tmp_path / "no_record_id.csv",
        [{("study_id" if k == "record_id" else k): v for k, v in r.items()} for r in rows],
    )
    stopped = cli(
        "import", "redcap", "--dictionary", DICTIONARY, "--records", unreadable,
        "--skip-faulty", code=2,
    )  # fmt: skip
    assert "nothing was imported" in stopped.stderr


def test_the_installed_command(tmp_path):
    biobank = Path(sys.executable).parent / "biobank"
    env = {**os.environ, "BIOBANK_DATABASE_URL": f"sqlite:///{tmp_path / 'redcap.db'}"}

    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run(
            [biobank, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
        )

    assert run("study", "add", "SLE", "--title", "Lupus registry").returncode == 0
    done = run("import", "redcap", "--dictionary", DICTIONARY, "--records", RECORDS, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["participants"]["added"] == 24 and report["visits"]["added"] == 47
    assert "Traceback" not in done.stderr


def test_the_samples_import_into_the_demo_cohort(engine, admin):
    """The tour's order: load the demo, then the registry's REDCap export. The demo's consent
    forms are the registry's, so the signatures land on them and nothing conflicts."""
    with uow(engine) as session:
        demo.seed_demo(session, actor=admin, participants=30)
    report = _import(engine, admin, study="SLE")
    assert report.documents == []  # 2.1 and 3.0 were there ("v2.1" in REDCap is version 2.1)
    with uow(engine, readonly=True) as session:
        code = _by_record(session, admin, "SLE0001").code
        status = consent.consent_status(session, actor=admin, participant=code)
    assert [(s.document, s.version) for s in status.signatures] == [("SLE-REGISTRY", "2.1")]
