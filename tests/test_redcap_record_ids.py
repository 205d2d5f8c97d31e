"""REDCap record IDs as REDCap has them: kept as each participant's external ID, matched on
re-import, adopted from an earlier import's codes, found by `participant show` and the scan
resolver, and hidden when the project marks the record ID an identifier."""

from pathlib import Path

import pytest
import sqlalchemy as sa

from biobank.db import uow
from biobank.domain.permissions import Role
from biobank.errors import NotFound
from biobank.services import participants, scan, studies
from biobank.services.imports import redcap
from biobank.services.imports.common import Counts

RECORDS = ["1", "2", "10", "a", "LUP_001", "lup_001"]
DICTIONARY = Path(__file__).parent / "data" / "redcap" / "extra_dictionary.csv"
MAPPING = 'record_id = "record_id"\nvisit_date = "visit_date"\n[identity]\n[consent]\n'


def _files(tmp_path: Path, records: list[str], *, phi: bool = False) -> dict[str, object]:
    """A project of a record ID (an identifier with `phi`) and a visit date, and its rows."""
    header = DICTIONARY.read_text(encoding="utf-8").splitlines()[0]
    dictionary = tmp_path / "dictionary.csv"
    dictionary.write_text(
        f"{header}\nrecord_id,visits,,text,Record ID,,,,,,{'y' if phi else ''},,,,,,,\n"
        "visit_date,visits,,text,Visit date,,,date_ymd,,,,,,,,,,\n"
    )
    rows = "".join(f"{r},baseline_arm_1,2024-01-0{i % 9 + 1}\n" for i, r in enumerate(records))
    path = tmp_path / "records.csv"
    path.write_text(f"record_id,redcap_event_name,visit_date\n{rows}")
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    return {
        "dictionary": dictionary,
        "records": path,
        "mapping": redcap.redcap_mapping(mapping),
    }


def _import(engine, actor, files, **options):
    with uow(engine) as session:
        plan = redcap.check_redcap(session, actor=actor, study="LUP", **files, **options)
        assert plan.report.faults == [], plan.report.faults[:5]
        return redcap.write_redcap(session, actor=actor, plan=plan)


def _external_ids(engine) -> dict[str, tuple[str, bool]]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT x.value, p.code, x.phi FROM participant_external_id x "
                "JOIN participant p ON p.id = x.participant_id"
            )
        ).all()
    return {value: (code, bool(phi)) for value, code, phi in rows}


@pytest.fixture
def lup(engine, admin):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="LUP", title="Lupus")


def test_record_ids_are_kept_as_written_and_matched_again(engine, admin, lup, tmp_path):
    files = _files(tmp_path, RECORDS)
    report = _import(engine, admin, files)
    assert report.participants == Counts(added=6)
    found = _external_ids(engine)
    assert sorted(found) == sorted(RECORDS)  # `LUP_001` and `lup_001` are two records
    codes = {code for code, _ in found.values()}
    assert len(codes) == 6 and all(participants.PARTICIPANT_CODE.match(c) for c in codes)
    assert all(c.startswith("LUP-") for c in codes)  # pseudonymous codes of ours
    again = _import(engine, admin, files)
    assert again.participants == Counts(unchanged=6) and again.visits == Counts(unchanged=6)
    assert _external_ids(engine) == found
    with uow(engine, readonly=True) as session:
        shown = participants.show_participant(session, actor=admin, study="LUP", record="lup_001")
        with pytest.raises(NotFound):
            participants.show_participant(session, actor=admin, study="LUP", record="Lup_001")
    assert shown.code == found["lup_001"][0]
    assert [(x.system, x.value, x.phi) for x in shown.external_ids] == [
        ("redcap", "lup_001", False)
    ]


def test_an_earlier_imports_participant_is_adopted(engine, admin, lup, tmp_path):
    with uow(engine) as session:  # as the importer before record IDs coded participants
        participants.add_participant(session, actor=admin, study="LUP", code="LUP-001")
    report = _import(engine, admin, _files(tmp_path, ["lup-001", "LUP-001", "7"]))
    assert report.participants == Counts(added=2, unchanged=1)
    assert report.notices[-1].startswith("1 participants of an earlier import")
    found = _external_ids(engine)
    assert found["LUP-001"][0] == "LUP-001"  # the record spelt as its code is adopted
    assert found["lup-001"][0] != "LUP-001"
    with engine.connect() as connection:
        reasons = connection.execute(
            sa.text("SELECT reason FROM audit_entry WHERE action = 'participant_external_id.add'")
        ).scalars()
        assert sorted(r.endswith("adopted by code") for r in reasons) == [False, False, True]


def test_scanning_a_record_id(engine, admin, lup, tmp_path):
    _import(engine, admin, _files(tmp_path, RECORDS))
    found = _external_ids(engine)
    with uow(engine, lookup=True) as session:
        scanned = scan.resolve_scan(session, actor=admin, scanned=" LUP_001\r\n")
        lower = scan.resolve_scan(session, actor=admin, scanned="lup_001")
        short = scan.resolve_scan(session, actor=admin, scanned="10")
    assert isinstance(scanned, scan.ParticipantScan)
    assert scanned.participant_code == found["LUP_001"][0]
    assert scanned.message == f"participant {found['LUP_001'][0]} (REDCap record LUP_001)"
    assert isinstance(lower, scan.ParticipantScan)
    assert lower.participant_code == found["lup_001"][0]
    assert isinstance(short, scan.UnknownScan)  # under 3 characters: not scanned as an ID
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="OTH", title="Other")
        plan = redcap.check_redcap(
            session, actor=admin, study="OTH", **_files(tmp_path, ["LUP_001"])
        )
        redcap.write_redcap(session, actor=admin, plan=plan)
    with uow(engine, lookup=True) as session:
        both = scan.resolve_scan(session, actor=admin, scanned="LUP_001")
    assert isinstance(both, scan.UnknownScan) and "LUP, OTH" in both.message


def test_a_phi_record_id_is_hidden(engine, actors, lup, tmp_path):
    admin = actors[Role.admin]
    _import(engine, admin, _files(tmp_path, ["LUP_001"], phi=True))
    [(code, phi)] = _external_ids(engine).values()
    assert phi
    technician = actors[Role.technician]
    with uow(engine, lookup=True) as session:
        plain = participants.show_participant(session, actor=admin, code=code)
        full = participants.show_participant(session, actor=admin, code=code, with_identity=True)
        with pytest.raises(NotFound, match=r"\(hidden\)"):
            participants.show_participant(session, actor=technician, study="LUP", record="LUP_001")
        scanned = scan.resolve_scan(session, actor=admin, scanned="LUP_001")
    assert plain.external_ids == [] and [x.value for x in full.external_ids] == ["LUP_001"]
    assert isinstance(scanned, scan.UnknownScan)
    with engine.connect() as connection:
        after = connection.execute(
            sa.text("SELECT after FROM audit_entry WHERE action = 'participant_external_id.add'")
        ).scalar_one()
    assert "LUP_001" not in str(after)
