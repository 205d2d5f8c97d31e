"""`biobank backup` and `biobank restore` on both engines: a copy taken, the database changed,
the copy put back — the change is gone, the audit chain verifies, and the backup and the
restore are themselves in it. A copy that is not one, or whose chain is broken, is refused
before anything is replaced; only admins may do either."""

import json
import secrets
import sqlite3
import subprocess

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from biobank.db import make_engine


def _count(url: str, sql: str) -> int:
    engine = make_engine(url)
    with engine.connect() as connection:
        found = connection.execute(sa.text(sql)).scalar()
    engine.dispose()
    return found


def test_a_backup_restored_undoes_what_came_after_and_the_chain_verifies(
    demo_cli, db_url, tmp_path
):
    copy = tmp_path / "biobank.backup"
    made = json.loads(demo_cli("-u", "admin", "backup", str(copy), "--json").stdout)
    assert copy.stat().st_size == made["bytes"] > 0
    users = _count(db_url, "SELECT count(*) FROM app_user")
    demo_cli("-u", "admin", "user", "add", "newcomer", "--role", "technician")
    assert _count(db_url, "SELECT count(*) FROM app_user") == users + 1

    restored = json.loads(demo_cli("-u", "admin", "restore", str(copy), "-y", "--json").stdout)
    assert _count(db_url, "SELECT count(*) FROM app_user") == users  # the newcomer is gone
    # the chain verified, the checkpoint appended before the copy, and the restore's own
    # entry after it (the backup's came after the copy)
    assert restored["audit_entries"] == made["audit_entries"] + 1
    assert _count(db_url, "SELECT count(*) FROM audit_entry") == made["audit_entries"] + 2
    if db_url.startswith("postgresql"):  # the planner's statistics gathered, as a dump has none
        assert _count(db_url, "SELECT count(*) FROM pg_stats WHERE tablename = 'specimen'") > 0
    demo_cli("-u", "admin", "audit", "verify")
    again = demo_cli("-u", "admin", "backup", str(copy), code=2)
    assert "exists (replace it with --force)" in again.stderr
    demo_cli("-u", "admin", "backup", str(copy), "--force")


def test_a_technician_may_not_and_a_wrong_file_replaces_nothing(demo_cli, db_url, tmp_path):
    refused = demo_cli("-u", "tech", "backup", str(tmp_path / "b"), code=3)
    assert "may not back up or restore the database" in refused.stderr
    entries = _count(db_url, "SELECT count(*) FROM audit_entry")
    not_a_backup = tmp_path / "notes.txt"
    not_a_backup.write_text("hello")
    wrong = demo_cli("-u", "admin", "restore", str(not_a_backup), "-y", code=2)
    assert "is not a" in wrong.stderr
    assert _count(db_url, "SELECT count(*) FROM audit_entry") == entries


@pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)  # edited with sqlite3
def test_a_sqlite_copy_with_a_broken_chain_is_refused(demo_cli, db_url, tmp_path):
    copy = tmp_path / "biobank.backup"
    demo_cli("-u", "admin", "backup", str(copy))
    # tamper with the copy behind the triggers' back, the change left in its write-ahead log
    connection = sqlite3.connect(copy)
    with connection:
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_entry'"
        ).fetchall():
            connection.execute(f'DROP TRIGGER "{name}"')
        connection.execute("UPDATE audit_entry SET reason = 'edited' WHERE id = 3")
    refused = demo_cli("-u", "admin", "restore", str(copy), "-y", code=9)
    assert "audit" in refused.stderr
    assert _count(db_url, "SELECT count(*) FROM audit_entry WHERE reason = 'edited'") == 0
    connection.close()


@pytest.mark.parametrize("engine_name", ["postgres"], indirect=True)  # edited with psql
def test_a_postgres_dump_with_a_broken_chain_replaces_nothing(
    demo_cli, db_url, tmp_path, postgres_databases
):
    """The dump is restored into a scratch database and checked there first: the live data
    is never replaced by a dump that fails a check (it once was, before the check ran)."""
    good = tmp_path / "good.dump"
    demo_cli("-u", "admin", "backup", str(good))
    edited = make_url(postgres_databases.create())  # the dump, edited behind the triggers
    server = edited.set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run(["pg_restore", f"--dbname={server}", "--no-owner", str(good)], check=True)
    subprocess.run(
        ["psql", server, "-v", "ON_ERROR_STOP=1", "-qc",
         "ALTER TABLE audit_entry DISABLE TRIGGER ALL; "
         "UPDATE audit_entry SET reason = 'edited' WHERE id = 3; "
         "UPDATE app_user SET username = 'intruder' WHERE username = 'tech'"],
        check=True,
    )  # fmt: skip
    tampered = tmp_path / "tampered.dump"
    subprocess.run(["pg_dump", f"--dbname={server}", "--format=custom", "--no-owner",
                    f"--file={tampered}"], check=True)  # fmt: skip
    users = _count(db_url, "SELECT count(*) FROM app_user")
    entries = _count(db_url, "SELECT count(*) FROM audit_entry")

    refused = demo_cli("-u", "admin", "restore", str(tampered), "-y", code=9)
    assert "audit" in refused.stderr and refused.stderr.count("\n") == 1
    assert _count(db_url, "SELECT count(*) FROM app_user") == users  # nothing replaced
    assert _count(db_url, "SELECT count(*) FROM app_user WHERE username = 'intruder'") == 0
    assert _count(db_url, "SELECT count(*) FROM audit_entry WHERE reason = 'edited'") == 0
    assert _count(db_url, "SELECT count(*) FROM audit_entry") == entries
    scratch = f"{make_url(db_url).database}_restore_%"
    assert _count(db_url, f"SELECT count(*) FROM pg_database WHERE datname LIKE '{scratch}'") == 0
    demo_cli("-u", "admin", "audit", "verify")
    demo_cli("-u", "admin", "restore", str(good), "-y")  # the good one still restores


@pytest.mark.parametrize("engine_name", ["postgres"], indirect=True)  # made with psql
def test_a_postgres_dump_that_fails_to_restore_after_its_check_replaces_nothing(
    demo_cli, db_url, tmp_path, postgres_databases
):
    """The dump is restored over the live database while it is checked, in a transaction
    committed only after the check: one that fails part way (a grant to a role this server
    does not have, after every table was dropped and filled again) is rolled back whole."""
    good = tmp_path / "good.dump"
    demo_cli("-u", "admin", "backup", str(good))
    other = make_url(postgres_databases.create())
    server = other.set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run(["pg_restore", f"--dbname={server}", "--no-owner", str(good)], check=True)
    role = f"gone_{secrets.token_hex(4)}"
    granting = tmp_path / "granting.dump"
    psql = ["psql", server, "-v", "ON_ERROR_STOP=1", "-qc"]
    subprocess.run([*psql, f"CREATE ROLE {role}; GRANT SELECT ON app_user TO {role}"], check=True)
    try:
        subprocess.run(["pg_dump", f"--dbname={server}", "--format=custom", "--no-owner",
                        f"--file={granting}"], check=True)  # fmt: skip
    finally:
        subprocess.run([*psql, f"REVOKE ALL ON app_user FROM {role}; DROP ROLE {role}"],
                       check=True)  # fmt: skip
    demo_cli("-u", "admin", "user", "add", "newcomer", "--role", "technician")
    users = _count(db_url, "SELECT count(*) FROM app_user")
    entries = _count(db_url, "SELECT count(*) FROM audit_entry")

    failed = demo_cli("-u", "admin", "restore", str(granting), "-y", code=10)
    assert "nothing was replaced" in failed.stderr and f'role "{role}"' in failed.stderr
    assert _count(db_url, "SELECT count(*) FROM app_user") == users  # the newcomer stays
    assert _count(db_url, "SELECT count(*) FROM audit_entry") == entries
    scratch = f"{make_url(db_url).database}_restore_%"
    assert _count(db_url, f"SELECT count(*) FROM pg_database WHERE datname LIKE '{scratch}'") == 0
    demo_cli("-u", "admin", "audit", "verify")


@pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)
def test_a_corrupt_sqlite_backup_is_one_line_and_replaces_nothing(demo_cli, db_url, tmp_path):
    copy = tmp_path / "biobank.backup"
    demo_cli("-u", "admin", "backup", str(copy))
    data = bytearray(copy.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the header stays, the first page's content goes
    copy.write_bytes(bytes(data))
    entries = _count(db_url, "SELECT count(*) FROM audit_entry")
    refused = demo_cli("-u", "admin", "restore", str(copy), "-y", code=2)
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert _count(db_url, "SELECT count(*) FROM audit_entry") == entries


@pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)  # edited with sqlite3
def test_a_sqlite_copy_changed_since_its_backup_gets_the_full_integrity_check(
    demo_cli, db_url, tmp_path
):
    """A copy this database recorded, unchanged, gets SQLite's quick check; one whose bytes
    changed since gets the full check, which also holds each index to its table: an index
    that no longer matches its rows is refused."""
    copy = tmp_path / "biobank.backup"
    demo_cli("-u", "admin", "backup", str(copy))
    connection = sqlite3.connect(copy)
    (sql,) = connection.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'ix_specimen_status'"
    ).fetchone()
    with connection:
        connection.execute("PRAGMA writable_schema = ON")
        connection.execute(
            "UPDATE sqlite_master SET sql = ? WHERE name = 'ix_specimen_status'",
            (sql.replace("(status)", "(specimen_type)"),),
        )
    assert connection.execute("PRAGMA quick_check").fetchone() == ("ok",)
    connection.close()
    assert not (tmp_path / "biobank.backup-wal").exists()  # the copy's bytes alone changed
    entries = _count(db_url, "SELECT count(*) FROM audit_entry")

    refused = demo_cli("-u", "admin", "restore", str(copy), "-y", code=2)
    assert "fails SQLite's integrity check: row 1 missing from index" in refused.stderr
    assert _count(db_url, "SELECT count(*) FROM audit_entry") == entries


@pytest.fixture
def walks(monkeypatch) -> list:
    """The chain walks a backup or restore makes: their reports."""
    from biobank.services import audit

    made, verify = [], audit.verify_chain

    def recorded(session, *, actor, incremental=False):
        made.append(verify(session, actor=actor, incremental=incremental))
        return made[-1]

    monkeypatch.setattr(audit, "verify_chain", recorded)
    return made


def test_a_backup_made_here_is_checked_from_the_checkpoint_it_holds(engine, admin, tmp_path,
                                                                    walks):  # fmt: skip
    """The copy holds the verified checkpoint its backup appended, and this database's trail
    its SHA-256: the restore walks only what came after that checkpoint, and the restored
    database not again."""
    from biobank.services import backups

    copy = tmp_path / "biobank.backup"
    made = backups.backup(engine, actor=admin, path=copy)
    (before,) = walks
    assert before.since is None and before.checked == before.entries == made.audit_entries
    walks.clear()
    restored = backups.restore(engine, actor=admin, path=copy)
    (checked,) = walks
    assert checked.since == before.through and checked.checked == 1  # the checkpoint alone
    assert restored.audit_entries == checked.entries == made.audit_entries + 1


@pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)  # a SQLite journal
def test_a_copy_with_a_journal_beside_it_is_walked_whole(engine, admin, tmp_path, walks):
    """Its SHA-256 does not cover what the journal holds."""
    from biobank.services import backups

    copy = tmp_path / "biobank.backup"
    backups.backup(engine, actor=admin, path=copy)
    (tmp_path / "biobank.backup-wal").write_bytes(b"\0" * 32)  # no valid frame: ignored
    walks.clear()
    backups.restore(engine, actor=admin, path=copy)
    (checked,) = walks
    assert checked.since is None and checked.checked == checked.entries
