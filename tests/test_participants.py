"""Studies, participants and visits; PHI stays in the identity table."""

import json
import re
from datetime import date

import pytest
import sqlalchemy as sa
from inventory import FUTURE

from biobank.db import uow
from biobank.domain.vocabulary import Role
from biobank.errors import AlreadyExists, NotFound, PermissionDenied, ValidationError
from biobank.export.fhir_resources import GENDERS
from biobank.services import participants, studies
from biobank.services.deidentification import MIABIS_SEX

PHI = {"mrn": "MRN5550123", "family_name": "Zebulon", "given_name": "Quentessa"}


@pytest.fixture
def study(engine, admin):
    with uow(engine) as session:
        return studies.add_study(session, actor=admin, code="sle", title="Lupus registry")


def test_study_code_and_prefix(engine, admin, study):
    assert (study.code, study.id_prefix) == ("SLE", "SLE")
    with pytest.raises(AlreadyExists, match="code 'SLE'"), uow(engine) as session:
        studies.add_study(session, actor=admin, code="SLE", title="again")
    with pytest.raises(ValidationError) as caught, uow(engine) as session:
        studies.add_study(session, actor=admin, code="X Y", title="bad")
    assert caught.value.field == "code"


def test_generated_codes_are_pseudonymous(engine, admin, study):
    with uow(engine) as session:
        made = [
            participants.add_participant(session, actor=admin, study="SLE", mrn=f"MRN{i}")
            for i in range(20)
        ]
    codes = {p.code for p in made}
    assert len(codes) == 20
    assert all(re.fullmatch(r"SLE-[34679ACDEFGHJKLMNPQRTUVWXY]{6}", c) for c in codes)


def test_sex_other_is_fhir_other_and_miabis_unknown(engine, admin, study):
    """FHIR's administrative gender has `other`; MIABIS has none, so it exports as Unknown."""
    with uow(engine) as session:
        made = participants.add_participant(session, actor=admin, study="SLE", sex="other")
        shown = participants.show_participant(session, actor=admin, code=made.code)
    assert shown.sex == "other" and shown.external_ids == []
    assert GENDERS["other"] == "other"
    assert dict(MIABIS_SEX)["other"] == "Unknown"


def test_show_needs_a_code_or_a_study_and_record(engine, admin, study):
    with uow(engine, readonly=True) as session:
        for named in ({}, {"record": "1"}, {"code": "SLE-X", "study": "SLE", "record": "1"}):
            with pytest.raises(ValidationError):
                participants.show_participant(session, actor=admin, **named)
        with pytest.raises(NotFound, match="no participant of SLE with redcap ID '1'"):
            participants.show_participant(session, actor=admin, study="SLE", record="1")


def test_phi_lives_only_in_the_identity_table(engine, admin, study):
    with uow(engine) as session:
        p = participants.add_participant(
            session, actor=admin, study="SLE", date_of_birth=date(1980, 5, 17), **PHI
        )
    assert p.birth_year == 1980
    inspector = sa.inspect(engine)
    with engine.connect() as connection:
        for table in inspector.get_table_names():
            if table in {"participant_identity", "audit_entry", "alembic_version"}:
                continue
            for row in connection.execute(sa.text(f"SELECT * FROM {table}")):
                text = " ".join(str(v) for v in row)
                for value in [*PHI.values(), "1980-05-17"]:
                    assert value not in text, f"PHI {value!r} found in {table}"


def test_only_admins_write_or_read_phi(engine, actors, study):
    tech, pi = actors[Role.technician], actors[Role.pi]
    with pytest.raises(PermissionDenied, match="protected health information"), uow(engine) as s:
        participants.add_participant(s, actor=tech, study="SLE", mrn="MRN1")
    with uow(engine) as session:
        code = participants.add_participant(session, actor=tech, study="SLE", sex="female").code
    for actor in (tech, pi):
        with pytest.raises(PermissionDenied), uow(engine) as session:
            participants.show_participant(session, actor=actor, code=code, with_identity=True)
        with uow(engine) as session:
            shown = participants.show_participant(session, actor=actor, code=code)
        assert shown.identity is None


def test_admin_reads_identity(engine, admin, study):
    with uow(engine) as session:
        code = participants.add_participant(session, actor=admin, study="SLE", **PHI).code
    with uow(engine) as session:
        shown = participants.show_participant(session, actor=admin, code=code, with_identity=True)
    assert shown.identity.mrn == PHI["mrn"]


def test_code_must_not_contain_the_mrn(engine, admin, study):
    with pytest.raises(ValidationError, match="must not contain the MRN"), uow(engine) as s:
        participants.add_participant(s, actor=admin, study="SLE", code="SLE-MRN5550123", **PHI)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"code": "a b"}, "code"),
        ({"sex": "yes"}, "sex"),
        ({"birth_year": 1850}, "birth_year"),
        ({"enrolled_on": FUTURE}, "enrolled_on"),
        ({"date_of_birth": FUTURE}, "date_of_birth"),
        ({"birth_year": 1990, "date_of_birth": date(1991, 1, 1)}, "birth_year"),
        ({"birth_year": 2000, "enrolled_on": date(1999, 1, 1)}, "enrolled_on"),
        ({"study": "NOPE"}, "study"),
    ],
)
def test_bad_participant_values(engine, admin, study, kwargs, field):
    kwargs = {"study": "SLE", **kwargs}
    with pytest.raises((ValidationError, NotFound)) as caught, uow(engine) as session:
        participants.add_participant(session, actor=admin, **kwargs)
    assert caught.value.field == field
    with uow(engine) as session:
        assert participants.list_participants(session, actor=admin) == []


def test_visits(engine, actors, study):
    tech = actors[Role.technician]
    with uow(engine) as session:
        code = participants.add_participant(
            session, actor=tech, study="SLE", code="sle-0001", birth_year=1985
        ).code
        participants.add_visit(
            session, actor=tech, participant=code, label="Month  6", visit_date=date(2024, 7, 1)
        )
        participants.add_visit(
            session, actor=tech, participant=code, label="Baseline", visit_date=date(2024, 1, 2)
        )
    assert code == "SLE-0001"
    with pytest.raises(AlreadyExists, match="month 6"), uow(engine) as session:
        participants.add_visit(
            session, actor=tech, participant=code, label="month 6", visit_date=date(2024, 7, 2)
        )
    with pytest.raises(ValidationError, match="before birth"), uow(engine) as session:
        participants.add_visit(
            session, actor=tech, participant=code, label="x", visit_date=date(1970, 1, 1)
        )
    with uow(engine) as session:
        shown = participants.show_participant(session, actor=tech, code="sle-0001")
    assert [(v.label, v.visit_date) for v in shown.visits] == [
        ("baseline", date(2024, 1, 2)),
        ("month 6", date(2024, 7, 1)),
    ]


def test_list_pages_and_filters(engine, admin, study):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="VAX", title="Vaccine response")
        for i in range(5):
            participants.add_participant(session, actor=admin, study="SLE", code=f"SLE-{i:04d}")
        participants.add_participant(session, actor=admin, study="VAX", code="VAX-0001")
    with uow(engine) as session:
        page = participants.list_participants(session, actor=admin, study="SLE", limit=2, offset=2)
        vax = participants.list_participants(session, actor=admin, study="vax")
        found = participants.list_participants(session, actor=admin, code_contains="e-000")
    assert [p.code for p in page] == ["SLE-0002", "SLE-0003"]
    assert [p.code for p in found] == [f"SLE-{i:04d}" for i in range(5)]
    assert [p.code for p in vax] == ["VAX-0001"]


def test_a_listed_participant_carries_their_visits(demo_cli):
    """`participant list --json` as a script reads it: each participant's visits, oldest
    first, as `participant show` gives them; none for a participant without any."""
    demo_cli("-u", "admin", "participant", "add", "--study", "SLE", "--code", "SLE-NOVISIT")
    listed = json.loads(demo_cli("-u", "tech", "participant", "list", "--json").stdout)
    assert len(listed) == 4
    for person in listed:
        shown = demo_cli("-u", "tech", "participant", "show", person["code"], "--json").stdout
        assert person["visits"] == json.loads(shown)["visits"]
    visits = {p["code"]: [v["label"] for v in p["visits"]] for p in listed}
    assert visits.pop("SLE-NOVISIT") == []
    assert all(labels and labels[0] == "baseline" for labels in visits.values())
    paged = demo_cli("-u", "tech", "participant", "list", "--limit", "1", "--offset", "1", "--json")
    assert json.loads(paged.stdout) == listed[1:2]
