"""The demo cohort: realistic, validated like real data, and the same for the same seed."""

import os
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from biobank.bootstrap import bootstrap
from biobank.db import make_engine, uow
from biobank.domain.consent import StatementState
from biobank.domain.phenotypes import Spec, Stored, parse_value, typed
from biobank.domain.vocabulary import Role
from biobank.errors import PermissionDenied, ValidationError
from biobank.migrate import upgrade
from biobank.models import Participant, PhenotypeValue, PhenotypeVariable, Specimen, Visit
from biobank.services import audit, consent, demo, participants, phenotypes, pulls
from biobank.services.consent_checks import consent_decisions
from biobank.services.identity import actor_for

RECORDS = {
    "signatures": (
        "SELECT p.code, d.code, d.version, c.signed_on, s.code, "
        "CASE WHEN a.answer THEN 'yes' ELSE 'no' END FROM participant_consent c "
        "JOIN participant p ON p.id = c.participant_id "
        "JOIN consent_document d ON d.id = c.document_id "
        "JOIN consent_answer a ON a.participant_consent_id = c.id "
        "JOIN consent_statement s ON s.id = a.statement_id"
    ),
    "withdrawals": (
        "SELECT p.code, s.code, w.withdrawn_on, w.disposition, w.reason FROM consent_withdrawal w "
        "JOIN participant p ON p.id = w.participant_id "
        "LEFT JOIN consent_statement s ON s.id = w.statement_id"
    ),
    "phenotypes": (
        "SELECT p.code, v.label, x.name, pv.observed_on, pv.value_number, pv.value_text, "
        "pv.value_date, pv.source FROM phenotype_value pv "
        "JOIN participant p ON p.id = pv.participant_id "
        "JOIN phenotype_variable x ON x.id = pv.variable_id "
        "LEFT JOIN visit v ON v.id = pv.visit_id"
    ),
}


def _cohort(engine) -> list[tuple]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT p.code, p.sex, p.birth_year, p.enrolled_on, v.label, v.visit_date "
                "FROM participant p JOIN visit v ON v.participant_id = p.id "
                "ORDER BY p.code, v.visit_date"
            )
        ).all()
    return [tuple(str(value) for value in row) for row in rows]  # same text on both engines


def _records(engine) -> dict[str, list[tuple]]:
    """Signatures, withdrawals and phenotype values by their natural keys, as text."""
    with engine.connect() as connection:
        return {
            name: sorted(tuple(str(v) for v in row) for row in connection.execute(sa.text(query)))
            for name, query in RECORDS.items()
        }


def test_same_seed_same_cohort_on_any_engine(engine, admin, tmp_path):
    with uow(engine) as session:
        summary = demo.seed_demo(session, actor=admin, participants=40, seed=11)
    assert summary.participants == 40 and summary.visits >= 40

    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    upgrade(other)
    bootstrap(other)
    with uow(other) as session:
        other_admin = actor_for(session, username="admin", workstation="x")
        demo.seed_demo(session, actor=other_admin, participants=40, seed=11)
    assert _cohort(engine) == _cohort(other)
    records = _records(engine)
    assert records == _records(other)
    assert len({row[0] for row in records["signatures"]}) == 40 and records["withdrawals"]
    assert len(records["phenotypes"]) == summary.phenotype_values
    with uow(other) as session:
        assert audit.verify_chain(session, actor=other_admin).entries > 40 * 3
    other.dispose()


def test_a_lupus_like_cohort(engine, admin):
    with uow(engine) as session:
        demo.seed_demo(session, actor=admin, participants=200, seed=7)
        listed = participants.list_participants(session, actor=admin, limit=1000)
    women = sum(p.sex.value == "female" for p in listed)
    assert 0.8 < women / len(listed) < 0.97  # SLE affects about nine women for each man
    with uow(engine) as session:
        shown = participants.show_participant(
            session, actor=admin, code=listed[0].code, with_identity=True
        )
    assert shown.identity.mrn.startswith("MRN") and shown.visits[0].label == "baseline"


def test_only_into_an_empty_database_and_only_by_admins(engine, actors):
    with pytest.raises(PermissionDenied), uow(engine) as session:
        demo.seed_demo(session, actor=actors[Role.technician], participants=3)
    with uow(engine) as session:
        demo.seed_demo(session, actor=actors[Role.admin], participants=3)
    with pytest.raises(ValidationError, match="empty database"), uow(engine) as session:
        demo.seed_demo(session, actor=actors[Role.admin], participants=3)


def test_the_demo_freezer_holds_serum_and_aliquots(engine, admin):
    with uow(engine) as session:
        summary = demo.seed_demo(session, actor=admin, participants=20, seed=5, with_specimens=True)
    with engine.connect() as connection:
        kinds = dict(
            connection.execute(sa.text("SELECT kind, count(*) FROM specimen GROUP BY kind")).all()
        )
        unplaced = connection.execute(
            sa.text("SELECT count(*) FROM specimen WHERE box_id IS NULL")
        ).scalar_one()
    assert summary.specimens == sum(kinds.values()) == 4 * kinds["primary"]
    assert kinds["aliquot"] == 3 * kinds["primary"] and unplaced == 0
    with uow(engine) as session:
        assert audit.verify_chain(session, actor=admin).entries > summary.specimens


def test_everyone_consents_and_a_few_withdraw_after_their_tubes_were_stored(engine, admin):
    with uow(engine) as session:
        summary = demo.seed_demo(
            session, actor=admin, participants=100, seed=3, with_specimens=True
        )
    assert summary.consents > 100  # everyone signed; some signed the newer version again
    assert summary.withdrawals == 2 + 3  # 2% withdraw everything, 3% one statement
    with engine.connect() as connection:
        withdrawn = [
            code
            for (code,) in connection.execute(
                sa.text(
                    "SELECT DISTINCT p.code FROM consent_withdrawal w "
                    "JOIN participant p ON p.id = w.participant_id"
                )
            )
        ]
    kinds: Counter[str] = Counter()
    with uow(engine, readonly=True) as session:
        for code in withdrawn:
            status = consent.consent_status(session, actor=admin, participant=code)
            (withdrawal,) = status.withdrawals
            assert withdrawal.withdrawn_on > max(s.signed_on for s in status.signatures)
            person = participants.get_participant_row(session, code)
            tubes, flagged = session.exec(
                select(
                    sa.func.count(Specimen.id), sa.func.count(Specimen.consent_withdrawal_id)
                ).where(Specimen.participant_id == person.id)
            ).one()
            assert tubes == flagged  # every tube of a withdrawn participant is flagged
            pulled = pulls.pull_list(session, actor=admin, participant=code)
            if withdrawal.statement is None:
                assert status.withdrawn_entirely and person.status.value == "withdrawn"
                destroy = withdrawal.disposition.value == "destroy"
                assert len(pulled) == (tubes if destroy else 0)
                kinds[f"{withdrawal.disposition.value} with tubes"] += bool(tubes)
                kinds[withdrawal.disposition.value] += 1
            else:
                states = {s.code: s.state for s in status.statements}
                assert states[withdrawal.statement] is StatementState.withdrawn
                assert not status.withdrawn_entirely and not pulled
                kinds["one statement with tubes"] += bool(tubes)
        genetic = consent_decisions(
            session, participant_ids=None, uses=["GENETIC"], as_of=date.today()
        )
        recontact = consent_decisions(
            session, participant_ids=None, uses=["RECONTACT"], as_of=date.today()
        )
        documents = consent.list_documents(session, actor=admin)
        assert audit.verify_chain(session, actor=admin).entries > summary.phenotype_values
    assert kinds["destroy"] == kinds["keep_no_use"] == 1
    assert kinds["destroy with tubes"] == 1 and kinds["one statement with tubes"] >= 1
    assert [(d.code, d.version) for d in documents] == [
        ("SLE-REGISTRY", "2.1"), ("SLE-REGISTRY", "3.0"),
    ]  # fmt: skip
    assert 0.6 < sum(d.allowed for d in genetic.values()) / len(genetic) < 0.97
    states = Counter(d.statuses["GENETIC"].state for d in genetic.values())
    assert states[StatementState.refused] and states[StatementState.withdrawn]
    assert any(d.statuses["RECONTACT"].state is StatementState.refused for d in recontact.values())


def test_every_phenotype_value_fits_the_dictionary_and_looks_like_lupus(engine, admin):
    with uow(engine) as session:
        summary = demo.seed_demo(session, actor=admin, participants=100, seed=3)
    with uow(engine, readonly=True) as session:
        variables = {v.id: v for v in session.exec(select(PhenotypeVariable))}
        rows = session.exec(
            select(PhenotypeValue, Visit, Participant)
            .outerjoin(Visit, Visit.id == PhenotypeValue.visit_id)
            .join(Participant, Participant.id == PhenotypeValue.participant_id)
        ).all()
        assert len(rows) == summary.phenotype_values
        values: dict[str, list] = {}
        for row, visit, person in rows:
            variable = variables[row.variable_id]
            spec, stored = (
                Spec.of(variable),
                Stored(row.value_number, row.value_text, row.value_date),
            )
            value = typed(spec, stored)
            assert parse_value(spec, value) == stored, (variable.name, value)
            assert (visit is None) == (variable.scope.value == "participant")
            assert row.observed_on == (visit.visit_date if visit else None)
            if variable.name == "dx_date":
                assert value < person.enrolled_on
            values.setdefault(variable.name, []).append(value)
        code = session.exec(select(Participant.code)).first()
        timeline = phenotypes.participant_phenotypes(session, actor=admin, participant=code)
        audited = session.execute(
            sa.text("SELECT count(*) FROM audit_entry WHERE action = 'phenotype_value.add'")
        ).scalar_one()
    assert audited == summary.phenotype_values  # each value audited as store_value would
    assert len(values["race"]) == 100 and len(values["sledai2k"]) == summary.visits
    assert set(values["acr1997_count"]) <= set(range(4, 12))
    assert min(values["eular2019_score"]) >= 10 and max(values["eular2019_score"]) <= 40
    sledai = values["sledai2k"]
    assert max(sledai) <= 30 and sorted(sledai)[len(sledai) // 2] <= 6  # mostly quiet
    assert {v * 2 % 1 for v in values["pga"]} == {0} and max(values["pga"]) <= 3
    assert set(values["hcq_mg"]) <= {0, 200, 300, 400}
    upcr = values["upcr"]
    assert 0.1 < sum(v >= 0.5 for v in upcr) / len(upcr) < 0.35
    assert any(0.25 <= v < 0.5 for v in upcr)
    biopsies = sum(values["ln_biopsy"])
    assert 0.08 < biopsies / summary.visits < 0.25 and len(values["ln_class"]) == biopsies
    assert Counter(values["ln_class"]).most_common(1)[0][0] in {"III", "IV", "V"}
    assert timeline and timeline[0].visit is None and timeline[-1].source == "demo"


def test_consent_versions_already_there_are_used_not_made_again(engine, admin):
    """A REDCap import may have made the registry's forms; the demo signs those."""
    with uow(engine) as session:
        consent.add_document(
            session, actor=admin, code="SLE-REGISTRY", version="3.0", title="Imported",
            effective_on=date(2018, 1, 1),
            statements=["FUTURE_RESEARCH", "GENETIC", "COMMERCIAL", "DATA_SHARING", "RECONTACT"],
        )  # fmt: skip
    with uow(engine) as session:
        demo.seed_demo(session, actor=admin, participants=5, seed=2)
        documents = consent.list_documents(session, actor=admin)
    assert [(d.version, d.title) for d in documents] == [
        ("2.1", "SLE registry and biobank consent"), ("3.0", "Imported"),
    ]  # fmt: skip
    assert "3.0" in {row[2] for row in _records(engine)["signatures"]}  # the imported form


def test_the_demo_tells_a_new_user_how_to_sign_in_as_admin_too(tmp_path):
    """The README's first command loads the demo and opens the workstation at once: the demo's
    line is what the user reads, so it names the admin's missing PIN beside the demo users."""
    env = {
        **os.environ,
        "BIOBANK_CONFIG": str(tmp_path / "none.toml"),
        "BIOBANK_DATABASE_URL": f"sqlite:///{tmp_path / 'bb.db'}",
    }
    command = str(Path(sys.executable).with_name("biobank"))
    biobank = [command, "demo", "--if-empty"]
    loaded = subprocess.run(
        [*biobank, "-n", "3", "--no-specimens"], env=env, capture_output=True, text=True
    )
    assert loaded.returncode == 0, loaded.stderr
    last = loaded.stderr.strip().splitlines()[-1]
    assert "tech (PIN 1111, technician)" in last
    assert last.endswith("for admin tasks first set a PIN: biobank -u admin user set-pin admin")
    again = subprocess.run(biobank, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "already has data" in again.stderr
    hinted = last.rsplit(": ", 1)[1].split()[1:]  # the command it names, as typed
    pin = subprocess.run(
        [command, *hinted], env=env, input="4321\n4321\n", capture_output=True, text=True
    )
    assert pin.returncode == 0 and "PIN set for admin" in pin.stderr
