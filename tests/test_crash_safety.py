"""Killed with SIGKILL part-way, an import leaves the database as it was and an export leaves
no file that claims success: `biobank` run as a subprocess, killed at several moments of its
work, on both engines. After each kill the database passes its integrity check and the audit
chain verifies; then the same work, uninterrupted, completes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from benchmarks.legacy import write_sheet
from biobank.cli import app
from biobank.db import make_engine

ROWS = 1500
KILL_AFTER = (0.4, 0.9, 1.5, 2.2, 3.0)  # seconds after the start (the start itself takes ~1 s)
pytestmark = pytest.mark.slow


@pytest.fixture
def cli_env(monkeypatch, admin_db_url, tmp_path) -> dict[str, str]:
    monkeypatch.setenv("BIOBANK_DATABASE_URL", admin_db_url)
    done = CliRunner().invoke(app, ["demo", "--participants", "20"])
    assert done.exit_code == 0, done.output
    return os.environ | {"BIOBANK_DATABASE_URL": admin_db_url, "BIOBANK_USER": "admin"}


def _killed(command: list[str], env: dict[str, str], after: float) -> int | None:
    """Run `biobank …`, SIGKILL it after `after` seconds; its exit code if it ended first."""
    process = subprocess.Popen(
        [sys.executable, "-m", "biobank", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(after)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()
    return None if process.returncode == -signal.SIGKILL else process.returncode


def _database_state(url: str) -> tuple[int, int]:
    """Specimens and audit entries, once the integrity check and the audit chain pass."""
    engine = make_engine(url)
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        specimens = connection.execute(sa.text("SELECT count(*) FROM specimen")).scalar()
        entries = connection.execute(sa.text("SELECT count(*) FROM audit_entry")).scalar()
    engine.dispose()
    verified = CliRunner().invoke(app, ["-u", "admin", "audit", "verify"])
    assert verified.exit_code == 0, verified.output
    return specimens, entries


def test_an_import_killed_part_way_leaves_the_database_as_it_was(cli_env, db_url, tmp_path):
    sheet = tmp_path / "legacy.csv"
    write_sheet(sheet, ROWS)
    command = ["import", "inventory", str(sheet), "--study", "SLE"]
    before = _database_state(db_url)
    killed = 0
    for after in KILL_AFTER:
        code = _killed(command, cli_env, after)
        specimens, _ = _database_state(db_url)
        # all or nothing: killed before its commit nothing is there, after it everything
        assert specimens in (before[0], before[0] + ROWS), f"killed after {after} s: partial"
        if specimens == before[0]:
            assert code is None and _database_state(db_url) == before
            killed += 1
            continue
        break
    assert killed, "the import was never killed part-way"
    if _database_state(db_url)[0] == before[0]:  # every kill came first: it still completes
        done = subprocess.run([sys.executable, "-m", "biobank", *command], env=cli_env)
        assert done.returncode == 0
        assert _database_state(db_url)[0] == before[0] + ROWS


def _claims(folder: Path) -> list[str]:
    """What export folders claim: every file a manifest lists is there, whole."""
    problems = []
    for manifest in folder.glob("*/manifest.json"):
        listed = json.loads(manifest.read_text())["files"]
        for name, entry in listed.items():
            path = manifest.parent / name
            if not path.exists():
                problems.append(f"{path} is listed but missing")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
                problems.append(f"{path} differs from its manifest")
    return problems


def _runs(url: str) -> set[str]:
    engine = make_engine(url)
    with engine.connect() as connection:
        found = set(connection.execute(sa.text("SELECT run_code FROM export_run")).scalars())
    engine.dispose()
    return found


def _incomplete(url: str) -> set[str]:
    engine = make_engine(url)
    with engine.connect() as connection:
        found = connection.execute(
            sa.text("SELECT run_code FROM export_run WHERE manifest_sha256 = ''")
        ).scalars()
        found = set(found)
    engine.dispose()
    return found


def test_an_export_killed_part_way_leaves_no_file_that_claims_success(cli_env, db_url, tmp_path):
    """The run is on record before any file is written; its folder appears, whole and with its
    manifest, only once the run is committed complete. A kill leaves no visible file of an
    unfinished run, and the run listed as incomplete."""
    out = tmp_path / "out"
    command = ["export", "run", "--use", "FUTURE_RESEARCH", "--format", "csv", "--format", "xlsx",
               "--format", "parquet", "--format", "fhir", "--to", str(out)]  # fmt: skip
    specimens, _ = _database_state(db_url)
    killed = 0
    for after in KILL_AFTER:
        code = _killed(command, cli_env, after)
        assert _claims(out) == []
        # a hidden `.part` folder is a run still being written (its manifest too): no claim
        manifests = [m.parent.name for m in out.glob("*/manifest.json")]
        claimed = {name for name in manifests if not name.startswith(".")}
        assert claimed <= _runs(db_url), "a manifest for a run the database does not have"
        visible = {p.name for p in out.glob("*") if not p.name.startswith(".")}
        assert visible == claimed, "a visible export folder without its manifest"
        assert not claimed & _incomplete(db_url)
        if code is None:  # killed: any folder being written belongs to a recorded run
            staged = {p.name.strip(".").removesuffix(".part") for p in out.glob(".EX-*")}
            assert staged <= _incomplete(db_url)
        assert _database_state(db_url)[0] == specimens
        if code is None:
            killed += 1
        else:
            assert code == 0 and claimed
            break
    assert killed, "the export was never killed part-way"
    listed = CliRunner().invoke(app, ["export", "list"], env=cli_env)
    assert listed.exit_code == 0, listed.output
    for run_code in _incomplete(db_url):
        assert re.search(rf"{run_code} .* incomplete", listed.stdout), listed.stdout
