"""The audit trail's anchors outside the database, attacked as someone who can write the table
would: the last entries deleted, an entry edited and every hash after it recomputed with the
project's own hash function (the chain alone then verifies), a checkpoint line forged. Each
is caught by the keyed checkpoints; a restore's keyed mark lets an older chain stand."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from biobank.db import make_engine, uow
from biobank.errors import AuditChainBroken, ValidationError
from biobank.services import audit, audit_anchor, studies


def _behind_the_triggers(engine: Engine, *statements: str) -> None:
    """Run SQL on the audit table as an intruder with the database's own rights would."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_entry_no_update")
            connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_entry_no_delete")
        else:
            connection.exec_driver_sql("ALTER TABLE audit_entry DISABLE TRIGGER ALL")
        for statement in statements:
            connection.exec_driver_sql(statement)


def _rehash_from(engine: Engine, first: int) -> None:
    """Recompute every hash from entry `first` on, as the project computes them."""
    with engine.begin() as connection:
        rows = (
            connection.execute(
                sa.text("SELECT * FROM audit_entry WHERE id >= :first ORDER BY id"),
                {"first": first},
            )
            .mappings()
            .all()
        )
        prev = connection.execute(
            sa.text("SELECT hash FROM audit_entry WHERE id < :first ORDER BY id DESC LIMIT 1"),
            {"first": first},
        ).scalar()
        for row in rows:
            entry = SimpleNamespace(**{**row, "prev_hash": prev})
            if isinstance(entry.occurred_at, str):  # SQLite hands the text back
                entry.occurred_at = datetime.fromisoformat(entry.occurred_at).replace(tzinfo=UTC)
            prev = audit.entry_hash(entry)
            connection.execute(
                sa.text("UPDATE audit_entry SET prev_hash = :p, hash = :h WHERE id = :id"),
                {"p": entry.prev_hash, "h": prev, "id": row["id"]},
            )


@pytest.fixture
def anchored(engine, admin, tmp_path):
    """Some history, then a checkpoint: (key, checkpoints file)."""
    with uow(engine) as session:
        for code in ("ONE", "TWO", "THREE"):
            studies.add_study(session, actor=admin, code=code, title=code.title())
    key = audit_anchor.load_key(tmp_path / "audit.key", create=True)
    path = tmp_path / "checkpoints.jsonl"
    with uow(engine, readonly=True) as session:
        audit_anchor.add_checkpoint(session, actor=admin, key=key, path=path)
    return key, path


def _check(engine, admin, key, path):
    with uow(engine, readonly=True) as session:
        audit.verify_chain(session, actor=admin)  # the chain alone
        return audit_anchor.check_checkpoints(session, actor=admin, key=key, path=path)


def test_an_untouched_trail_holds_and_new_entries_are_named_unanchored(engine, admin, anchored):
    key, path = anchored
    assert _check(engine, admin, key, path).unanchored == 0
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="FOUR", title="Four")
    report = _check(engine, admin, key, path)
    assert report.checkpoints == 1 and report.unanchored == 1


def test_deleting_the_last_entries_is_named_truncation(engine, admin, anchored):
    key, path = anchored
    with uow(engine, readonly=True) as session:
        head = session.execute(sa.select(sa.func.max(audit.AuditEntry.id))).scalar()
    _behind_the_triggers(engine, f"DELETE FROM audit_entry WHERE id >= {head - 1}")
    with uow(engine, readonly=True) as session:
        audit.verify_chain(session, actor=admin)  # what the chain alone cannot see
    with pytest.raises(AuditChainBroken, match="truncated"):
        _check(engine, admin, key, path)


def test_an_edit_with_every_hash_recomputed_is_named_rewriting(engine, admin, anchored):
    key, path = anchored
    _behind_the_triggers(engine, "UPDATE audit_entry SET reason = 'nothing to see' WHERE id = 2")
    _rehash_from(engine, 2)
    with uow(engine, readonly=True) as session:
        audit.verify_chain(session, actor=admin)  # the chain alone verifies
    with pytest.raises(AuditChainBroken, match="rewritten"):
        _check(engine, admin, key, path)


def test_a_forged_checkpoint_or_a_missing_key_is_refused(engine, admin, anchored, tmp_path):
    key, path = anchored
    line = json.loads(path.read_text())
    with pytest.raises(AuditChainBroken, match="missing"):
        _check(engine, admin, None, path)
    line["entries"] -= 1  # a checkpoint made to agree with a removal
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(AuditChainBroken, match="forged or edited"):
        _check(engine, admin, key, path)
    with pytest.raises(AuditChainBroken, match="forged or edited"):
        _check(engine, admin, bytes(32), path)  # another key


def test_a_restore_mark_lets_an_older_chain_stand(engine, admin, anchored):
    key, path = anchored
    with uow(engine, readonly=True) as session:
        head = session.execute(sa.select(sa.func.max(audit.AuditEntry.id))).scalar()
    _behind_the_triggers(engine, f"DELETE FROM audit_entry WHERE id = {head}")  # as a restore
    with uow(engine, readonly=True) as session:
        audit_anchor.add_checkpoint(session, actor=admin, key=key, path=path, kind="restore")
    assert _check(engine, admin, key, path).checkpoints == 1


def test_a_key_others_may_read_is_refused(tmp_path):
    path = tmp_path / "audit.key"
    audit_anchor.load_key(path, create=True)
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    with pytest.raises(ValidationError, match="chmod 600"):
        audit_anchor.load_key(path, create=False)


def test_checkpoints_through_the_cli_survive_a_restore_and_catch_a_truncation(
    demo_cli, admin_db_url, tmp_path
):
    made = demo_cli("-u", "admin", "audit", "checkpoint")
    assert json.loads(made.stdout)["mac"]  # the line for the admins' records
    assert "held to 1 checkpoint" in demo_cli("-u", "admin", "audit", "verify").stderr
    copy = tmp_path / "biobank.backup"
    demo_cli("-u", "admin", "backup", str(copy))
    demo_cli("-u", "admin", "study", "add", "LATE", "--title", "Added after the backup")
    demo_cli("-u", "admin", "audit", "checkpoint")
    demo_cli("-u", "admin", "restore", str(copy), "-y")  # an older chain, put back on purpose
    verified = demo_cli("-u", "admin", "audit", "verify", "--json")
    assert json.loads(verified.stdout)["anchors"]["checkpoints"] == 1  # the restore's mark

    demo_cli("-u", "admin", "audit", "checkpoint")
    engine = make_engine(admin_db_url)
    with engine.connect() as connection:
        head = connection.execute(sa.text("SELECT max(id) FROM audit_entry")).scalar()
    _behind_the_triggers(engine, f"DELETE FROM audit_entry WHERE id = {head}")
    engine.dispose()
    broken = demo_cli("-u", "admin", "audit", "verify", code=9)
    assert "truncated" in broken.stderr
