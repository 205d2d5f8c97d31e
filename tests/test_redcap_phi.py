"""PHI never leaks in as phenotypes: a field nobody flagged `Identifier? = y` whose validation,
name or label says phone, e-mail, address, a person's name, date of birth, ZIP, MRN or SSN goes
only to the identity table, listed by name in one notice; the mapping's `[fields.<name>] phi`
keeps it as a phenotype or drops it; no fault or notice shows its values."""

import dataclasses
from pathlib import Path

import pytest
import sqlalchemy as sa
from redcap_projects import phi_unflagged

from biobank import redcap as redcap_files
from biobank.db import uow
from biobank.domain.phi import phi_reason
from biobank.errors import ValidationError
from biobank.services import participants, studies
from biobank.services.imports import redcap
from biobank.services.imports.common import ImportReport
from biobank.tabular import open_source

SAMPLES = Path(__file__).parent / "data" / "redcap"
PHI = ("home_phone", "contact", "nok_name", "street_address", "nok_dob", "ssn_last4")
NOTICE = (
    "PHI, not imported as phenotypes: home_phone (validation phone), contact (label), "
    "nok_name (name), street_address (name), nok_dob (name), ssn_last4 (name)"
)


@pytest.mark.parametrize(
    ("name", "label", "validation", "reason"),
    [
        ("home_phone", "", "phone_australia", "validation phone_australia"),
        ("x1", "", "postalcode_canada", "validation postalcode_canada"),
        ("x2", "", "mrn_10d", "validation mrn_10d"),
        ("x3", "", "vmrn", "validation vmrn"),
        ("first_name", "Given", "", "name"),
        ("pt_surname", "", "", "name"),
        ("date_of_birth", "", "", "name"),
        ("name", "", "", "name"),
        ("x4", "Next of kin name", "", "label"),
        ("x5", "<b>E-mail</b>", "", "label"),
        ("x6", "Zip code", "", "label"),
        ("x7", "Date of birth", "", "label"),
        ("med_name", "Drug name", "", None),  # "name" alone is data
        ("dx_date", "Date of SLE diagnosis", "date_ymd", None),
        ("visit_date", "Visit date", "date_ymd", None),
        ("record_id", "Record ID", "", None),
        ("birth_year", "Year of birth", "integer", None),
        ("telomere_len", "Telomere length", "number", None),
    ],
)
def test_what_says_phi(name, label, validation, reason):
    assert phi_reason(name, label, validation) == reason


def test_the_shipped_samples_hold_no_phi_but_the_flagged():
    caught = {}
    for dictionary in ("redcap_data_dictionary.csv", "extra_dictionary.csv"):
        source = open_source(SAMPLES / dictionary, [], "data dictionary")
        for f in redcap_files.read_dictionary(source.records()).fields.values():
            why = phi_reason(f.name, f.label, f.validation)
            if why is not None:
                caught[f.name] = (why, f.identifier)
    assert caught == {"mrn": ("name", True), "zip_code": ("validation zipcode", True)}


# --- Imported --------------------------------------------------------------------------------


@pytest.fixture
def study(engine, admin):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="RC", title="REDCap PHI")


def _import(engine, admin, files, mapping: str | None = None) -> ImportReport:
    dictionary, records = files
    given = None
    if mapping is not None:
        path = dictionary.parent / "mapping.toml"
        path.write_text(mapping, encoding="utf-8")
        given = redcap.redcap_mapping(path)
    with uow(engine) as session:
        plan = redcap.check_redcap(
            session, actor=admin, dictionary=dictionary, records=records, study="RC", mapping=given
        )
        if plan.report.faults:
            return plan.report
        return redcap.write_redcap(session, actor=admin, plan=plan)


def _phenotypes(engine) -> tuple[set[str], set[str]]:
    """The variables there are, and every value stored, as text."""
    with engine.connect() as connection:
        names = set(connection.scalars(sa.text("SELECT name FROM phenotype_variable")))
        values = connection.execute(
            sa.text("SELECT value_text, value_number, value_date FROM phenotype_value")
        ).all()
    return names, {str(v) for row in values for v in row if v is not None}


def _identity_other(engine, admin, record: str) -> dict[str, str]:
    with uow(engine, readonly=True) as session:
        shown = participants.show_participant(
            session, actor=admin, study="RC", record=record, with_identity=True
        )
    return shown.identity.other


def test_unflagged_phi_goes_only_to_the_identity_table(engine, admin, study, tmp_path):
    project = phi_unflagged()
    report = _import(engine, admin, project.write(tmp_path))
    assert report.faults == []
    assert NOTICE in report.notices
    names, stored = _phenotypes(engine)
    assert {"shape_weight", "med_name"} <= names and not names & set(PHI)
    assert "hydroxychloroquine" in stored
    for row in project.rows:
        assert not stored & {row.cells[f] for f in PHI}
        assert _identity_other(engine, admin, row.record) == {f: row.cells[f] for f in PHI}
    assert any("visits dated by enrol_date" in n for n in report.notices)  # not by nok_dob


def test_the_mapping_keeps_drops_or_sends_a_field_to_identity(engine, admin, study, tmp_path):
    project = phi_unflagged()
    mapping = (
        '[fields.home_phone]\nphi = "keep"\n'
        '[fields.SSN_last4]\nphi = "drop"\n'
        '[fields.shape_weight]\nphi = "identity"\n'
        "[fields.not_there]\n"
    )
    report = _import(engine, admin, project.write(tmp_path), mapping)
    assert report.faults == []
    assert [n for n in report.notices if "PHI" in n or "fields." in n] == [
        "the mapping's fields.not_there is not in the dictionary",
        "PHI, not imported as phenotypes: contact (label), nok_name (name), "
        "street_address (name), nok_dob (name), ssn_last4 (name, dropped), "
        "shape_weight (the mapping)",
        'PHI imported as phenotypes (phi = "keep" in the mapping): home_phone (validation phone)',
    ]
    names, stored = _phenotypes(engine)
    assert "home_phone" in names and not names & {"ssn_last4", "shape_weight"}
    first = project.rows[0].cells
    assert first["home_phone"] in stored and first["ssn_last4"] not in stored
    other = _identity_other(engine, admin, "1")
    assert other["shape_weight"] == first["shape_weight"]
    assert "ssn_last4" not in other and "home_phone" not in other


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            '[fields.home_phone]\nphi = "maybe"\n',
            "map.toml: fields.home_phone.phi is 'maybe', not one of identity, drop, keep",
        ),
        ('[fields.home_phone]\nrename = "x"\n', "map.toml: fields.home_phone.rename is not a "),
        ('fields = ["home_phone"]\n', "map.toml: fields must be tables [fields.<field name>]"),
        (
            '[fields.sex]\nphi = "drop"\n',
            "map.toml: fields.sex.phi is for a field with no other role; sex is the sex",
        ),
    ],
)
def test_a_bad_field_rule_names_its_key(tmp_path, mapping, message):
    path = tmp_path / "map.toml"
    path.write_text(mapping, encoding="utf-8")
    with pytest.raises(ValidationError) as raised:
        redcap.redcap_mapping(path)
    assert raised.value.message.startswith(message)


def test_no_fault_or_notice_shows_a_phi_value(engine, admin, study, tmp_path):
    project = phi_unflagged()
    first = project.rows[0]
    project.rows[0] = dataclasses.replace(first, cells=first.cells | {"nok_dob": "1950-02-31"})
    report = _import(engine, admin, project.write(tmp_path))
    assert [(f.row, f.column, f.value) for f in report.faults] == [(1, "nok_dob", "(hidden)")]
    shown = " ".join([*report.notices, *(f"{f.value} {f.reason}" for f in report.faults)])
    for row in project.rows:
        for field in PHI:
            assert row.cells[field] not in shown, field
    _, stored = _phenotypes(engine)
    assert stored == set()  # nothing written
