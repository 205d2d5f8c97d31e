"""PI exports through the real services on both engines: consent enforced in every format,
de-identification by mode, codes new for each export, manifests, replays and reservations."""

import base64
import csv
import hashlib
import hmac
import json
import re
import zipfile
from datetime import date
from pathlib import Path

import openpyxl
import pyarrow.parquet as pq
import pydantic
import pytest
import sqlalchemy as sa
from fhir.resources.R4B.bundle import Bundle
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.domain.cohort import CohortQuery, parse_conditions
from biobank.domain.vocabulary import (
    DeidentificationMode,
    PhenotypeScope,
    PhenotypeType,
    Role,
    SpecimenStatus,
)
from biobank.errors import NotFound, PermissionDenied, ValidationError
from biobank.export.formats import FORMATS, NAMES
from biobank.models import (
    AuditEntry,
    ExportRun,
    ExportRunSpecimen,
    Participant,
    Specimen,
    SpecimenEvent,
)
from biobank.services import (
    agreements,
    deidentification,
    export_files,
    export_runs,
    exports,
    lineage,
    phenotype_variables,
    phenotypes,
    withdrawals,
)
from biobank.services.deidentification import export_code
from biobank.services.exports import ExportRequest

ALL_FORMATS = ["csv", "xlsx", "parquet", "fhir", "miabis"]


def _export(engine, actor, folder, **request):
    request = {"query": CohortQuery(), "uses": ["GENETIC"], "formats": ALL_FORMATS} | request
    with uow(engine) as session:
        return exports.run_export(
            session, actor=actor, request=ExportRequest(**request), directory=folder
        )


def _ids(engine, *codes):
    with uow(engine, readonly=True) as session:
        return session.execute(
            sa.select(Participant.code, Participant.id).where(Participant.code.in_(codes))
        ).all()


def _readable(path: Path) -> bytes:
    """A file's content as text would be searched: XLSX unzipped, Parquet decoded (their bytes
    are compressed, where a search for a name would find nothing whatever they hold)."""
    if path.suffix == ".xlsx":
        with zipfile.ZipFile(path) as archive:
            return b"".join(archive.read(name) for name in archive.namelist())
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        fields = [field.metadata for field in table.schema]
        return repr((table.to_pylist(), table.schema.metadata, fields)).encode()
    return path.read_bytes()


def _contents(result) -> bytes:
    return b"".join(_readable(result.directory / f.name) for f in result.files)


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _key(engine, run_code):
    with uow(engine, readonly=True) as session:
        run = session.exec(sa.select(ExportRun).where(ExportRun.run_code == run_code)).scalar_one()
        return run.code_key


def test_consent_is_enforced_in_every_format(cohort_db, admin, tmp_path):
    result = _export(cohort_db, admin, tmp_path)
    # P-0003 refused genetic use, P-0004 withdrew: 3 participants, 6 tubes remain
    assert result.counts == {
        "specimens": 6, "participants": 3, "matched_before_consent": 10, "excluded_by_consent": 4,
    }  # fmt: skip
    assert result.exclusions == {
        "GENETIC refused": {"specimens": 2, "participants": 1},
        "GENETIC withdrawn": {"specimens": 2, "participants": 1},
    }
    key = _key(cohort_db, result.run_code)
    everything = _contents(result)
    for code, pid in _ids(cohort_db, "P-0003", "P-0004"):
        assert export_code(key, "P", pid).encode() not in everything, code
    for code, pid in _ids(cohort_db, "P-0001", "P-0002", "P-0005"):
        assert export_code(key, "P", pid).encode() in everything, code
    with uow(cohort_db, readonly=True) as session:
        exported = session.execute(
            sa.select(Participant.code)
            .join(Specimen, Specimen.participant_id == Participant.id)
            .join(ExportRunSpecimen, ExportRunSpecimen.specimen_id == Specimen.id)
        ).scalars()
        assert sorted(set(exported)) == ["P-0001", "P-0002", "P-0005"]


def test_safe_harbor_leaves_no_phi_and_reduces_dates_to_years(cohort_db, admin, tmp_path):
    result = _export(cohort_db, admin, tmp_path)
    everything = _contents(result) + result.manifest.read_bytes()
    with uow(cohort_db, readonly=True) as session:
        accessions = session.execute(sa.select(Specimen.accession_id)).scalars().all()
    forbidden = [
        "MRN00000", "Family", "Given", "-05-17",  # identity: MRNs, names, dates of birth
        "P-0001", "P-0002", "P-0005", *accessions,  # internal codes
        "2020-03-01", "2020-09-01",  # full collection dates
    ]  # fmt: skip
    for text in forbidden:
        assert text.encode() not in everything, text
    key = _key(cohort_db, result.run_code)
    [(_, pid)] = _ids(cohort_db, "P-0001")
    for name in ("specimens.csv", "specimens.xlsx", "specimens.parquet", "bundle.json",
                 "specimens_miabis.csv"):  # fmt: skip
        # each format is searched for real: the participant's export code is found in it
        assert export_code(key, "P", pid).encode() in _readable(result.directory / name), name
    rows = _csv(result.directory / "specimens.csv")
    assert {r["collected"] for r in rows} == {"2020"}
    assert "mrn" not in rows[0] and "cart_product" not in rows[0]  # no PHI, no free text


@pytest.mark.parametrize("internal_id", [0, 1, 7, 1_000_000, 2**31 - 1])
def test_an_export_code_is_the_keyed_hash_in_base32(internal_id):
    """The codes of runs already made must come out the same when they are replayed."""
    key = "00112233445566778899aabbccddeeff"
    digest = hmac.new(bytes.fromhex(key), f"S{internal_id}".encode(), "sha256").digest()
    assert export_code(key, "S", internal_id) == f"S-{base64.b32encode(digest[:5]).decode()}"


def test_codes_differ_between_two_exports(cohort_db, admin, tmp_path):
    first = _csv(_export(cohort_db, admin, tmp_path, formats=["csv"]).directory / "specimens.csv")
    second = _csv(_export(cohort_db, admin, tmp_path, formats=["csv"]).directory / "specimens.csv")
    assert len(first) == len(second) == 6
    for column in ("participant_code", "specimen_code"):
        assert not {r[column] for r in first} & {r[column] for r in second}


def test_xlsx_parquet_and_fhir_say_what_the_csv_says(cohort_db, admin, tmp_path):
    result = _export(cohort_db, admin, tmp_path, per_participant=True)
    folder = result.directory
    rows = _csv(folder / "specimens.csv")
    sheet = openpyxl.load_workbook(folder / "specimens.xlsx", read_only=True).active
    header, *cells = list(sheet.iter_rows(values_only=True))
    table = pq.read_table(folder / "specimens.parquet").to_pylist()

    def same(value):
        """A cell as all three formats can agree on it: None, a boolean, a number, or text."""
        if value is None or value == "":
            return None
        if isinstance(value, bool) or value in ("True", "False"):
            return str(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            return str(value)

    width = len(header)
    assert list(header) == list(rows[0])
    as_csv = [[same(v) for v in r.values()] for r in rows]
    assert [[same(v) for v in (*row, *[None] * (width - len(row)))] for row in cells] == as_csv
    assert [[same(v) for v in r.values()] for r in table] == as_csv
    bundle = Bundle.model_validate_json((folder / "bundle.json").read_text())
    kinds = [entry.resource.get_resource_type() for entry in bundle.entry]
    assert kinds.count("Specimen") == 6 and kinds.count("Patient") == kinds.count("Consent") == 3
    miabis = _csv(folder / "specimens_miabis.csv")
    assert "Sample ID" in miabis[0] and "participant_code" not in miabis[0]
    assert {(m["Sex"], m["Sample type"]) for m in miabis} == {("Female", "Serum")}
    people = _csv(folder / "participants.csv")
    assert sorted(int(p["specimens"]) for p in people) == [2, 2, 2]
    manifest = json.loads(result.manifest.read_text())
    for f in result.files:
        digest = hashlib.sha256((folder / f.name).read_bytes()).hexdigest()
        assert manifest["files"][f.name]["sha256"] == digest == f.sha256
    assert manifest["mode"] == "safe_harbor" and manifest["uses"] == ["GENETIC"]
    assert manifest["software"]["name"] == "biobank"


def test_replay_matches_and_names_what_changed(cohort_db, admin, tmp_path):
    query = CohortQuery(phenotypes=parse_conditions("upcr >= 0.25"))
    result = _export(cohort_db, admin, tmp_path, query=query, uses=["FUTURE_RESEARCH"])
    with uow(cohort_db) as session:
        assert export_runs.replay_export(session, actor=admin, run_code=result.run_code).matches
    with uow(cohort_db) as session:
        phenotypes.set_value(
            session, actor=admin, participant="P-0002", variable="upcr", value="0.1",
            visit="baseline",
        )  # fmt: skip
    with uow(cohort_db) as session:
        replay = export_runs.replay_export(session, actor=admin, run_code=result.run_code)
    assert not replay.matches
    assert any(d.startswith("specimens.csv") for d in replay.differences)
    assert "specimens: 3 then, 2 now" in replay.differences


@pytest.mark.parametrize("batch", [1000, 4], ids=["one batch", "batches of 4"])
def test_reserve_marks_the_exported_tubes_and_replay_still_matches(
    cohort_db, admin, tmp_path, monkeypatch, batch
):
    for module in (deidentification, export_files, exports):
        monkeypatch.setattr(module, "BATCH", batch)
    result = _export(cohort_db, admin, tmp_path, formats=["csv"], reserve_request="REQ-42")
    with uow(cohort_db, readonly=True) as session:
        reserved = session.execute(
            sa.select(Specimen.id).where(Specimen.status == SpecimenStatus.reserved)
        ).scalars()
        exported = session.execute(sa.select(ExportRunSpecimen.specimen_id)).scalars()
        events = session.execute(
            sa.select(sa.func.count()).where(SpecimenEvent.event_type == "reserved")
        ).scalar()
        reserved, exported = set(reserved), set(exported)
    assert reserved == exported and len(reserved) == 6 and events == 6
    with uow(cohort_db) as session:
        assert export_runs.replay_export(session, actor=admin, run_code=result.run_code).matches


def test_modes_need_their_permission_or_agreement(cohort_db, actors, admin, tmp_path):
    pi = actors[Role.pi]
    tmp_path = tmp_path / "exports"
    tmp_path.mkdir()
    with pytest.raises(PermissionDenied):
        _export(cohort_db, pi, tmp_path, mode=DeidentificationMode.identified)
    with pytest.raises(PermissionDenied):
        _export(cohort_db, actors[Role.technician], tmp_path)
    with pytest.raises(ValidationError) as caught:
        _export(cohort_db, pi, tmp_path, mode=DeidentificationMode.limited)
    assert caught.value.field == "dua_reference"
    with pytest.raises(NotFound) as caught:  # free text is no agreement
        _export(cohort_db, pi, tmp_path, mode=DeidentificationMode.limited, dua_reference="DUA-7")
    assert caught.value.field == "dua_reference"
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
    with uow(cohort_db) as session:
        agreements.register_agreement(
            session, actor=admin, reference="DUA-7", pi=pi.username, study="SLE",
            uses=["GENETIC"], starts_on=date(2026, 1, 1), expires_on=date(2099, 12, 31),
        )  # fmt: skip
    limited = _export(
        cohort_db, pi, tmp_path, mode=DeidentificationMode.limited, dua_reference="DUA-7",
        formats=["csv"],
    )  # fmt: skip
    assert {r["collected"] for r in _csv(limited.directory / "specimens.csv")} == {
        "2020-03-01", "2020-09-01",
    }  # fmt: skip
    identified = _export(
        cohort_db, admin, tmp_path, mode=DeidentificationMode.identified, formats=["csv"]
    )
    rows = _csv(identified.directory / "specimens.csv")
    assert {r["participant_code"] for r in rows} == {"P-0001", "P-0002", "P-0005"}
    assert {r["mrn"] for r in rows} == {"MRN000001", "MRN000002", "MRN000005"}
    with uow(cohort_db, readonly=True) as session:
        actions = session.execute(
            sa.select(AuditEntry.action).where(AuditEntry.entity == "export_run")
        ).scalars()
        assert list(actions) == ["export.start", "export.run", "export.start", "export.identified"]


def test_an_aliquot_names_its_parent_by_the_code_or_the_accession_id(cohort_db, admin, tmp_path):
    with uow(cohort_db, readonly=True) as session:
        parent_id, parent = session.execute(
            sa.select(Specimen.id, Specimen.accession_id).order_by(Specimen.id).limit(1)
        ).one()
    with uow(cohort_db) as session:
        (child,) = lineage.aliquot(session, actor=admin, parent=parent, count=1, volume=50)
    for mode, named in (
        (DeidentificationMode.safe_harbor, None),
        (DeidentificationMode.identified, parent),
    ):
        result = _export(cohort_db, admin, tmp_path / mode.value, mode=mode, formats=["csv"])
        key = _key(cohort_db, result.run_code)
        rows = _csv(result.directory / "specimens.csv")
        by_code = {r["specimen_code"]: r for r in rows}
        code = child.accession_id if named else export_code(key, "S", child.id)
        expected = named or export_code(key, "S", parent_id)
        assert by_code[code]["parent_specimen_code"] == expected
        assert expected in by_code  # the parent is exported too, under the same name
        assert sum(1 for r in rows if r["parent_specimen_code"]) == 1


def test_cli_export_run_and_replay(cohort_db, monkeypatch, tmp_path):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", cohort_db.url.render_as_string(False))
    runner = CliRunner()
    done = runner.invoke(
        app,
        ["-u", "admin", "export", "run", "--to", str(tmp_path), "--use", "GENETIC", "--where",
         "ln_class in (III, IV)", "--format", "csv", "--format", "fhir", "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["counts"]["specimens"] == 1 and Path(result["manifest"]).exists()
    again = runner.invoke(app, ["-u", "admin", "export", "replay", result["run_code"]])
    assert again.exit_code == 0 and "the same files again" in again.stderr
    listed = runner.invoke(app, ["-u", "admin", "export", "list", "--json"])
    assert json.loads(listed.stdout)[0]["run_code"] == result["run_code"]
    assert "code_key" not in listed.stdout
    bad = runner.invoke(app, ["-u", "admin", "export", "run", "--to", str(tmp_path),
                              "--format", "pdf"])  # fmt: skip
    assert bad.exit_code == 2
    assert "'pdf' is not one of csv, xlsx, parquet, fhir, miabis" in bad.output


def test_each_registered_format_is_offered_written_under_its_file_name_and_listed(
    cohort_db, admin, tmp_path
):
    """The formats are registered once (`export.formats`): the CLI offers and accepts those,
    the request refuses any other, and each is its own file, listed in the manifest."""
    result = _export(cohort_db, admin, tmp_path, formats=list(NAMES))
    manifest = json.loads(result.manifest.read_text())
    written = {p.name for p in result.directory.iterdir()} - {"manifest.json"}
    registered = {file for name in NAMES for file in FORMATS[name].files}
    beside = {"dictionary.csv", "value_labels.csv", "load.py", "load.R"}  # with any table
    assert set(manifest["files"]) == written == registered | beside
    assert manifest["files"].keys() == {f.name for f in result.files}
    with uow(cohort_db, readonly=True) as session:
        run = session.exec(sa.select(ExportRun).where(ExportRun.run_code == result.run_code))
        assert run.scalar_one().formats == list(NAMES)
    helped = CliRunner().invoke(app, ["export", "run", "--help"]).stdout
    shown = " ".join(re.sub(r"-\n\s+", "-", helped).split())  # help wraps after a hyphen
    assert f"One of {', '.join(NAMES)} (repeatable; default csv)" in shown
    with pytest.raises(pydantic.ValidationError, match=f"'pdf' is not one of {', '.join(NAMES)}"):
        ExportRequest(uses=["GENETIC"], formats=["pdf"])


def test_an_export_of_nobody_still_writes_its_manifest(cohort_db, admin, tmp_path):
    query = CohortQuery(collected_from=date(2030, 1, 1))
    result = _export(cohort_db, admin, tmp_path, query=query)
    assert result.counts["specimens"] == 0 and result.manifest.exists()
    assert _csv(result.directory / "specimens.csv") == []


def test_a_withdrawal_after_an_export_lists_the_export_in_its_impact(cohort_db, admin, tmp_path):
    result = _export(cohort_db, admin, tmp_path, formats=["csv"])
    with uow(cohort_db) as session:
        report = withdrawals.withdrawal_impact(session, actor=admin, participant="P-0001")
    assert [(e.run_code, e.specimens) for e in report.exports] == [(result.run_code, 2)]


def test_a_variable_named_like_a_fixed_column_exports_under_a_name_of_its_own(
    cohort_db, admin, tmp_path
):
    """A REDCap field called `quantity` (or `sex`) once blocked every export; now each format
    carries it as `var_quantity`, and the dictionary says which variable that is."""
    with uow(cohort_db) as session:
        for name, scope in (
            ("quantity", PhenotypeScope.visit),
            ("sex", PhenotypeScope.participant),
        ):
            phenotype_variables.add_variable(
                session, actor=admin,
                definition=phenotype_variables.VariableRead(
                    name=name, label=f"REDCap's {name}", value_type=PhenotypeType.integer,
                    scope=scope,
                ),
            )  # fmt: skip
        phenotypes.set_value(
            session, actor=admin, participant="P-0001", variable="quantity", value="7",
            visit="baseline",
        )  # fmt: skip
    result = _export(cohort_db, admin, tmp_path, per_participant=True)
    rows = _csv(result.directory / "specimens.csv")
    assert {"quantity", "var_quantity", "sex", "var_sex"} <= rows[0].keys()
    assert {r["var_quantity"] for r in rows} == {"7", ""}
    assert {r["quantity"] for r in rows} == {"500.0"}  # the tube's own, untouched
    dictionary = {r["name"]: r for r in _csv(result.directory / "dictionary.csv")}
    assert "the variable quantity" in dictionary["var_quantity"]["description"]
    assert "var_sex" in _csv(result.directory / "participants.csv")[0]


def test_a_renamed_variable_still_answers_to_its_old_name_and_a_retired_one_is_not_exported(
    cohort_db, admin, tmp_path
):
    query = CohortQuery(phenotypes=parse_conditions("upcr >= 0.25"))
    before = _export(cohort_db, admin, tmp_path, query=query, formats=["csv"])
    with uow(cohort_db) as session:
        phenotype_variables.rename_variable(
            session, actor=admin, name="upcr", new_name="upcr_ratio", reason="clearer"
        )
        phenotype_variables.retire_variable(
            session, actor=admin, name="sledai2k", reason="not scored"
        )
    after = _export(cohort_db, admin, tmp_path, query=query, formats=["csv"])
    assert after.counts == before.counts  # the old name in the query finds the renamed one
    header = _csv(after.directory / "specimens.csv")[0].keys()
    assert "upcr_ratio" in header and "upcr" not in header and "sledai2k" not in header


def test_a_run_is_on_record_before_its_files_and_listed_incomplete_until_done(
    cohort_db, monkeypatch, admin, tmp_path
):
    """What a kill between the two units of work leaves: the run begun, audited, listed as
    incomplete, nothing to replay; no folder where a finished export's would be."""
    request = ExportRequest(query=CohortQuery(), uses=["GENETIC"])
    tmp_path = tmp_path / "exports"
    with uow(cohort_db) as session:
        run_code = exports.begin_export(session, actor=admin, request=request, directory=tmp_path)
    assert not tmp_path.exists()
    monkeypatch.setenv("BIOBANK_DATABASE_URL", cohort_db.url.render_as_string(False))
    runner = CliRunner()
    listed = runner.invoke(app, ["-u", "admin", "export", "list"])
    assert re.search(rf"{run_code} .* incomplete", listed.stdout), listed.output
    shown = json.loads(runner.invoke(app, ["-u", "admin", "export", "list", "--json"]).stdout)
    assert shown[0]["run_code"] == run_code and shown[0]["completed"] is False
    replay = runner.invoke(app, ["-u", "admin", "export", "replay", run_code])
    assert replay.exit_code == 2 and "never completed" in replay.stderr
    with uow(cohort_db, readonly=True) as session:
        actions = session.execute(
            sa.select(AuditEntry.action).where(AuditEntry.entity == "export_run")
        ).scalars()
        assert list(actions) == ["export.start"]
    with uow(cohort_db) as session:  # the run goes on: it completes, its folder appears whole
        done = exports.run_export(
            session, actor=admin, request=request, directory=tmp_path, started=run_code
        )
        assert not done.directory.exists()  # not before the commit
    assert sorted(p.name for p in done.directory.iterdir()) == [
        "dictionary.csv", "load.R", "load.py", "manifest.json", "specimens.csv",
        "value_labels.csv",
    ]  # fmt: skip
    with uow(cohort_db) as session, pytest.raises(ValidationError, match="still to run"):
        exports.run_export(session, actor=admin, request=request, directory=tmp_path,
                           started=run_code)  # fmt: skip
