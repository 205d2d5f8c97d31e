"""The PostgreSQL server really restarted (`pg_ctlcluster … restart`) under a running CLI
command. It stops the server for every test, so it runs alone, after the others: `.ci/run`
runs `pytest -m restart` with BIOBANK_TEST_RESTART_POSTGRES set to the restart command. The
same faults, one database at a time, are in tests/test_server_faults.py.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

import psycopg
import pytest
import sqlalchemy as sa
from conftest import act_by_name, postgres_base_url
from sqlalchemy.engine import make_url

from biobank.db import make_engine

RESTART = "BIOBANK_TEST_RESTART_POSTGRES"

pytestmark = [
    pytest.mark.restart,
    pytest.mark.parametrize("engine_name", ["postgres"], indirect=True),
]


def _restart_command() -> list[str]:
    command = os.environ.get(RESTART)
    if command:
        return shlex.split(command)
    if os.environ.get("CI"):
        pytest.fail(f"{RESTART} is not set: CI restarts PostgreSQL for real")
    pytest.skip(f"restarting PostgreSQL needs {RESTART} (the command that restarts it)")


def _server(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _writing(base: str, database: str) -> bool:
    """A session of the database is in the middle of an INSERT."""
    with psycopg.connect(base, autocommit=True) as connection:
        return bool(
            connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                " AND query ILIKE 'INSERT%%' AND state <> 'idle'",
                (database,),
            ).fetchone()[0]
        )


def _participants(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as connection:
        counted = connection.execute(sa.text("SELECT count(*) FROM participant")).scalar_one()
    engine.dispose()
    return counted


def test_a_restart_under_a_running_command_keeps_nothing_and_the_next_run_works(empty_db_url):
    restart = _restart_command()
    environment = {**os.environ, "BIOBANK_DATABASE_URL": empty_db_url}
    biobank = [sys.executable, "-m", "biobank"]
    upgrade = [*biobank, "db", "upgrade", "--admin-pin-stdin"]
    subprocess.run(upgrade, env=environment, check=True, capture_output=True, input=b"1357\n")
    engine = make_engine(empty_db_url)
    act_by_name(engine)
    engine.dispose()
    demo = [*biobank, "-u", "admin", "demo", "--participants", "1000"]
    running = subprocess.Popen(
        demo, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base, database = _server(postgres_base_url()), make_url(empty_db_url).database
    deadline = time.monotonic() + 60
    while not _writing(base, database):
        assert running.poll() is None, "the command ended before the server could be restarted"
        assert time.monotonic() < deadline, "the command never started writing"
        time.sleep(0.05)
    subprocess.run(restart, check=True, capture_output=True)
    _, stderr = running.communicate(timeout=120)
    assert running.returncode == 8, stderr
    assert "connection to the database was lost" in stderr and "Traceback" not in stderr
    assert _participants(empty_db_url) == 0  # nothing half-written
    again = subprocess.run(demo, env=environment, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr  # the server is back: the same command works
    assert _participants(empty_db_url) == 1000
