"""Importing straight from a REDCap server's API (`services.imports.redcap.api`, `biobank
import redcap --api-url`), against a fake server on 127.0.0.1 (`fake_redcap`): the import is
the file import's, `--since` pulls the records changed since, and every failure is one clear
error that writes nothing and never shows the token."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fake_redcap import TOKEN, FakeRedcap
from pydantic import SecretStr
from redcap_projects import SHAPES, Project, classic, repeating_instrument, two_arm

from biobank.db import make_engine, uow
from biobank.domain.permissions import SYSTEM, Actor
from biobank.errors import BiobankError, PermissionDenied, ValidationError
from biobank.services import studies
from biobank.services.imports import redcap
from biobank.services.imports.common import Counts, ImportReport
from biobank.services.imports.redcap import api
from biobank.services.imports.redcap.api import PulledProject, pull_redcap
from biobank.services.imports.redcap.inference import infer_mapping
from biobank.settings import config_path, load_settings

ROOT = Path(__file__).resolve().parent.parent
WRONG = "FEDCBA9876543210FEDCBA9876543210"  # a token of the right shape, not the project's


@pytest.fixture(autouse=True)
def _local(monkeypatch):
    """Requests to 127.0.0.1 never go through a proxy the environment names; no token or
    server is set but by the test."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for variable in ("BIOBANK_REDCAP_TOKEN", "BIOBANK_REDCAP_API_URL"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def study(engine, admin):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="RC", title="REDCap over its API")


def _pull(url: str, *, token: str = TOKEN, since: datetime | None = None, actor: Actor = SYSTEM):
    return pull_redcap(actor=actor, url=url, token=SecretStr(token), since=since)


def _import(engine, admin, pulled: PulledProject, *, write: bool = True) -> ImportReport:
    with uow(engine, readonly=not write) as session:
        plan = redcap.check_redcap(
            session,
            actor=admin,
            dictionary=pulled.dictionary,
            records=pulled.records,
            names=pulled.names,
            study="RC",
        )
        if write and plan.writable:
            return redcap.write_redcap(session, actor=admin, plan=plan)
        return plan.report


def _import_files(engine, admin, files: tuple[Path, Path], *, write: bool) -> ImportReport:
    with uow(engine, readonly=not write) as session:
        plan = redcap.check_redcap(
            session, actor=admin, dictionary=files[0], records=files[1], study="RC"
        )
        return redcap.write_redcap(session, actor=admin, plan=plan) if write else plan.report


def _state(engine) -> tuple[list[int], str | None]:
    """The rows an import writes, counted, and the audit chain's tail."""
    with engine.connect() as connection:
        counts = [
            connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("participant", "visit", "phenotype_value", "participant_external_id")
        ]
        tail = connection.execute(
            sa.text("SELECT hash FROM audit_entry ORDER BY id DESC LIMIT 1")
        ).scalar_one_or_none()
    return counts, tail


def _counts(report: ImportReport) -> tuple[Counts | None, ...]:
    return report.participants, report.visits, report.variables, report.values


def _with_accents(project: Project) -> Project:
    """A value beyond ASCII: REDCap's CSV names no character set, and it is UTF-8."""
    row = next(r for r in project.rows if "med_name" in r.cells)
    row.cells["med_name"] = "hydroxychloroquine – Plaquenil®"
    return project


@pytest.mark.parametrize(
    "shape", ["classic", "two_arm", "repeating_instrument_longitudinal", "repeating_event"]
)
def test_an_import_over_the_api_is_the_file_import(engine, admin, study, tmp_path, shape):
    project = SHAPES[shape]()
    if shape == "repeating_instrument_longitudinal":
        _with_accents(project)
    files = project.write(tmp_path)
    expected = _import_files(engine, admin, files, write=False)  # into the empty database
    with FakeRedcap(project) as server, _pull(server.url) as pulled:
        dry = _import(engine, admin, pulled, write=False)
        assert dry.faults == [] and _counts(dry) == _counts(expected)
        done = _import(engine, admin, pulled)
    assert (done.dictionary, done.records) == (
        f"{server.url} data dictionary",
        f"{server.url} records",
    )
    assert done.faults == [] and _counts(done) == _counts(expected)
    assert done.participants == Counts(added=len(project.visits))
    after = _state(engine)
    again = _import_files(engine, admin, files, write=True)  # the same, from the files
    assert again.faults == []
    assert again.participants == Counts(unchanged=len(project.visits))
    assert again.values == Counts(unchanged=done.values.added)
    assert _state(engine) == after


def test_the_pull_brings_the_setup_and_leaves_no_file(tmp_path):
    with FakeRedcap(two_arm(), title="Two arms") as server, _pull(server.url) as pulled:
        folder = pulled.records.parent
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert pulled.dictionary.read_text("utf-8").startswith("field_name,form_name,")
        assert pulled.records.read_text("utf-8").startswith("record_id,redcap_event_name,")
        setup = pulled.setup
    assert not folder.exists()
    assert setup.title == "Two arms" and setup.longitudinal
    assert setup.events == ("screening_arm_1", "week_4_arm_1", "screening_arm_2", "week_4_arm_2")
    assert setup.forms["screening_arm_1"] == ("demographics", "visit")
    assert setup.forms["week_4_arm_2"] == ("visit",)
    assert setup.repeating == ()
    assert pulled.summary == (
        f'pulled the REDCap project "Two arms" (longitudinal, 4 events) from {server.url}'
    )
    assert setup.held()["screening_arm_1"] == {"demographics", "visit"}
    asked = [call["content"] for call in server.calls]
    assert asked == [
        "project", "metadata", "event", "formEventMapping", "metadata", "record", "record"
    ]  # fmt: skip
    ids, record = server.calls[-2:]
    assert [k for k in ids if k.startswith("fields[")] == ["fields[0]"]  # the record IDs
    assert (record["format"], record["type"], record["rawOrLabel"]) == ("csv", "flat", "raw")
    assert "dateRangeBegin" not in ids and "dateRangeBegin" not in record


def test_the_records_come_a_batch_of_records_at_a_time(monkeypatch):
    """A registry's records are exported in batches (one export of all times out on a large
    REDCap server): the file is the one export it would have been."""
    project = two_arm()
    with FakeRedcap(project) as server, _pull(server.url) as pulled:
        whole = pulled.records.read_text("utf-8")
    monkeypatch.setattr(api, "BATCH_RECORDS", 1)
    server = FakeRedcap(project)
    with server, _pull(server.url) as pulled:
        batched = pulled.records.read_text("utf-8")
    assert batched == whole and whole.count("\n") == len(project.rows) + 1
    batches = [c for c in server.calls if any(k.startswith("records[") for k in c)]
    assert [c["records[0]"] for c in batches] == list(dict.fromkeys(r.record for r in project.rows))


@pytest.mark.parametrize(
    ("project", "repeating", "summary"),
    [
        (classic(), (), "classic"),
        (repeating_instrument(longitudinal=False), (("", "medications"),),
         "classic; repeating: medications"),
        (SHAPES["repeating_event"](), (("follow_up_arm_1", ""),),
         "longitudinal, 2 events; repeating: event follow_up_arm_1"),
    ],
)  # fmt: skip
def test_a_classic_project_has_no_events_and_repeats_are_listed(project, repeating, summary):
    with FakeRedcap(project) as server, _pull(server.url) as pulled:
        assert pulled.setup.repeating == repeating
        assert f"({summary})" in pulled.summary
    if not project.longitudinal:  # its one event holds every form
        assert pulled.setup.events == () and pulled.setup.forms == {"": tuple(project.forms)}
        held = {form for _, form in repeating}
        assert pulled.setup.held() == {"": set(project.forms) - held}
        assert "event" not in [call["content"] for call in server.calls]


def test_since_pulls_only_the_records_changed_and_leaves_the_others(engine, admin, study):
    project = two_arm()
    with FakeRedcap(project) as server:
        with _pull(server.url) as pulled:
            first = _import(engine, admin, pulled)
        before = _state(engine)[0]
        week_4 = next(r for r in project.rows if (r.record, r.event) == ("B-1", "week_4_arm_2"))
        week_4.cells["shape_score"] = "99"
        server.changed["B-1"] = datetime.now() - timedelta(minutes=5)
        since = datetime.now() - timedelta(hours=1)
        with _pull(server.url, since=since) as pulled:
            report = _import(engine, admin, pulled)
            summary = pulled.summary
    assert server.calls[-2]["dateRangeBegin"] == f"{since:%Y-%m-%d %H:%M:%S}"  # the IDs
    assert f"only the records created or changed since {since:%Y-%m-%d %H:%M:%S}" in summary
    assert report.faults == [] and report.rows == 2  # B-1's two events
    assert report.participants == Counts(unchanged=1)
    assert report.values == Counts(changed=1, unchanged=1)
    after = _state(engine)[0]
    assert after == before  # the records not pulled keep all they had
    assert first.values is not None and after[2] == first.values.added


def test_since_takes_a_date_or_a_time_and_refuses_the_future():
    with FakeRedcap(two_arm()) as server:
        with _pull(server.url, since=datetime(2024, 5, 1)) as pulled:
            assert not pulled.has_records  # nothing changed since 2024-05-01
        utc = datetime(2023, 12, 30, 12, 30, tzinfo=UTC)  # before, in any zone
        with _pull(server.url, since=utc) as pulled:
            assert pulled.has_records
        begins = [c["dateRangeBegin"] for c in server.calls if "dateRangeBegin" in c]
        with pytest.raises(ValidationError, match="is in the future"):
            _pull(server.url, since=datetime.now() + timedelta(hours=2)).__enter__()
    local = utc.astimezone().replace(tzinfo=None)
    assert begins == ["2024-05-01 00:00:00", f"{local:%Y-%m-%d %H:%M:%S}"]
    assert len(server.calls) == 13  # the refused pull asked nothing


def _closed_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


BROKEN = {
    "a wrong token": (None, "HTTP 403: You do not have permissions to use the API (check"),
    "a missing page": ((404, "text/html", "<html>Not Found</html>"), "HTTP 404: Not Found"),
    "a server error": ((500, "text/html", "<h1>Oops</h1>"), "HTTP 500: Internal Server Error"),
    "garbage": ((200, "text/html", "<html>a login page</html>"), "not REDCap's (not JSON)"),
    "wrong JSON": ((200, "application/json", '{"a": 1}'), "not REDCap's (rows of "),
    "REDCap's error": ((200, "application/json", '{"error": "API is off"}'), "API is off"),
    "a token echoed": ((500, "text/csv", f"ERROR: token {TOKEN} is locked"),
                       "HTTP 500: token ********** is locked"),
    "a redirect": ((302, "text/html", ""), "HTTP 302: the server sends the API elsewhere"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_server_that_refuses_or_is_not_redcap_is_one_clear_error(case):
    answer, said = BROKEN[case]
    project = two_arm()
    with FakeRedcap(project, token=WRONG if answer is None else TOKEN) as server:
        server.broken = answer
        with pytest.raises(BiobankError) as raised:
            _pull(server.url).__enter__()
    message = raised.value.message
    assert message.startswith(f"the REDCap server at {server.url}, asked for its ")
    assert said in message and TOKEN not in str(raised.value.as_dict())
    if case == "a wrong token":
        assert "BIOBANK_REDCAP_TOKEN" in message and server.calls == []


def test_a_server_down_is_one_clear_error():
    url = f"http://127.0.0.1:{_closed_port()}/api/"
    with pytest.raises(BiobankError) as raised:
        _pull(url).__enter__()
    assert raised.value.message == (
        f"the REDCap server at {url}, asked for its project information: "
        "cannot connect (Connection refused)"
    )


def test_a_server_without_tls_asked_over_https_is_one_clear_error():
    with FakeRedcap(classic()) as server:
        url = server.url.replace("http://", "https://")
        with pytest.raises(BiobankError, match="cannot connect securely"):
            _pull(url).__enter__()
    assert server.calls == []


@pytest.mark.parametrize(
    ("url", "token", "said"),
    [
        ("http://127.0.0.1:1/api/", "", "no REDCap API token: set the environment variable "
         "BIOBANK_REDCAP_TOKEN or the settings file's redcap_token"),
        ("http://127.0.0.1:1/api/", "not-a-token", "is not one: REDCap's are 32 letters"),
        ("http://127.0.0.1:1/", TOKEN, "is not a REDCap API URL, such as"),
        ("ftp://127.0.0.1/api/", TOKEN, "is not a REDCap API URL"),
        ("https://redcap.example.edu:port/api/", TOKEN, "is not a REDCap API URL"),
        ("http://redcap.example.edu/api/", TOKEN, "would send the API token in clear: use https"),
    ],
)  # fmt: skip
def test_a_missing_or_wrong_token_or_url_is_refused_before_asking(url, token, said):
    with pytest.raises(ValidationError, match=said) as raised:
        _pull(url, token=token).__enter__()
    assert token not in raised.value.message or not token


def test_a_url_ending_in_api_without_its_slash_is_taken():
    with FakeRedcap(classic()) as server, _pull(server.url.rstrip("/")) as pulled:
        assert pulled.url == server.url


def test_without_the_right_to_import_nothing_is_asked(engine, actors):
    with FakeRedcap(classic()) as server:
        with pytest.raises(PermissionDenied):
            _pull(server.url, actor=actors["technician"]).__enter__()
    assert server.calls == []


def test_without_pycap_the_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "redcap.project", None)  # as if it were not installed
    with pytest.raises(BiobankError, match=r"install biobank\[redcap\]"):
        _pull("http://127.0.0.1:1/api/").__enter__()


# The command.


@pytest.fixture
def cli(fresh_cli, monkeypatch):
    monkeypatch.setenv("BIOBANK_REDCAP_TOKEN", TOKEN)
    fresh_cli("study", "add", "RC", "--title", "REDCap over its API")
    return fresh_cli


def _no_token_in(*results) -> None:
    for result in results:
        assert TOKEN not in result.stdout and TOKEN not in result.stderr


def _audit_trail() -> str:
    engine = make_engine(os.environ["BIOBANK_DATABASE_URL"])
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM audit_entry")).all()
    engine.dispose()
    return repr(rows)


def test_cli_imports_over_the_api_and_never_shows_the_token(cli, tmp_path):
    project = classic()
    (tmp_path / "mapping.toml").write_text('classic_label = "Intake"\n', encoding="utf-8")
    with FakeRedcap(project) as server:
        api = ("import", "redcap", "--api-url", server.url)
        dry = cli(*api, "--dry-run", "--json")
        assert json.loads(dry.stdout)["participants"]["added"] == 5
        assert json.loads(cli("participant", "list", "--json").stdout) == []
        mapping = ("--mapping", tmp_path / "mapping.toml")
        done = cli(*api, *mapping, "--skip-faulty")
        again = cli(*api, *mapping, "--study", "RC", "--json")
    report = json.loads(again.stdout)
    assert report["records"] == f"{server.url} records" and report["values"]["added"] == 0
    assert f'note: pulled the REDCap project "Shapes" (classic) from {server.url}' in done.stderr
    assert f"{server.url} records: all 5 rows imported" in done.stderr
    shown = json.loads(
        cli("participant", "show", "--study", "RC", "--record", "3", "--json").stdout
    )
    assert [v["label"] for v in shown["visits"]] == ["intake"]
    log = cli("audit", "log", "--limit", "100000", "--json")
    assert f"REDCap import of {server.url} records" in log.stdout
    config = cli("config", "show", "--json")
    assert json.loads(config.stdout)["redcap_token"] == "**********"
    _no_token_in(dry, done, again, log, config)
    assert TOKEN not in _audit_trail()


def test_cli_refusals_write_nothing_and_never_show_the_token(cli, tmp_path, monkeypatch):
    files = classic().write(tmp_path)
    with FakeRedcap(classic(), token=WRONG) as server:
        api = ("import", "redcap", "--api-url", server.url)
        refused = [
            cli(*api, code=1),  # the server refuses the token
            cli(*api, "--json", code=1),
            cli(*api, "--dictionary", files[0], "--records", files[1], code=2),
            cli("import", "redcap", "--dictionary", files[0], code=2),
            cli("import", "redcap", *("--dictionary", files[0], "--records", files[1]),
                "--since", "2024-01-01", code=2),
            cli(*api, "--since", (datetime.now() + timedelta(days=1)).isoformat(), code=2),
            cli(*api, "--since", "yesterday", code=2),
        ]  # fmt: skip
        server.broken = (500, "text/csv", f"ERROR: the token {WRONG} is locked")
        monkeypatch.setenv("BIOBANK_REDCAP_TOKEN", WRONG)
        refused.append(cli(*api, code=1))
        monkeypatch.delenv("BIOBANK_REDCAP_TOKEN")
        refused.append(cli(*api, code=2))
    said = [r.stderr.removeprefix("biobank: error: ").strip() for r in refused]
    assert "HTTP 403: You do not have permissions to use the API" in said[0]
    assert refused[1].stdout == "" and said[1] == said[0]
    assert said[2].startswith("--api-url pulls the data dictionary and the records itself")
    assert said[3].startswith("give --dictionary and --records, or --api-url")
    assert said[4] == "--since is for --api-url"
    assert "is in the future" in said[5] and "--since must be a date" in said[6]
    assert "HTTP 500: the token ********** is locked" in said[7]
    assert said[8].startswith("no REDCap API token: set the environment variable")
    assert [r.stderr.count("\n") for r in refused] == [1] * len(refused)
    assert all("Traceback" not in r.stderr for r in refused)
    for result in refused:
        assert WRONG not in result.stdout + result.stderr
    _no_token_in(*refused)
    assert json.loads(cli("participant", "list", "--json").stdout) == []


def test_cli_since_with_nothing_changed_imports_nothing(cli):
    with FakeRedcap(two_arm()) as server:
        api = ("import", "redcap", "--api-url", server.url, "--since", "2024-06-01 08:00")
        text = cli(*api)
        as_json = cli(*api, "--json")
    assert server.calls[-1]["dateRangeBegin"] == "2024-06-01 08:00:00"
    assert text.stderr.endswith(f"{server.url} records: no records; nothing to import\n")
    assert json.loads(as_json.stdout) == {
        "dry_run": False, "records": f"{server.url} records", "rows": 0
    }  # fmt: skip


def test_cli_takes_the_server_and_token_from_a_private_settings_file(cli, monkeypatch):
    monkeypatch.delenv("BIOBANK_REDCAP_TOKEN")
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FakeRedcap(classic()) as server:
        path.write_text(f'redcap_api_url = "{server.url}"\nredcap_token = "{TOKEN}"\n')
        path.chmod(0o644)
        exposed = cli("import", "redcap", "--dry-run", code=2)
        path.chmod(0o600)
        assert load_settings().redcap_token == SecretStr(TOKEN)
        done = cli("import", "redcap", "--dry-run")
    assert "holds a token and other accounts may read or change it" in exposed.stderr
    assert f"{server.url} records: all 5 rows checked; dry run" in done.stderr
    _no_token_in(exposed, done)


@pytest.fixture
def served() -> Iterator[FakeRedcap]:
    with FakeRedcap(two_arm()) as server:
        yield server


@pytest.mark.slow
def test_the_command_as_a_subprocess(tmp_path, served):
    env = {
        **os.environ,
        "BIOBANK_DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}",
        "BIOBANK_REDCAP_TOKEN": TOKEN,
        "NO_PROXY": "127.0.0.1",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "biobank", *args],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
        )  # fmt: skip

    assert run("study", "add", "RC", "--title", "REDCap over its API").returncode == 0
    done = run("import", "redcap", "--api-url", served.url, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["visits"]["added"] == 6
    served.broken = (403, "application/json", '{"error": "You do not have permissions"}')
    denied = run("import", "redcap", "--api-url", served.url, "--json")
    assert (denied.returncode, denied.stdout) == (1, "")
    assert "HTTP 403: You do not have permissions (check the API token" in denied.stderr
    for result in (done, denied):
        assert TOKEN not in result.stdout + result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_pull_infers_from_the_projects_setup_as_from_its_files(tmp_path, shape):
    project = SHAPES[shape]()
    files = project.write(tmp_path)
    with FakeRedcap(project) as server, _pull(server.url) as pulled:
        inferred = infer_mapping(pulled.dictionary, pulled.records, pulled.setup)
    assert inferred.settings == infer_mapping(*files).settings
