"""Attacks on the guard every output passes (commit 42053eb), through the real services, the
real CLI and real migrated databases on both engines:

1. consent is judged as of TODAY for every new export, preview and reservation: a backdated
   withdrawal (of everything, or of GENETIC alone) leaves the participant and their aliquots
   out of today's export and reservations, a past `as_of` is refused before anything is
   written (nor is an export refused while selecting), a replay of an earlier run reports
   the difference and leaves no files, and only the admins' audited `allowed-on` report
   answers for a past day;
2. reservations are exclusive and owned: a second request never takes a reserved tube, the
   database holds one standing reservation a tube, only the owner or an admin releases (a
   check-in of a tube that never left is no back door), a hand-over asks consent again, a
   check-in returns the tube to `reserved`, a tube that is used up, disposed or distributed
   ends its reservation, and two terminals racing for one tube never both reserve it;
3. a saved query is narrowed (AND) by other filters, never ignored or widened, and filters
   that cannot both hold are refused naming the field;
4. a limited data set needs a registered, current, covering data use agreement of the PI,
   and is limited to the agreement's study;
5. each regression as the command a user types.

Dates are relative to `date.today()` so the tests hold on any day.
"""

from __future__ import annotations

import contextlib
import csv
import json
import threading
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from inventory import accession_tube, one_shelf_freezer, participant_with_visit
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.domain.cohort import CohortQuery, parse_conditions
from biobank.domain.vocabulary import DeidentificationMode, Role, SpecimenStatus
from biobank.errors import (
    BiobankError,
    ConcurrentChange,
    ConsentDenied,
    ConstraintViolation,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from biobank.models import (
    AuditEntry,
    ExportRun,
    ExportRunSpecimen,
    Participant,
    Specimen,
    SpecimenEvent,
    SpecimenReservation,
    Visit,
)
from biobank.services import (
    agreements,
    cohort_counts,
    consent,
    custody,
    export_runs,
    exports,
    lineage,
    reservations,
    saved_queries,
    storage,
    studies,
    withdrawals,
)
from biobank.services.deidentification import export_code
from biobank.services.exports import ExportRequest
from biobank.services.identity import actor_for
from biobank.services.users import add_user

WITHDRAWN_DAYS_AGO = 5  # the withdrawal is recorded today, dated this many days back
BEFORE_DAYS_AGO = 10  # a day before the withdrawal, when consent still allowed everything
KINDS = ["everything", "GENETIC"]  # what the participant withdraws
WITHDRAWING = "P-0001"  # consented to everything in tests/cohort_seed.py
ALLOWED_GENETIC = ["P-0001", "P-0002", "P-0005"]  # P-0003 refused GENETIC, P-0004 withdrew


# --- Helpers ---------------------------------------------------------------------------------


def days_ago(days: int) -> date:
    return date.today() - timedelta(days=days)


def _count(engine, model, *where) -> int:
    with uow(engine, readonly=True) as session:
        query = sa.select(sa.func.count()).select_from(model)
        for condition in where:
            query = query.where(condition)
        return session.execute(query).scalar_one()


def _left_behind(engine) -> dict[str, int]:
    """What an export leaves in the database: runs, their specimens, their audit entries,
    reservations and reservation events."""
    return {
        "runs": _count(engine, ExportRun),
        "run_specimens": _count(engine, ExportRunSpecimen),
        "export_audit": _count(engine, AuditEntry, AuditEntry.entity == "export_run"),
        "reservations": _count(engine, SpecimenReservation),
        "reserved_events": _count(engine, SpecimenEvent, SpecimenEvent.event_type == "reserved"),
    }


def _folder(tmp_path: Path, name: str = "out") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def _export(engine, actor, folder: Path, **request) -> exports.ExportResult:
    request = {"query": CohortQuery(), "uses": ["GENETIC"], "formats": ["csv"]} | request
    with uow(engine) as session:
        return exports.run_export(
            session, actor=actor, request=ExportRequest(**request), directory=folder
        )


def _key(engine, run_code: str) -> str:
    with uow(engine, readonly=True) as session:
        return session.execute(
            sa.select(ExportRun.code_key).where(ExportRun.run_code == run_code)
        ).scalar_one()


def _csv(result: exports.ExportResult) -> list[dict[str, str]]:
    with (result.directory / "specimens.csv").open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _csv_codes(result: exports.ExportResult) -> set[str]:
    return {row["specimen_code"] for row in _csv(result)}


def _specimen_ids(engine, *codes: str) -> dict[str, int]:
    """Accession ID -> internal id of every specimen (aliquots too) of the participants."""
    with uow(engine, readonly=True) as session:
        rows = session.execute(
            sa.select(Specimen.accession_id, Specimen.id)
            .join(Participant, Participant.id == Specimen.participant_id)
            .where(Participant.code.in_(codes))
        ).all()
    return dict(rows)


def _tube(engine, code: str, visit: str = "baseline") -> tuple[int, str]:
    """The (id, accession ID) of a participant's primary tube of a visit."""
    with uow(engine, readonly=True) as session:
        return tuple(
            session.execute(
                sa.select(Specimen.id, Specimen.accession_id)
                .join(Participant, Participant.id == Specimen.participant_id)
                .join(Visit, Visit.id == Specimen.visit_id)
                .where(Participant.code == code, Visit.label == visit, Specimen.parent_id.is_(None))
            ).one()
        )


def _run_specimens(engine, run_code: str) -> set[int]:
    with uow(engine, readonly=True) as session:
        return set(
            session.execute(
                sa.select(ExportRunSpecimen.specimen_id)
                .join(ExportRun, ExportRun.id == ExportRunSpecimen.export_run_id)
                .where(ExportRun.run_code == run_code)
            ).scalars()
        )


def _withdraw(engine, admin, code: str, kind: str, withdrawn_on: date) -> None:
    """Record today a withdrawal dated `withdrawn_on`; the tubes stay (keep_no_use), so only
    consent, not their status, can leave them out."""
    with uow(engine) as session:
        withdrawals.withdraw(
            session, actor=admin, participant=code, withdrawn_on=withdrawn_on,
            requested_by="participant", disposition="keep_no_use",
            statement=None if kind == "everything" else kind,
        )  # fmt: skip


def _aliquot(engine, admin, code: str) -> int:
    """One aliquot of the participant's baseline tube; its internal id."""
    _, parent = _tube(engine, code)
    with uow(engine) as session:
        (child,) = lineage.aliquot(session, actor=admin, parent=parent, count=1, volume=50)
    return child.id


def _standing(engine) -> list[tuple[int, str]]:
    """(specimen id, request) of every standing reservation."""
    with uow(engine, readonly=True) as session:
        return sorted(
            session.execute(
                sa.select(SpecimenReservation.specimen_id, SpecimenReservation.request).where(
                    SpecimenReservation.ended_at.is_(None)
                )
            ).all()
        )


def _orphaned(engine) -> list[tuple[str, str]]:
    """(accession ID, status) of tubes that are neither reserved nor out for a request but
    still have a standing reservation: a reservation nobody can hand over or see end."""
    with uow(engine, readonly=True) as session:
        return [
            (accession, SpecimenStatus(status).value)
            for accession, status in session.execute(
                sa.select(Specimen.accession_id, Specimen.status)
                .join(SpecimenReservation, SpecimenReservation.specimen_id == Specimen.id)
                .where(
                    SpecimenReservation.ended_at.is_(None),
                    Specimen.status.not_in([SpecimenStatus.reserved, SpecimenStatus.checked_out]),
                )
            ).all()
        ]


def _status(engine, specimen_id: int) -> tuple[SpecimenStatus, int]:
    with uow(engine, readonly=True) as session:
        row = session.get(Specimen, specimen_id)
        return row.status, row.version


def _events(engine, specimen_id: int) -> list[str]:
    with uow(engine, readonly=True) as session:
        return list(
            session.execute(
                sa.select(SpecimenEvent.event_type)
                .where(SpecimenEvent.specimen_id == specimen_id)
                .order_by(SpecimenEvent.id)
            ).scalars()
        )


def _reserve(engine, actor, specimen_ids, request: str, uses=("GENETIC",)):
    with uow(engine) as session:
        return reservations.reserve_specimens(
            session, actor=actor, specimen_ids=list(specimen_ids), request=request,
            uses=list(uses),
        )  # fmt: skip


def _second_pi(engine, admin):
    with uow(engine) as session:
        add_user(session, actor=admin, username="pi2", role=Role.pi, pin="4444")
    with uow(engine) as session:
        return actor_for(session, username="pi2", workstation="test-bench")


def _a_box(engine, admin, name: str = "-80 #1") -> str:
    """A freezer with one box; the box's barcode."""
    with uow(engine) as session:
        freezer = one_shelf_freezer(session, admin, name)
        return next(
            n.unit.barcode
            for n in storage.storage_tree(session, actor=admin, root=freezer.barcode)
            if n.unit.holds_specimens
        )


def _stored_tube(engine, admin, code: str, box: str) -> tuple[int, str]:
    """A participant's baseline tube, put in the box (so a check-in has its place)."""
    specimen_id, accession = _tube(engine, code)
    with uow(engine) as session:
        custody.move(session, actor=admin, accession=accession, destination=box)
    return specimen_id, accession


def _second_study(engine, admin) -> int:
    """Study LUP2 with one consented participant (L-0001) and one serum tube: exportable for
    GENETIC in every way but its study. The tube's id."""
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="LUP2", title="Second study")
        participant_with_visit(
            session, admin, "L-0001", study="LUP2", visit_date=date(2021, 2, 1), sex="female",
            birth_year=1975,
        )  # fmt: skip
        tube = accession_tube(
            session, admin, "L-0001", visit="baseline",
            collected_at=datetime(2021, 2, 1, 9, 0).astimezone(),
        )  # fmt: skip
        consent.record_consent(
            session, actor=admin, participant="L-0001", document="MAIN", version="1",
            signed_on=date(2021, 2, 1),
            answers={"FUTURE_RESEARCH": True, "GENETIC": True, "COMMERCIAL": False},
        )  # fmt: skip
    return tube.id


def _agreement(engine, admin, reference: str, **fields) -> None:
    values = {
        "pi": "pi1", "study": "SLE", "uses": ["GENETIC"], "starts_on": days_ago(30),
        "expires_on": date.today() + timedelta(days=365),
    } | fields  # fmt: skip
    with uow(engine) as session:
        agreements.register_agreement(session, actor=admin, reference=reference, **values)


@pytest.fixture
def pi(actors):
    return actors[Role.pi]


@pytest.fixture
def cli(cohort_db, actors, monkeypatch):
    """`cli(user, *args, code=0)`: the CLI in-process on the cohort database, acting as
    `user`; asserts the exit code and returns the result."""
    monkeypatch.setenv("BIOBANK_DATABASE_URL", cohort_db.url.render_as_string(False))
    runner = CliRunner()

    def run(user: str, *args: object, code: int = 0):
        result = runner.invoke(app, ["-u", user, *(str(a) for a in args)])
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return result

    return run


# --- 1. Consent as of today ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("past", [BEFORE_DAYS_AGO, 1], ids=["before withdrawal", "yesterday"])
def test_a_new_export_as_of_a_past_day_is_refused_and_writes_nothing(
    cohort_db, admin, pi, tmp_path, kind, past
):
    _aliquot(cohort_db, admin, WITHDRAWING)
    _withdraw(cohort_db, admin, WITHDRAWING, kind, days_ago(WITHDRAWN_DAYS_AGO))
    folder = _folder(tmp_path)
    before = _left_behind(cohort_db)
    with pytest.raises(ValidationError) as caught:
        _export(cohort_db, pi, folder, as_of=days_ago(past), reserve_request="REQ-X")
    assert caught.value.field == "as_of"
    assert "as of today" in caught.value.message
    assert list(folder.iterdir()) == []
    assert _left_behind(cohort_db) == before
    # a day to come is no more "today" than a past one
    with pytest.raises(ValidationError) as caught:
        _export(cohort_db, pi, folder, as_of=date.today() + timedelta(days=1))
    assert caught.value.field == "as_of"
    assert list(folder.iterdir()) == [] and _left_behind(cohort_db) == before


@pytest.mark.parametrize("bad", ["storage", "where", "statuses"])
def test_an_export_refused_for_a_bad_filter_leaves_no_folder(cohort_db, pi, tmp_path, bad):
    """Files are written whole or not at all: a refusal found while selecting (a unit, a
    variable or a status that does not exist) leaves nothing where the PI keeps exports."""
    query = {
        "storage": CohortQuery(storage="NO-SUCH-UNIT"),
        "where": CohortQuery(phenotypes=parse_conditions("no_such_variable >= 1")),
        "statuses": CohortQuery(statuses=["bogus"]),
    }[bad]
    folder = _folder(tmp_path)
    before = _left_behind(cohort_db)
    with pytest.raises(BiobankError):
        _export(cohort_db, pi, folder, query=query, reserve_request="REQ-X")
    assert sorted(p.name for p in folder.rglob("*")) == []
    assert _left_behind(cohort_db) == before


@pytest.mark.parametrize("kind", KINDS)
def test_todays_export_leaves_out_a_backdated_withdrawal_and_its_aliquots(
    cohort_db, admin, pi, tmp_path, kind
):
    child = _aliquot(cohort_db, admin, WITHDRAWING)
    before = _export(cohort_db, pi, _folder(tmp_path, "before"))
    key = _key(cohort_db, before.run_code)
    assert export_code(key, "S", child) in _csv_codes(before)  # the aliquot goes out, until…
    _withdraw(cohort_db, admin, WITHDRAWING, kind, days_ago(WITHDRAWN_DAYS_AGO))

    result = _export(cohort_db, pi, _folder(tmp_path, "after"), as_of=date.today())
    key = _key(cohort_db, result.run_code)
    allowed = _specimen_ids(cohort_db, "P-0002", "P-0005")
    assert _csv_codes(result) == {export_code(key, "S", i) for i in allowed.values()}
    withdrawn = _specimen_ids(cohort_db, WITHDRAWING)
    assert child in withdrawn.values() and len(withdrawn) == 3
    assert _run_specimens(cohort_db, result.run_code) == set(allowed.values())
    assert result.counts == {
        "specimens": 4, "participants": 2, "matched_before_consent": 11,
        "excluded_by_consent": 7,
    }  # fmt: skip
    assert result.exclusions == {
        "GENETIC refused": {"specimens": 2, "participants": 1},  # P-0003
        "GENETIC withdrawn": {"specimens": 5, "participants": 2},  # P-0001 (3), P-0004 (2)
    }
    # an admin's identified export names the same tubes by their accession IDs
    identified = _export(
        cohort_db, admin, _folder(tmp_path, "identified"), mode=DeidentificationMode.identified
    )
    assert _csv_codes(identified) == set(allowed)


@pytest.mark.parametrize("kind", KINDS)
def test_replay_of_an_earlier_run_reports_the_withdrawal_and_writes_no_files(
    cohort_db, admin, pi, tmp_path, monkeypatch, kind, cli
):
    _aliquot(cohort_db, admin, WITHDRAWING)
    folder = _folder(tmp_path)
    run = _export(cohort_db, pi, folder, formats=["csv", "fhir"])
    assert run.counts["specimens"] == 7
    with uow(cohort_db) as session:
        assert export_runs.replay_export(session, actor=pi, run_code=run.run_code).matches
    _withdraw(cohort_db, admin, WITHDRAWING, kind, days_ago(WITHDRAWN_DAYS_AGO))

    kept = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    runs = _count(cohort_db, ExportRun)
    with uow(cohort_db) as session:
        replay = export_runs.replay_export(session, actor=pi, run_code=run.run_code)
    assert not replay.matches
    assert "specimens: 7 then, 4 now" in replay.differences
    assert "excluded_by_consent: 4 then, 7 now" in replay.differences
    assert any(d.startswith("specimens.csv") for d in replay.differences)
    assert any(d.startswith("bundle.json") for d in replay.differences)
    # nothing new where the PI keeps exports, nothing left in the temporary folder
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == kept
    assert list(folder.iterdir()) == [run.directory]
    assert list(scratch.iterdir()) == []
    assert _count(cohort_db, ExportRun) == runs
    # the command a user types says it differs (exit 1), and still writes nothing
    again = cli("pi1", "export", "replay", run.run_code, code=1)
    assert "specimens: 7 then, 4 now" in again.stderr
    assert list(folder.iterdir()) == [run.directory] and list(scratch.iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
def test_reservations_never_take_the_tubes_of_a_withdrawn_participant(
    cohort_db, admin, pi, tmp_path, kind
):
    child = _aliquot(cohort_db, admin, WITHDRAWING)
    _withdraw(cohort_db, admin, WITHDRAWING, kind, days_ago(WITHDRAWN_DAYS_AGO))
    result = _export(cohort_db, pi, _folder(tmp_path), reserve_request="REQ-X")
    allowed = set(_specimen_ids(cohort_db, "P-0002", "P-0005").values())
    assert result.reservation.reserved == 4 and result.counts["reserved"] == 4
    assert {s for s, _ in _standing(cohort_db)} == allowed
    withdrawn = _specimen_ids(cohort_db, WITHDRAWING)
    for specimen_id in withdrawn.values():
        assert _status(cohort_db, specimen_id)[0] is SpecimenStatus.available

    tube, _ = _tube(cohort_db, WITHDRAWING)
    direct = _reserve(cohort_db, pi, [tube, child], "REQ-Y", uses=["GENETIC"])
    assert direct.reserved == 0
    assert direct.left_out == {"GENETIC withdrawn": 2}
    other = _reserve(cohort_db, pi, [tube], "REQ-Z", uses=["FUTURE_RESEARCH"])
    if kind == "everything":
        assert other.reserved == 0 and other.left_out == {"FUTURE_RESEARCH withdrawn": 1}
    else:  # GENETIC alone was withdrawn: other uses are still allowed
        assert other.reserved == 1 and other.left_out == {}
    assert {s for s, r in _standing(cohort_db) if r != "REQ-Z"} == allowed


@pytest.mark.parametrize("kind", KINDS)
def test_allowed_on_a_past_day_is_the_admins_audited_report(cohort_db, admin, pi, kind):
    _aliquot(cohort_db, admin, WITHDRAWING)
    _withdraw(cohort_db, admin, WITHDRAWING, kind, days_ago(WITHDRAWN_DAYS_AGO))
    mine = _specimen_ids(cohort_db, WITHDRAWING)
    audited = _count(cohort_db, AuditEntry, AuditEntry.action == "consent.allowed_on")

    with uow(cohort_db) as session:
        then = cohort_counts.allowed_on(
            session, actor=admin, as_of=days_ago(BEFORE_DAYS_AGO), uses=["GENETIC"],
            reason="IRB audit", listed=True,
        )  # fmt: skip
    assert then.as_of == days_ago(BEFORE_DAYS_AGO)
    assert (then.specimens, then.participants) == (7, 3)
    listed = {s["accession_id"]: s["participant_code"] for s in then.specimens_listed}
    assert set(listed) == set(_specimen_ids(cohort_db, *ALLOWED_GENETIC))
    assert {a for a, p in listed.items() if p == WITHDRAWING} == set(mine)
    with uow(cohort_db) as session:
        now = cohort_counts.allowed_on(
            session, actor=admin, as_of=date.today(), uses=["GENETIC"], reason="IRB audit"
        )
    assert (now.specimens, now.participants) == (4, 2) and now.specimens_listed is None

    with uow(cohort_db, readonly=True) as session:
        entries = session.execute(
            sa.select(AuditEntry.actor, AuditEntry.reason, AuditEntry.after)
            .where(AuditEntry.action == "consent.allowed_on")
            .order_by(AuditEntry.id)
        ).all()
    assert len(entries) == audited + 2
    assert [(a, r) for a, r, _ in entries[-2:]] == [("admin", "IRB audit")] * 2
    assert json.loads(entries[-2].after)["listed"] is True

    refusals = [
        (pi, days_ago(BEFORE_DAYS_AGO), "IRB audit", PermissionDenied, "permission"),
        (admin, days_ago(BEFORE_DAYS_AGO), "   ", ValidationError, "reason"),
        (admin, date.today() + timedelta(days=1), "IRB audit", ValidationError, "as_of"),
    ]
    for actor, day, reason, error, field in refusals:
        with pytest.raises(error) as caught, uow(cohort_db) as session:
            cohort_counts.allowed_on(
                session, actor=actor, as_of=day, uses=["GENETIC"], reason=reason, listed=True
            )
        assert caught.value.field == field
    assert _count(cohort_db, AuditEntry, AuditEntry.action == "consent.allowed_on") == len(entries)


def test_a_preview_is_judged_as_of_today(cohort_db, admin, pi):
    _withdraw(cohort_db, admin, WITHDRAWING, "GENETIC", days_ago(WITHDRAWN_DAYS_AGO))
    with uow(cohort_db, readonly=True) as session:
        today = cohort_counts.preview_cohort(
            session, actor=pi, uses=["GENETIC"], as_of=date.today()
        )
    assert (today.specimens, today.participants) == (4, 2)
    for day in (days_ago(BEFORE_DAYS_AGO), date.today() + timedelta(days=1)):
        with pytest.raises(ValidationError) as caught, uow(cohort_db, readonly=True) as session:
            cohort_counts.preview_cohort(session, actor=pi, uses=["GENETIC"], as_of=day)
        assert caught.value.field == "as_of"


# --- 2. Reservations -------------------------------------------------------------------------


def test_a_second_request_never_takes_a_reserved_tube(cohort_db, pi, tmp_path, cli):
    folder = _folder(tmp_path)
    first = _export(cohort_db, pi, folder, reserve_request="REQ-A")
    assert first.reservation.reserved == 6
    second = _export(
        cohort_db, pi, folder, reserve_request="REQ-B",
        query=CohortQuery(statuses=["available", "reserved"]),
    )  # fmt: skip
    assert second.counts["specimens"] == 6  # the same tubes were selected…
    assert _run_specimens(cohort_db, second.run_code) == _run_specimens(cohort_db, first.run_code)
    assert second.reservation.reserved == 0  # …and none was taken from REQ-A
    assert second.reservation.left_out == {"reserved for REQ-A": 6}
    assert second.counts["reserved"] == 0
    standing = _standing(cohort_db)
    assert len(standing) == 6 and {r for _, r in standing} == {"REQ-A"}

    manifest = json.loads(second.manifest.read_text())
    assert manifest["reservation"] == {
        "request": "REQ-B", "reserved": 0, "left_out": {"reserved for REQ-A": 6},
    }  # fmt: skip
    assert manifest["counts"]["reserved"] == 0 and manifest["reserve_request"] == "REQ-B"
    assert json.loads(first.manifest.read_text())["reservation"]["reserved"] == 6

    listed = json.loads(cli("pi1", "export", "list", "--json").stdout)
    by_run = {r["run_code"]: r for r in listed}
    assert by_run[first.run_code]["counts"]["reserved"] == 6
    assert by_run[second.run_code]["counts"]["reserved"] == 0
    assert by_run[second.run_code]["reserve_request"] == "REQ-B"
    table = cli("pi1", "export", "list").stdout
    assert "6 for REQ-A" in table and "0 for REQ-B" in table


def test_only_the_owner_or_an_admin_releases(cohort_db, admin, pi, tmp_path):
    other = _second_pi(cohort_db, admin)
    _export(cohort_db, pi, _folder(tmp_path), reserve_request="REQ-A")
    ids = _specimen_ids(cohort_db, *ALLOWED_GENETIC)
    (first, second, third, *rest) = sorted(ids)
    standing = _standing(cohort_db)
    events = _count(cohort_db, SpecimenEvent)
    audit = _count(cohort_db, AuditEntry)

    for named in ({"accessions": [first]}, {"request": "REQ-A"}):
        with pytest.raises(PermissionDenied), uow(cohort_db) as session:
            reservations.release_reservations(session, actor=other, reason="mine now", **named)
    assert _standing(cohort_db) == standing
    assert _count(cohort_db, SpecimenEvent) == events and _count(cohort_db, AuditEntry) == audit
    assert {_status(cohort_db, i)[0] for i in ids.values()} == {SpecimenStatus.reserved}

    with uow(cohort_db) as session:
        done = reservations.release_reservations(
            session, actor=pi, reason="  not needed  ", accessions=[first.lower()]
        )
    assert done.released == [first] and done.reason == "not needed"
    assert _status(cohort_db, ids[first])[0] is SpecimenStatus.available
    assert _events(cohort_db, ids[first])[-1] == "released"
    with uow(cohort_db, readonly=True) as session:
        ended = session.execute(
            sa.select(SpecimenReservation).where(SpecimenReservation.specimen_id == ids[first])
        ).scalar_one()
        actions = session.execute(
            sa.select(AuditEntry.action, AuditEntry.reason).where(AuditEntry.id > 0)
            .order_by(AuditEntry.id.desc()).limit(2)
        ).all()  # fmt: skip
    assert ended.ended_at is not None and ended.end_reason == "released: not needed"
    assert sorted(actions) == [
        ("reservation.end", "released: not needed"), ("specimen.release", "not needed"),
    ]  # fmt: skip

    with pytest.raises(NotFound), uow(cohort_db) as session:  # released already
        reservations.release_reservations(session, actor=pi, reason="again", accessions=[first])
    with uow(cohort_db) as session:  # an admin may release anyone's
        reservations.release_reservations(session, actor=admin, reason="audit", accessions=[second])
    with uow(cohort_db) as session:
        by_request = reservations.release_reservations(
            session, actor=pi, reason="request closed", request="REQ-A"
        )
    assert by_request.released == sorted([third, *rest])
    assert _standing(cohort_db) == []
    assert {_status(cohort_db, i)[0] for i in ids.values()} == {SpecimenStatus.available}
    assert _count(cohort_db, SpecimenEvent, SpecimenEvent.event_type == "released") == 6

    never, never_accession = _tube(cohort_db, "P-0003")
    for named in ({"accessions": [never_accession]}, {"request": "REQ-NONE"}):
        with pytest.raises(NotFound), uow(cohort_db) as session:
            reservations.release_reservations(session, actor=admin, reason="x", **named)
    assert _status(cohort_db, never)[0] is SpecimenStatus.available
    with pytest.raises(ValidationError) as caught, uow(cohort_db) as session:
        reservations.release_reservations(session, actor=admin, reason=" ", request="REQ-A")
    assert caught.value.field == "reason"


def test_the_database_holds_one_standing_reservation_a_tube(cohort_db, admin, pi):
    """The partial unique index, on both engines: a second standing reservation of a tube is
    refused, while ended ones stay beside a new one (a released tube is reserved again)."""
    tube, accession = _tube(cohort_db, "P-0002")
    assert _reserve(cohort_db, pi, [tube], "REQ-A").reserved == 1
    with pytest.raises(ConstraintViolation), uow(cohort_db) as session:
        session.add(
            SpecimenReservation(
                specimen_id=tube, request="REQ-B", uses=["GENETIC"], owner_id=pi.user_id
            )
        )
    for request in ("REQ-B", "REQ-C"):
        with uow(cohort_db) as session:
            reservations.release_reservations(
                session, actor=pi, reason="done", accessions=[accession]
            )
        assert _reserve(cohort_db, pi, [tube], request).reserved == 1
    assert _standing(cohort_db) == [(tube, "REQ-C")]
    assert _count(cohort_db, SpecimenReservation) == 3


@pytest.mark.parametrize("hand_over", ["check_out", "distribute"])
def test_a_hand_over_asks_the_reservations_consent_again(cohort_db, admin, actors, hand_over):
    technician, pi = actors[Role.technician], actors[Role.pi]
    box = _a_box(cohort_db, admin)
    tube, accession = _stored_tube(cohort_db, admin, "P-0002", box)
    assert _reserve(cohort_db, pi, [tube], "REQ-H").reserved == 1
    _withdraw(cohort_db, admin, "P-0002", "GENETIC", days_ago(2))
    state, events = _status(cohort_db, tube), _events(cohort_db, tube)

    with pytest.raises(ConsentDenied) as caught, uow(cohort_db) as session:
        if hand_over == "check_out":
            custody.check_out(session, actor=technician, accession=accession)
        else:  # the distribution's own uses are consented: the reservation's are not
            custody.distribute(
                session, actor=technician, accession=accession, recipient="Lab X",
                uses=["FUTURE_RESEARCH"],
            )  # fmt: skip
    assert "GENETIC" in caught.value.message
    assert _status(cohort_db, tube) == state == (SpecimenStatus.reserved, state[1])
    assert _events(cohort_db, tube) == events
    assert _standing(cohort_db) == [(tube, "REQ-H")]
    with uow(cohort_db, readonly=True) as session:
        assert session.get(Specimen, tube).box_id is not None  # still in its place


def test_a_checked_in_reserved_tube_is_reserved_again(cohort_db, admin, actors):
    technician, pi = actors[Role.technician], actors[Role.pi]
    box = _a_box(cohort_db, admin)
    tube, accession = _stored_tube(cohort_db, admin, "P-0005", box)
    _reserve(cohort_db, pi, [tube], "REQ-C")
    with uow(cohort_db) as session:
        out = custody.check_out(session, actor=technician, accession=accession)
    assert out.status == SpecimenStatus.checked_out
    assert _standing(cohort_db) == [(tube, "REQ-C")]  # out for the request, still its
    with uow(cohort_db) as session:
        back = custody.check_in(session, actor=technician, accession=accession)
    assert back.status == SpecimenStatus.reserved
    assert _status(cohort_db, tube)[0] is SpecimenStatus.reserved
    assert _standing(cohort_db) == [(tube, "REQ-C")]
    with uow(cohort_db, readonly=True) as session:
        assert session.get(Specimen, tube).checked_out_at is None
    # another request still cannot take it
    assert _reserve(cohort_db, pi, [tube], "REQ-D").left_out == {"reserved for REQ-C": 1}


def test_a_check_in_of_a_reserved_tube_that_never_left_keeps_its_reservation(
    cohort_db, admin, actors
):
    """Only the owner or an admin releases a reservation: a technician scanning a reserved
    tube at check-in (it was never checked out) must not give it back to everyone."""
    technician, pi = actors[Role.technician], actors[Role.pi]
    box = _a_box(cohort_db, admin)
    tube, accession = _stored_tube(cohort_db, admin, "P-0005", box)
    _reserve(cohort_db, pi, [tube], "REQ-C")
    with pytest.raises(InvalidTransition, match="never checked out"), uow(cohort_db) as session:
        custody.check_in(session, actor=technician, accession=accession)
    assert _status(cohort_db, tube)[0] is SpecimenStatus.reserved
    assert _standing(cohort_db) == [(tube, "REQ-C")]
    assert "released" not in _events(cohort_db, tube)


def test_a_reserved_tube_out_for_its_request_is_not_drawn_from(cohort_db, admin, actors):
    """Out for its request, a reserved tube is someone else's material: splitting it (which
    could use it up and leave a reservation on nothing) is refused until it is released."""
    technician, pi = actors[Role.technician], actors[Role.pi]
    box = _a_box(cohort_db, admin)
    tube, accession = _stored_tube(cohort_db, admin, "P-0005", box)
    _reserve(cohort_db, pi, [tube], "REQ-C")
    with uow(cohort_db) as session:
        custody.check_out(session, actor=technician, accession=accession)
    with pytest.raises(ValidationError, match="reserved for REQ-C"), uow(cohort_db) as session:
        lineage.aliquot(
            session, actor=admin, parent=accession, count=2, volume=250, destination=box
        )
    assert _status(cohort_db, tube)[0] is SpecimenStatus.checked_out
    assert _standing(cohort_db) == [(tube, "REQ-C")]
    with uow(cohort_db) as session:
        reservations.release_reservations(session, actor=pi, request="REQ-C", reason="not sent")
        lineage.aliquot(
            session, actor=admin, parent=accession, count=2, volume=250, destination=box
        )
    assert _status(cohort_db, tube)[0] is SpecimenStatus.depleted
    assert _orphaned(cohort_db) == []


@pytest.mark.parametrize("end", ["dispose", "distribute"])
def test_a_tube_that_leaves_ends_its_reservation(cohort_db, admin, actors, end):
    technician, pi = actors[Role.technician], actors[Role.pi]
    box = _a_box(cohort_db, admin)
    tube, accession = _stored_tube(cohort_db, admin, "P-0005", box)
    _reserve(cohort_db, pi, [tube], "REQ-E")
    with uow(cohort_db) as session:
        if end == "dispose":
            custody.dispose(session, actor=technician, accession=accession, reason="broken")
        else:
            custody.distribute(
                session, actor=technician, accession=accession, recipient="Lab X",
                uses=["GENETIC"],
            )  # fmt: skip
    assert _standing(cohort_db) == []
    with uow(cohort_db, readonly=True) as session:
        reservation = session.execute(
            sa.select(SpecimenReservation).where(SpecimenReservation.specimen_id == tube)
        ).scalar_one()
        assert session.get(Specimen, tube).status.value == ("disposed" if end == "dispose"
                                                             else "distributed")  # fmt: skip
    assert reservation.ended_at is not None
    assert reservation.end_reason == f"tube {end}d"
    assert reservation.ended_by_id == technician.user_id


def test_two_terminals_racing_for_one_tube_never_both_reserve_it(
    cohort_db, actors, admin, monkeypatch
):
    """Both sessions have read the tube as free before either writes (where the engine lets
    them: SQLite queues its writers, so the second then reads the first's reservation)."""
    pi, other = actors[Role.pi], _second_pi(cohort_db, admin)
    tube, _ = _tube(cohort_db, "P-0002")
    both_read = threading.Barrier(2)
    decide = reservations.consent_decisions

    def after_reading(*args, **kwargs):
        # SQLite: the other terminal waits for our write lock, and the barrier breaks
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait(timeout=3)
        return decide(*args, **kwargs)

    monkeypatch.setattr(reservations, "consent_decisions", after_reading)
    outcomes: dict[str, object] = {}

    def terminal(actor, request: str) -> None:
        try:
            outcomes[request] = _reserve(cohort_db, actor, [tube], request)
        except BiobankError as error:
            outcomes[request] = error
        except Exception as error:  # reported by the assertion below
            outcomes[request] = repr(error)

    threads = [
        threading.Thread(target=terminal, args=(pi, "REQ-A")),
        threading.Thread(target=terminal, args=(other, "REQ-B")),
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)

    won = [r for r, o in outcomes.items() if isinstance(o, reservations.ReservationSummary)
           and o.reserved == 1]  # fmt: skip
    assert len(won) == 1, outcomes
    (lost,) = set(outcomes) - set(won)
    outcome = outcomes[lost]
    if isinstance(outcome, reservations.ReservationSummary):
        assert outcome.reserved == 0 and outcome.left_out == {f"reserved for {won[0]}": 1}
    else:
        assert isinstance(outcome, ConcurrentChange | ConstraintViolation), outcome
    assert _standing(cohort_db) == [(tube, won[0])]
    assert _count(cohort_db, SpecimenReservation) == 1
    assert _events(cohort_db, tube).count("reserved") == 1
    assert _status(cohort_db, tube)[0] is SpecimenStatus.reserved


# --- 3. Saved queries are narrowed ---------------------------------------------------------------


def _save(engine, actor, name: str, query: CohortQuery) -> None:
    with uow(engine) as session:
        saved_queries.save_query(session, actor=actor, name=name, query=query)


NEPHRITIS = CohortQuery(phenotypes=parse_conditions("ln_class in (III, IV)"))


def test_a_saved_query_is_narrowed_by_the_filters_given(cohort_db, pi, tmp_path):
    _save(cohort_db, pi, "nephritis", NEPHRITIS)
    folder = _folder(tmp_path)
    alone = _export(cohort_db, pi, folder, saved="nephritis", uses=["FUTURE_RESEARCH"])
    assert _run_specimens(cohort_db, alone.run_code) == {
        _tube(cohort_db, "P-0001")[0], _tube(cohort_db, "P-0003")[0],
    }  # fmt: skip
    narrowed = _export(
        cohort_db, pi, folder, saved="nephritis", query=CohortQuery(sex=["female"]),
        uses=["FUTURE_RESEARCH"],
    )  # fmt: skip
    assert _run_specimens(cohort_db, narrowed.run_code) == {_tube(cohort_db, "P-0001")[0]}
    assert narrowed.counts["specimens"] < alone.counts["specimens"]
    manifest = json.loads(narrowed.manifest.read_text())
    assert manifest["saved_query"]["name"] == "nephritis"
    assert (
        manifest["saved_query"]["query"]["phenotypes"]
        == NEPHRITIS.model_dump(mode="json")["phenotypes"]
    )
    assert manifest["filters"] == {"sex": ["female"]}
    assert manifest["query"]["sex"] == ["female"]
    assert manifest["query"]["phenotypes"] is not None
    assert manifest["query"]["statuses"] == ["available"]  # the unset status stays the saved one


@pytest.mark.parametrize("conflict", ["specimen_types", "storage"])
def test_filters_that_cannot_both_hold_are_refused_naming_the_field(
    cohort_db, admin, pi, tmp_path, conflict
):
    if conflict == "specimen_types":
        saved, given = CohortQuery(specimen_types=["SER"]), CohortQuery(specimen_types=["PL1"])
    else:
        first, second = _a_box(cohort_db, admin, "-80 #1"), _a_box(cohort_db, admin, "-80 #2")
        saved, given = CohortQuery(storage=first), CohortQuery(storage=second)
    _save(cohort_db, pi, "kept", saved)
    folder = _folder(tmp_path)
    before = _left_behind(cohort_db)
    with pytest.raises(ValidationError) as caught:
        _export(cohort_db, pi, folder, saved="kept", query=given, reserve_request="REQ-X")
    assert caught.value.field == conflict
    assert list(folder.iterdir()) == [] and _left_behind(cohort_db) == before
    with pytest.raises(ValidationError) as caught, uow(cohort_db, readonly=True) as session:
        cohort_counts.preview_cohort(session, actor=pi, saved="kept", query=given, uses=["GENETIC"])
    assert caught.value.field == conflict


def test_cli_preview_of_a_serum_query_as_plasma_is_refused(cohort_db, pi, cli):
    _save(cohort_db, pi, "serum", CohortQuery(specimen_types=["SER"]))
    refused = cli("pi1", "cohort", "preview", "--saved", "serum", "--type", "PL1", code=2)
    assert "specimen_types" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    shown = cli("pi1", "cohort", "preview", "--saved", "serum", "--type", "SER", "--json")
    assert json.loads(shown.stdout)["specimens"] == 8  # the four consented participants' serum


def test_cli_export_of_a_saved_query_with_where_narrows_it(cohort_db, pi, tmp_path, cli):
    _save(cohort_db, pi, "nephritis", NEPHRITIS)
    folder = _folder(tmp_path)

    def exported(*filters: str) -> set[int]:
        done = cli("pi1", "export", "run", "--to", folder, *filters, "--json")
        return _run_specimens(cohort_db, json.loads(done.stdout)["run_code"])

    alone = exported("--saved", "nephritis")
    narrowed = exported("--saved", "nephritis", "--where", "upcr >= 1")
    spelled_out = exported("--where", "ln_class in (III, IV) and upcr >= 1")
    assert narrowed == spelled_out == {_tube(cohort_db, "P-0003")[0]}
    assert narrowed < alone


# --- 4. Data use agreements --------------------------------------------------------------------


def _limited(engine, actor, folder, **request):
    return _export(engine, actor, folder, mode=DeidentificationMode.limited, **request)


AGREEMENT_PROBLEMS = {
    # case: (agreements to register, reference named, error, words the message says)
    "none named": ({}, None, ValidationError, "data use agreement"),
    "unregistered": ({}, "DUA-NONE", NotFound, "DUA-NONE"),
    "expired": (
        {"expires_on": "yesterday", "starts_on": "month ago"}, "DUA-1", ValidationError,
        "expired on",
    ),
    "not started": ({"starts_on": "tomorrow"}, "DUA-1", ValidationError, "starts on"),
    "another PI's": ({"pi": "pi2"}, "DUA-1", ValidationError, "does not name pi1"),
    "use not covered": (
        {"uses": ["FUTURE_RESEARCH"]}, "DUA-1", ValidationError, "does not allow GENETIC",
    ),
    "revoked": ({"revoked": True}, "DUA-1", ValidationError, "revoked"),
}  # fmt: skip
DAYS = {
    "yesterday": lambda: days_ago(1),
    "month ago": lambda: days_ago(30),
    "tomorrow": lambda: date.today() + timedelta(days=1),
}


@pytest.mark.parametrize("case", list(AGREEMENT_PROBLEMS))
def test_a_limited_export_without_a_covering_agreement_is_refused(
    cohort_db, admin, pi, tmp_path, case
):
    fields, reference, error, says = AGREEMENT_PROBLEMS[case]
    fields = {k: DAYS[v]() if isinstance(v, str) and v in DAYS else v for k, v in fields.items()}
    if fields.get("pi") == "pi2":
        _second_pi(cohort_db, admin)
    if reference == "DUA-1":
        revoked = fields.pop("revoked", False)
        _agreement(cohort_db, admin, "DUA-1", **fields)
        if revoked:
            with uow(cohort_db) as session:
                agreements.revoke_agreement(
                    session, actor=admin, reference="DUA-1", reason="breach"
                )
    folder = _folder(tmp_path)
    before = _left_behind(cohort_db)
    with pytest.raises(error) as caught:
        _limited(cohort_db, pi, folder, dua_reference=reference, reserve_request="REQ-X")
    assert caught.value.field == "dua_reference"
    assert says in caught.value.message and "\n" not in caught.value.message
    if reference:
        assert reference in caught.value.message
    assert list(folder.iterdir()) == [] and _left_behind(cohort_db) == before


def test_a_covering_agreement_keeps_dates_for_its_study_alone(cohort_db, admin, pi, tmp_path):
    other_tube = _second_study(cohort_db, admin)
    everyone = _export(cohort_db, pi, _folder(tmp_path, "all"))
    assert other_tube in _run_specimens(cohort_db, everyone.run_code)  # exportable but for…
    _agreement(cohort_db, admin, "DUA-SLE", starts_on=date.today(), expires_on=date.today())
    _agreement(cohort_db, admin, "DUA-LUP2", study="LUP2")

    limited = _limited(cohort_db, pi, _folder(tmp_path, "sle"), dua_reference="DUA-SLE")
    exported = _run_specimens(cohort_db, limited.run_code)
    assert exported == set(_specimen_ids(cohort_db, *ALLOWED_GENETIC).values())
    assert {r["collected"] for r in _csv(limited)} == {"2020-03-01", "2020-09-01"}
    manifest = json.loads(limited.manifest.read_text())
    assert manifest["dua_reference"] == "DUA-SLE" and manifest["query"]["study"] == "SLE"
    assert manifest["data_use_agreement"]["study"] == "SLE"

    lup2 = _limited(cohort_db, pi, _folder(tmp_path, "lup2"), dua_reference="DUA-LUP2")
    assert _run_specimens(cohort_db, lup2.run_code) == {other_tube}

    folder = _folder(tmp_path, "refused")
    before = _left_behind(cohort_db)
    with pytest.raises(ValidationError) as caught:
        _limited(cohort_db, pi, folder, dua_reference="DUA-SLE", query=CohortQuery(study="LUP2"))
    assert caught.value.field == "study" and "LUP2" in caught.value.message
    assert list(folder.iterdir()) == [] and _left_behind(cohort_db) == before


def test_cli_agreements_are_registered_by_admins_and_listed_to_their_pi(cohort_db, admin, cli):
    _second_pi(cohort_db, admin)
    start, end = days_ago(1).isoformat(), (date.today() + timedelta(days=90)).isoformat()
    common = ["--study", "SLE", "--use", "GENETIC", "--from", start, "--expires", end]
    refused = cli("pi1", "agreement", "add", "DUA-PI", "--pi", "pi1", *common, code=3)
    assert len(refused.stderr.strip().splitlines()) == 1
    cli("admin", "agreement", "add", "DUA-1", "--pi", "pi1", *common)
    cli("admin", "agreement", "add", "DUA-2", "--pi", "pi2", *common)
    mine = json.loads(cli("pi1", "agreement", "list", "--json").stdout)
    assert [(a["reference"], a["pi"]) for a in mine] == [("DUA-1", "pi1")]
    assert "DUA-2" not in cli("pi1", "agreement", "list").stdout
    everyone = json.loads(cli("admin", "agreement", "list", "--json").stdout)
    assert [a["reference"] for a in everyone] == ["DUA-1", "DUA-2"]


# --- 5. The regressions as a user types them ---------------------------------------------------


def test_cli_export_as_of_a_past_day_with_a_reservation_is_refused(cohort_db, tmp_path, cli):
    folder = _folder(tmp_path)
    before = _left_behind(cohort_db)
    refused = cli(
        "pi1", "export", "run", "--to", folder, "--use", "GENETIC", "--as-of",
        days_ago(BEFORE_DAYS_AGO).isoformat(), "--reserve", "REQ-X", code=2,
    )  # fmt: skip
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "as of today" in refused.stderr
    assert refused.stdout == ""
    assert list(folder.iterdir()) == [] and _left_behind(cohort_db) == before
    # today is the day it may name
    cli("pi1", "export", "run", "--to", folder, "--use", "GENETIC", "--as-of",
        date.today().isoformat())  # fmt: skip


def test_cli_preview_as_of_a_past_day_is_refused(cli):
    refused = cli("pi1", "cohort", "preview", "--as-of", days_ago(1).isoformat(), code=2)
    assert "as of today" in refused.stderr
    cli("pi1", "cohort", "preview", "--as-of", date.today().isoformat())


def test_cli_allowed_on_lists_for_admins_and_refuses_pis(cohort_db, admin, cli):
    _withdraw(cohort_db, admin, WITHDRAWING, "everything", days_ago(WITHDRAWN_DAYS_AGO))
    mine = _specimen_ids(cohort_db, WITHDRAWING)
    past = days_ago(BEFORE_DAYS_AGO).isoformat()
    shown = cli("admin", "cohort", "allowed-on", past, "--reason", "IRB audit", "--list")
    for accession in mine:
        assert accession in shown.stdout
    assert WITHDRAWING in shown.stdout
    today = cli("admin", "cohort", "allowed-on", date.today().isoformat(), "--reason",
                "IRB audit", "--list")  # fmt: skip
    assert not any(accession in today.stdout for accession in mine)
    refused = cli("pi1", "cohort", "allowed-on", past, "--reason", "IRB audit", "--list", code=3)
    assert not any(accession in refused.stdout + refused.stderr for accession in mine)


def test_cli_release_by_the_wrong_user_is_refused(cohort_db, admin, pi, tmp_path, cli):
    _second_pi(cohort_db, admin)
    _export(cohort_db, pi, _folder(tmp_path), reserve_request="REQ-A")
    tube, accession = _tube(cohort_db, "P-0002")
    standing = _standing(cohort_db)
    refused = cli("pi2", "specimen", "release", accession, "--reason", "x", code=3)
    assert len(refused.stderr.strip().splitlines()) == 1
    assert _standing(cohort_db) == standing
    assert _status(cohort_db, tube)[0] is SpecimenStatus.reserved
    cli("technician1", "specimen", "release", accession, "--reason", "x", code=3)
    cli("pi1", "specimen", "release", accession, "--reason", "x")
    assert _status(cohort_db, tube)[0] is SpecimenStatus.available
    cli("pi1", "specimen", "release", accession, "--reason", "x", code=4)  # not reserved now
