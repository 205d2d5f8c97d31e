"""Admins rename and retire dictionary variables (both engines): values follow a rename, an old
name still finds its variable (a re-import too), a retired variable takes no new values, and
a REDCap field named like an export's fixed column imports and is exported under `var_…`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from inventory import participant_with_visit
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.domain.phenotypes import Stored
from biobank.domain.vocabulary import PhenotypeScope, PhenotypeType, Role
from biobank.errors import (
    AlreadyExists,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from biobank.export.names import phenotype_column_names
from biobank.models import AuditEntry
from biobank.services import participants, phenotype_variables, phenotypes, studies
from biobank.services.imports import redcap as redcap_import
from biobank.services.imports.common import Counts, ImportReport
from biobank.services.reference_data import install_reference_data

REDCAP = Path(__file__).parent / "data" / "redcap"
EXTRA_DICTIONARY = REDCAP / "extra_dictionary.csv"  # fatigue, bmi… per visit; another mapping
EXTRA_RECORDS = REDCAP / "extra_records.csv"
EXTRA_MAPPING = REDCAP / "extra_mapping.toml"
REASON = "the lab's naming"


def _seed(engine, admin) -> None:
    """Study SLE and participant SLE-0001 with a baseline visit."""
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="SLE", title="Lupus registry")
        participant_with_visit(session, admin)


def _set(engine, actor, variable, value):
    with uow(engine) as session:
        return phenotypes.set_value(
            session, actor=actor, participant="SLE-0001", variable=variable, value=value,
            visit="baseline",
        )  # fmt: skip


def _call(engine, service, actor, **arguments):
    with uow(engine) as session:
        return service(session, actor=actor, **arguments)


def _values(engine, actor) -> list[tuple[str, object]]:
    with uow(engine, readonly=True) as session:
        shown = phenotypes.participant_phenotypes(session, actor=actor, participant="SLE-0001")
    return [(v.variable, v.value) for v in shown]


def _audit(engine, action: str) -> list[tuple[dict, dict, str]]:
    with uow(engine, readonly=True) as session:
        rows = session.execute(
            sa.select(AuditEntry.before, AuditEntry.after, AuditEntry.reason)
            .where(AuditEntry.action == action)
            .order_by(AuditEntry.id)
        ).all()
    return [(json.loads(b), json.loads(a), r) for b, a, r in rows]


def _audit_count(engine) -> int:
    with uow(engine, readonly=True) as session:
        return session.execute(sa.select(sa.func.count()).select_from(AuditEntry)).scalar_one()


# --- Renaming ------------------------------------------------------------------------------


def test_a_rename_keeps_the_values_and_the_former_name_finds_the_variable(engine, admin):
    _seed(engine, admin)
    _set(engine, admin, "c3", "80")
    renamed = _call(
        engine,
        phenotype_variables.rename_variable,
        admin,
        name="c3",
        new_name="c3_serum",
        reason=REASON,
    )
    assert (renamed.name, renamed.former_names) == ("c3_serum", ["c3"])
    assert _values(engine, admin) == [("c3_serum", 80.0)]  # values hold the variable's id
    with uow(engine, readonly=True) as session:
        known = phenotype_variables.variables_by_name(session)
        assert known["c3"] is known["c3_serum"] and known["c3"].name == "c3_serum"
        with pytest.raises(NotFound):  # the old name is not the variable's name any more
            phenotype_variables.get_variable(session, "c3")
    [(before, after, reason)] = _audit(engine, "phenotype_variable.rename")
    assert (before["name"], before["former_names"]) == ("c3", None)
    assert (after["name"], after["former_names"], reason) == ("c3_serum", ["c3"], REASON)
    assert _set(engine, admin, "c3_serum", "85").outcome == "changed"
    # renaming back takes the name off the former names; the other stays one
    back = _call(
        engine,
        phenotype_variables.rename_variable,
        admin,
        name="c3_serum",
        new_name="c3",
        reason="undo",
    )
    assert (back.name, back.former_names) == ("c3", ["c3_serum"])
    assert _values(engine, admin) == [("c3", 85.0)]


def test_bad_new_names_are_refused_and_change_nothing(engine, admin):
    _call(engine, phenotype_variables.rename_variable, admin, name="sledai2k", new_name="sledai",
          reason=REASON)  # fmt: skip
    before = _audit_count(engine)
    cases = [
        ("c3", "C3_serum", ValidationError, "new_name", "a variable name is 1-64 of a-z"),
        ("c3", "3c", ValidationError, "new_name", "starting with a letter"),
        ("c3", "c3-serum", ValidationError, "new_name", "a-z, 0-9 and '_'"),
        ("c3", "c3 serum", ValidationError, "new_name", "a-z, 0-9 and '_'"),
        ("c3", "c" * 65, ValidationError, "new_name", "1-64"),
        ("c3", "", ValidationError, "new_name", "1-64"),
        ("c3", "c3", ValidationError, "new_name", "c3 is the variable's name already"),
        ("c3", "upcr", AlreadyExists, "new_name", "phenotype variable upcr exists"),
        ("c3", "sledai2k", AlreadyExists, "new_name", "was the name of phenotype variable sledai"),
        ("nope", "nope2", NotFound, "variable", "no phenotype variable 'nope'"),
    ]
    for name, new_name, error, field, words in cases:
        with pytest.raises(error) as raised:
            _call(engine, phenotype_variables.rename_variable, admin, name=name, new_name=new_name,
                  reason=REASON)  # fmt: skip
        assert (raised.value.field, raised.value.value) == (
            field,
            name if field == "variable" else new_name,
        )
        assert words in raised.value.message, raised.value.message
    for reason in ("", "   "):
        with pytest.raises(ValidationError) as raised:
            _call(engine, phenotype_variables.rename_variable, admin, name="c3",
                  new_name="c3_serum", reason=reason)  # fmt: skip
        assert raised.value.field == "reason"
    # a new variable cannot take a former name either: what names it so finds `sledai`
    definition = phenotype_variables.VariableRead(
        name="sledai2k", label="Again", value_type=PhenotypeType.integer,
        scope=PhenotypeScope.visit,
    )  # fmt: skip
    with pytest.raises(AlreadyExists, match="sledai2k was the name of phenotype variable sledai"):
        _call(engine, phenotype_variables.add_variable, admin, definition=definition)
    assert _audit_count(engine) == before
    with uow(engine, readonly=True) as session:
        names = {v.name for v in phenotype_variables.list_variables(session, actor=admin)}
    assert {"c3", "upcr", "sledai"} <= names and "c3_serum" not in names


# --- Retiring ------------------------------------------------------------------------------


def test_a_retired_variable_keeps_its_values_and_takes_no_new_ones(engine, admin):
    _seed(engine, admin)
    _set(engine, admin, "c3", "80")
    retired = _call(
        engine, phenotype_variables.retire_variable, admin, name="c3", reason="not measured"
    )
    assert retired.retired_at is not None
    [(before, after, reason)] = _audit(engine, "phenotype_variable.retire")
    assert (before["retired_at"], after["retired_at"] is not None) == (None, True)
    assert reason == "not measured"
    with pytest.raises(ValidationError) as raised:
        _set(engine, admin, "c3", "81")
    assert (raised.value.field, raised.value.value) == ("variable", "c3")
    assert "c3 is a retired variable: it takes no new values" in raised.value.message
    with uow(engine) as session:  # the writers every import goes through refuse it too
        person = participants.get_participant_row(session, "SLE-0001")
        visit = participants.find_visit(session, person, "baseline")
        c3, one = phenotype_variables.get_variable(session, "c3"), Stored(number=1.0)
        with pytest.raises(ValidationError, match="c3 is a retired variable"):
            phenotypes.add_values(
                session, actor=admin, participant=person, values=[(visit, c3, one)], source="t"
            )
        with pytest.raises(ValidationError, match="c3 is a retired variable"):
            phenotypes.store_value(
                session, actor=admin, participant=person, variable=c3, visit=visit, stored=one,
                source="t",
            )  # fmt: skip
    assert _values(engine, admin) == [("c3", 80.0)]  # kept
    with uow(engine, readonly=True) as session:
        assert "c3" not in {
            v.name for v in phenotype_variables.list_variables(session, actor=admin)
        }
        listed = phenotype_variables.list_variables(session, actor=admin, include_retired=True)
        assert next(v for v in listed if v.name == "c3").retired_at == retired.retired_at
        assert "c3" not in phenotype_variables.variables_by_name(session)
        assert "c3" in phenotype_variables.variables_by_name(session, include_retired=True)
    with pytest.raises(InvalidTransition, match="c3 is retired already"):
        _call(engine, phenotype_variables.retire_variable, admin, name="c3", reason="again")
    restored = _call(engine, phenotype_variables.restore_variable, admin, name="c3", reason="back")
    assert restored.retired_at is None
    assert _set(engine, admin, "c3", "81").outcome == "changed"
    with pytest.raises(InvalidTransition, match="c3 is not retired"):
        _call(engine, phenotype_variables.restore_variable, admin, name="c3", reason="again")


def test_only_admins_rename_retire_and_restore(engine, actors):
    admin = actors[Role.admin]
    _call(engine, phenotype_variables.retire_variable, admin, name="upcr", reason="not measured")
    before = _audit_count(engine)
    for role in (Role.technician, Role.pi):
        calls = [
            (phenotype_variables.rename_variable, {"name": "c3", "new_name": "c3_serum"}),
            (phenotype_variables.retire_variable, {"name": "c3"}),
            (phenotype_variables.restore_variable, {"name": "upcr"}),
        ]
        for service, arguments in calls:
            with pytest.raises(PermissionDenied, match=rf"\({role.value}\) may not record"):
                _call(engine, service, actors[role], reason=REASON, **arguments)
    assert _audit_count(engine) == before
    with uow(engine, readonly=True) as session:
        known = phenotype_variables.variables_by_name(session, include_retired=True)
        assert (known["c3"].name, known["c3"].retired_at, known["c3"].former_names) == (
            "c3",
            None,
            None,
        )
        assert known["upcr"].retired_at is not None and "c3_serum" not in known


def test_a_renamed_core_variable_is_not_installed_again(engine, admin):
    _call(
        engine,
        phenotype_variables.rename_variable,
        admin,
        name="c3",
        new_name="c3_serum",
        reason=REASON,
    )
    with uow(engine) as session:  # what opening the database does
        assert install_reference_data(session) == 0


# --- The REDCap import ---------------------------------------------------------------------


@pytest.fixture
def study(engine, admin):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="SLE", title="Lupus registry")


def _redcap(engine, actor, records: Path, dictionary: Path = EXTRA_DICTIONARY, *, mapping=None,
            write: bool = True) -> ImportReport:  # fmt: skip
    with uow(engine) as session:
        plan = redcap_import.check_redcap(
            session, actor=actor, dictionary=dictionary, records=records, study="SLE",
            mapping=mapping or redcap_import.redcap_mapping(EXTRA_MAPPING),
        )  # fmt: skip
        if not write:
            return plan.report
        assert plan.report.faults == [], plan.report.faults
        return redcap_import.write_redcap(session, actor=actor, plan=plan)


def _edited(path: Path, target: Path, **cells: str) -> Path:
    """`path` with cells of its first row changed."""
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    rows[0].update(cells)
    with target.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return target


def _redcap_values(engine, actor) -> dict[tuple[str, str | None], object]:
    with uow(engine, readonly=True) as session:
        code = participants.show_participant(
            session, actor=actor, study="SLE", record="ex-001"
        ).code  # the REDCap record ex-001's participant
        shown = phenotypes.participant_phenotypes(session, actor=actor, participant=code)
    return {(v.variable, v.visit): v.value for v in shown}


def test_a_re_import_after_a_rename_updates_the_renamed_variable(engine, admin, study, tmp_path):
    _redcap(engine, admin, EXTRA_RECORDS)
    _call(engine, phenotype_variables.rename_variable, admin, name="fatigue",
          new_name="fatigue_vas", reason=REASON)  # fmt: skip
    changed = _edited(EXTRA_RECORDS, tmp_path / "records.csv", fatigue="40")
    report = _redcap(engine, admin, changed)
    assert report.variables == Counts(unchanged=5)
    assert "fatigue is the variable fatigue_vas (renamed)" in report.notices
    assert (report.values.added, report.values.changed) == (0, 1)
    values = _redcap_values(engine, admin)
    assert values[("fatigue_vas", "screening")] == 40 and ("fatigue", "screening") not in values
    with uow(engine, readonly=True) as session:
        assert "fatigue" not in {
            v.name for v in phenotype_variables.list_variables(session, actor=admin)
        }
    # a dictionary naming the variable by both names would give it two values per visit
    both = tmp_path / "both.csv"
    lines = EXTRA_DICTIONARY.read_text(encoding="utf-8").splitlines()
    fatigue = next(line for line in lines if line.startswith("fatigue,"))
    both.write_text("\n".join([*lines, "fatigue_vas" + fatigue[7:]]) + "\n", encoding="utf-8")
    faults = _redcap(engine, admin, changed, both, write=False).faults
    assert [(f.column, f.reason) for f in faults if f.file == "both.csv"] == [
        ("fatigue_vas", "fatigue_vas and fatigue are both the variable fatigue_vas (renamed)")
    ]


def test_a_retired_variables_values_are_left_out_with_a_notice(engine, admin, study, tmp_path):
    _redcap(engine, admin, EXTRA_RECORDS)
    _call(engine, phenotype_variables.retire_variable, admin, name="bmi", reason="not collected")
    report = _redcap(engine, admin, _edited(EXTRA_RECORDS, tmp_path / "records.csv", bmi="30.1"))
    assert "bmi: the variable bmi is retired; its values are not imported" in report.notices
    assert report.variables == Counts(unchanged=4) and report.values.changed == 0
    assert _redcap_values(engine, admin)[("bmi", "screening")] == 24.2


def test_fields_named_like_export_columns_import_and_are_exported_as_var(
    engine, admin, study, tmp_path
):
    header = EXTRA_DICTIONARY.read_text(encoding="utf-8").splitlines()[0]
    fields = [
        "study_id,enrolment,,text,Study ID,,,,,,,,,,,,,",
        'sex,enrolment,,radio,Sex as reported,"1, Woman | 2, Man",,,,,,,,,,,,',
        "seen_on,followup,,text,Visit date,,,date_ymd,,,,,,,,,,",
        "collected,followup,,text,Collected for the study,,,date_ymd,,,,,,,,,,",
        "quantity,followup,,text,Tablets a day,,,integer,0,20,,,,,,,,",
        "unit,followup,,text,Hospital unit,,,,,,,,,,,,,",
        "var_quantity,followup,,text,Another quantity,,,number,,,,,,,,,,",
    ]
    dictionary = tmp_path / "fixed_names.csv"
    dictionary.write_text("\n".join([header, *fields]) + "\n", encoding="utf-8")
    records = tmp_path / "fixed_records.csv"
    records.write_text(
        "study_id,redcap_event_name,sex,seen_on,collected,quantity,unit,var_quantity\n"
        "fx-001,visit_1_arm_1,1,2024-02-01,2024-01-30,3,Rheumatology,1.5\n",
        encoding="utf-8",
    )
    mapping = tmp_path / "mapping.toml"  # `sex` and `birth_year` are not the participant's here
    mapping.write_text(
        'record_id = "study_id"\nvisit_date = "seen_on"\nsex = ""\nbirth_year = ""\n'
        'participant_forms = ["enrolment"]\n[identity]\n[consent]\n',
        encoding="utf-8",
    )
    report = _redcap(engine, admin, records, dictionary,
                     mapping=redcap_import.redcap_mapping(mapping))  # fmt: skip
    assert report.variables == Counts(added=5) and report.values == Counts(added=5)
    with uow(engine, readonly=True) as session:
        names = [v.name for v in phenotype_variables.list_variables(session, actor=admin)]
    assert {"sex", "collected", "quantity", "unit", "var_quantity"} <= set(names)
    columns = phenotype_column_names(names)
    assert {n: columns[n] for n in ("sex", "collected", "quantity", "unit", "var_quantity")} == {
        "sex": "var_sex",
        "collected": "var_collected",
        "quantity": "var_var_quantity",
        "unit": "var_unit",
        "var_quantity": "var_quantity",
    }
    assert columns["sledai2k"] == "sledai2k"  # the core's names are their own


# --- The command line ------------------------------------------------------------------------

# Not a core variable: opening the database installs a missing core variable again (see the
# expected failure above)
SITE_CRP = phenotype_variables.VariableRead(
    name="crp_site", label="CRP (site lab)", value_type=PhenotypeType.decimal,
    scope=PhenotypeScope.visit, unit="mg/L", min_value=0,
)  # fmt: skip


@pytest.fixture
def cli(monkeypatch, db_url, engine, actors):
    """`cli(*args, code=0)` on a database with SLE-0001 (a baseline visit), the variable
    crp_site, and users admin, technician1 and pi1."""
    _seed(engine, actors[Role.admin])
    _call(engine, phenotype_variables.add_variable, actors[Role.admin], definition=SITE_CRP)
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return result

    return run


def _error(result) -> str:
    """The one line an error writes on stderr."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stdout == "", (result.stdout, result.stderr)
    return lines[0]


def test_cli_rename_retire_and_restore(cli):
    variable = ("-u", "admin", "phenotype", "variable")
    cli("-u", "admin", "phenotype", "set", "SLE-0001", "crp_site", "8", "--visit", "baseline")
    renamed = json.loads(
        cli(*variable, "rename", "crp_site", "crp_lab", "--reason", REASON, "--json").stdout
    )
    assert (renamed["name"], renamed["former_names"]) == ("crp_lab", ["crp_site"])
    shown = json.loads(cli("-u", "pi1", "phenotype", "show", "SLE-0001", "--json").stdout)
    assert [(v["variable"], v["value"]) for v in shown] == [("crp_lab", 8.0)]
    again = cli(*variable, "rename", "crp_lab", "crp", "--reason", REASON)
    assert (again.stdout, again.stderr) == ("", "renamed crp_lab to crp\n")
    assert _error(cli(*variable, "rename", "crp", "upcr", "--reason", "x", code=5)) == (
        "biobank: error: phenotype variable upcr exists"
    )
    assert "a variable name is 1-64" in _error(
        cli(*variable, "rename", "crp", "CRP mg/L", "--reason", "x", code=2)
    )
    assert "names its reason" in _error(
        cli(*variable, "rename", "crp", "crp_mg", "--reason", " ", code=2)
    )
    assert "no phenotype variable 'nope'" in _error(
        cli(*variable, "rename", "nope", "nope2", "--reason", "x", code=4)
    )
    refused = cli("-u", "pi1", "phenotype", "variable", "retire", "crp", "--reason", "x", code=3)
    assert _error(refused) == "biobank: error: pi1 (pi) may not record phenotypes"
    cli(*variable, "retire", "crp", code=2)  # --reason is required
    retired = cli(*variable, "retire", "crp", "--reason", "not measured")
    assert retired.stderr == "retired crp; its values are kept\n"
    assert "crp is a retired variable" in _error(
        cli("-u", "admin", "phenotype", "set", "SLE-0001", "crp", "9", "--visit", "baseline",
            code=2)
    )  # fmt: skip
    assert "is retired already" in _error(cli(*variable, "retire", "crp", "--reason", "x", code=5))
    current = cli("-u", "pi1", "phenotype", "dictionary").stdout.splitlines()
    assert current[0].split()[-1] == "CODE"
    assert not [line for line in current if line.startswith("crp ")]
    everything = cli("-u", "pi1", "phenotype", "dictionary", "--all").stdout.splitlines()
    assert everything[0].split()[-1] == "RETIRED"
    listed = json.loads(cli("-u", "pi1", "phenotype", "dictionary", "--all", "--json").stdout)
    retired_at = next(v for v in listed if v["name"] == "crp")["retired_at"]
    crp = next(line for line in everything if line.startswith("crp "))
    assert crp.split()[-1] == retired_at[:10]  # the day it was retired (UTC)
    restored = json.loads(
        cli(*variable, "restore", "crp", "--reason", "measured again", "--json").stdout
    )
    assert (restored["name"], restored["former_names"], restored["retired_at"]) == (
        "crp",
        ["crp_site", "crp_lab"],
        None,
    )
    cli("-u", "admin", "phenotype", "set", "SLE-0001", "crp", "9", "--visit", "baseline")
