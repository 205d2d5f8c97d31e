"""A large unit of work's audit entries: written as a batch under no lock, sealed by one entry
chained at commit. Tampered with behind the application's back (an entry edited, removed,
reordered, an unsealed one slipped in), the walk names where; a crash leaves nothing half
sealed; two writers never fork the chain; another terminal does not wait for an import; and
an incremental verification starts from a verified checkpoint in the chain."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from test_audit_anchor import _behind_the_triggers

from biobank.db import uow
from biobank.domain.permissions import Actor
from biobank.errors import AuditChainBroken
from biobank.services import audit, audit_anchor, users

BULK = audit.CHAINED_AT_COMMIT + 50  # a batch, not entries chained at commit


def _bulk(session, actor: Actor, count: int = BULK, entity: str = "thing") -> None:
    audit.record_many(
        session,
        actor=actor,
        entries=({"action": "bulk.test", "entity": entity, "entity_id": i} for i in range(count)),
    )


def _entries(engine: Engine, where: str = "1 = 1") -> list[sa.Row]:
    with engine.connect() as connection:
        return connection.execute(
            sa.text(f"SELECT * FROM audit_entry WHERE {where} ORDER BY id")
        ).all()


def _verify(engine: Engine, admin: Actor, *, incremental: bool = False) -> audit.ChainReport:
    with uow(engine, readonly=True) as session:
        return audit.verify_chain(session, actor=admin, incremental=incremental)


@pytest.fixture
def batch(engine, admin) -> list[sa.Row]:
    """One unit of work of BULK entries between two of one entry each: its batch, then seal."""
    with uow(engine) as session:
        users.add_user(session, actor=admin, username="before", role="pi")
    with uow(engine) as session:
        _bulk(session, admin)
    with uow(engine) as session:
        users.add_user(session, actor=admin, username="after", role="pi")
    rows = _entries(engine, "entity = 'thing' OR action = 'audit.seal'")
    assert [r.action for r in rows] == ["bulk.test"] * BULK + ["audit.seal"]
    assert _verify(engine, admin).entries == len(_entries(engine))
    return rows


def test_an_altered_batch_entry_is_named(engine, admin, batch):
    target = batch[40].id
    _behind_the_triggers(engine, f"UPDATE audit_entry SET entity_id = 'x' WHERE id = {target}")
    with pytest.raises(AuditChainBroken, match=f"audit entry {target} .*altered"):
        _verify(engine, admin)


def test_a_removed_batch_entry_names_the_one_after_it(engine, admin, batch):
    _behind_the_triggers(engine, f"DELETE FROM audit_entry WHERE id = {batch[40].id}")
    with pytest.raises(AuditChainBroken, match=f"audit entry {batch[41].id} does not follow"):
        _verify(engine, admin)


def test_a_batch_without_its_last_entry_fails_at_its_seal(engine, admin, batch):
    last, seal = batch[-2], batch[-1]
    _behind_the_triggers(engine, f"DELETE FROM audit_entry WHERE id = {last.id}")
    with pytest.raises(AuditChainBroken, match=f"audit entry {seal.id} seals {BULK} entries"):
        _verify(engine, admin)


def test_two_batch_entries_swapped_are_named(engine, admin, batch):
    first, second = batch[10].id, batch[11].id
    _behind_the_triggers(
        engine,
        f"UPDATE audit_entry SET id = -1 WHERE id = {first}",
        f"UPDATE audit_entry SET id = {first} WHERE id = {second}",
        f"UPDATE audit_entry SET id = {second} WHERE id = -1",
    )
    with pytest.raises(AuditChainBroken, match=f"audit entry {first} does not follow"):
        _verify(engine, admin)


def test_an_entry_of_no_sealed_batch_is_named(engine, admin, batch):
    """An entry slipped in with a batch's start of its own, never sealed."""
    unsealed = {**batch[0]._asdict(), "id": batch[-1].id + 100}
    unsealed["prev_hash"] = audit.BATCH_START + "f" * (64 - len(audit.BATCH_START))
    unsealed["hash"] = audit.entry_hash(_as_entry(unsealed))
    with engine.begin() as connection:
        connection.execute(sa.insert(sa.table("audit_entry", *map(sa.column, unsealed))),
                           unsealed)  # fmt: skip
    with pytest.raises(AuditChainBroken, match=f"audit entry {unsealed['id']} does not follow"):
        _verify(engine, admin)


def _as_entry(row: dict) -> SimpleNamespace:
    at = row["occurred_at"]
    if isinstance(at, str):  # SQLite hands the text back
        at = datetime.fromisoformat(at).replace(tzinfo=UTC)
    return SimpleNamespace(**{**row, "occurred_at": at})


CRASHING_IMPORT = """
import os, sys
from biobank.db import make_engine, uow
from biobank.services import audit
from biobank.services.identity import actor_for

engine = make_engine(sys.argv[1])
with uow(engine) as session:
    admin = actor_for(session, username="admin", workstation="crash")
with uow(engine) as session:
    audit.record_many(session, actor=admin, entries=(
        {"action": "bulk.crash", "entity": "thing", "entity_id": i} for i in range(12_000)))
    session.flush()
    print("written", flush=True)
    os._exit(1)  # the process dies before its commit
"""


def test_a_crash_before_commit_leaves_no_entry_of_its_batch(engine, admin, db_url):
    """The batch's entries were written (SEAL_BATCH at a time) when the process died: the
    database rolls them back with the rest of the unit of work, and nothing waits unsealed."""
    before = len(_entries(engine))
    crashed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASHING_IMPORT), db_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == 1 and "written" in crashed.stdout, crashed.stderr
    assert len(_entries(engine)) == before
    with uow(engine) as session:
        _bulk(session, admin)  # the next import seals onto the same tail
    assert _verify(engine, admin).entries == before + BULK + 1


@pytest.mark.parametrize("engine_name", ["postgres"], indirect=True)
def test_writers_sealing_at_once_never_fork_the_chain(engine, admin):
    """Imports and single changes committing at once from several connections: every seal
    and every single entry follows exactly one other; the walk finds one chain."""
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for round_ in range(4):
                with uow(engine) as session:
                    _bulk(session, admin, entity=f"w{worker}")
                with uow(engine) as session:
                    users.add_user(session, actor=admin, username=f"u{worker}x{round_}",
                                   role="pi")  # fmt: skip
        except BaseException as error:  # reported below, on the test's thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    report = _verify(engine, admin)
    assert report.entries == len(_entries(engine))
    seals = _entries(engine, "action = 'audit.seal'")
    assert len(seals) == 16 and sum(json.loads(s.after)["entries"] for s in seals) == 16 * BULK


@pytest.mark.parametrize("engine_name", ["postgres"], indirect=True)
def test_a_terminal_commits_while_an_import_is_still_writing(engine, admin, monkeypatch):
    """The import's entries are written (a batch, under no lock) and its unit of work is
    still open: another terminal's change commits, chained onto the tail, without waiting."""
    monkeypatch.setattr(audit, "SEAL_BATCH", 100)
    committed = threading.Event()

    def other_terminal() -> None:
        with uow(engine) as session:
            users.add_user(session, actor=admin, username="meanwhile", role="pi")
        committed.set()

    with uow(engine) as session:
        _bulk(session, admin, count=250)
        assert session.info[audit._BATCH_KEY].entries == 200  # two written, under no lock
        terminal = threading.Thread(target=other_terminal)
        terminal.start()
        assert committed.wait(timeout=30), "the other terminal waited for the import"
    terminal.join()
    rows = _entries(engine)
    meanwhile = next(r for r in rows if r.action == "user.add" and "meanwhile" in r.after)
    assert rows[-1].action == "audit.seal" and rows[-1].prev_hash == meanwhile.hash
    assert _verify(engine, admin).entries == len(rows)


def _checkpoint(engine: Engine, admin: Actor) -> audit.ChainReport:
    """Verify after the last checkpoint and append one, as `audit verify` does."""
    report = _verify(engine, admin, incremental=True)
    with uow(engine) as session:
        audit.record_verified(session, actor=admin, report=report)
    return report


def test_an_incremental_verification_walks_what_came_after_the_checkpoint(engine, admin, batch):
    whole = _checkpoint(engine, admin)
    assert whole.since is None and whole.checked == whole.entries
    with uow(engine) as session:
        _bulk(session, admin)
    report = _verify(engine, admin, incremental=True)
    assert report.since == whole.through
    assert report.checked == 1 + BULK + 1  # the checkpoint, the batch and its seal
    assert report.entries == len(_entries(engine)) == _verify(engine, admin).entries
    assert report.last_hash == _entries(engine)[-1].hash

    old, new = batch[5].id, _entries(engine)[-5].id
    _behind_the_triggers(engine, f"UPDATE audit_entry SET reason = 'x' WHERE id = {old}")
    _verify(engine, admin, incremental=True)  # before the checkpoint: for a full walk to see
    with pytest.raises(AuditChainBroken, match=f"audit entry {old} .*altered"):
        _verify(engine, admin)
    _behind_the_triggers(engine, f"UPDATE audit_entry SET reason = 'x' WHERE id = {new}")
    with pytest.raises(AuditChainBroken, match=f"audit entry {new} .*altered"):
        _verify(engine, admin, incremental=True)


def test_the_entry_a_checkpoint_names_must_still_be_there(engine, admin, batch):
    through = _checkpoint(engine, admin).through
    _behind_the_triggers(engine, f"DELETE FROM audit_entry WHERE id = {through}")
    with pytest.raises(AuditChainBroken, match=f"audit entry {through} is not what the verif"):
        _verify(engine, admin, incremental=True)


def test_a_checkpoint_edited_to_skip_the_walk_is_named(engine, admin, batch):
    """Naming itself (or later) as verified, a checkpoint would leave itself unhashed."""
    _checkpoint(engine, admin)
    itself = _entries(engine)[-1]
    forged = json.dumps({"through": itself.id, "hash": itself.hash, "entries": 1})
    _behind_the_triggers(
        engine, f"UPDATE audit_entry SET after = '{forged}' WHERE id = {itself.id}"
    )
    with pytest.raises(AuditChainBroken, match=rf"checkpoint \(entry {itself.id}\) names a"):
        _verify(engine, admin, incremental=True)


@pytest.mark.parametrize("engine_name", ["postgres"], indirect=True)
def test_a_batch_begun_before_a_checkpoint_and_sealed_after_it(engine, admin, tmp_path):
    """On PostgreSQL an import's first ids come before entries others commit while it runs,
    and before a checkpoint made then: the incremental walk and the keyed anchors take its
    earlier entries in, and still see one of them removed."""
    key, anchors = bytes(32), tmp_path / "checkpoints.jsonl"
    importing, checkpointed = threading.Event(), threading.Event()

    def import_() -> None:
        with uow(engine) as session:
            _bulk(session, admin, count=audit.SEAL_BATCH + 10)  # the first SEAL_BATCH written
            importing.set()
            assert checkpointed.wait(timeout=60)

    running = threading.Thread(target=import_)
    running.start()
    assert importing.wait(timeout=60)
    with uow(engine) as session:
        users.add_user(session, actor=admin, username="meanwhile", role="pi")
    checkpoint = _checkpoint(engine, admin)
    with uow(engine, readonly=True) as session:
        audit_anchor.add_checkpoint(session, actor=admin, key=key, path=anchors)
    checkpointed.set()
    running.join(timeout=60)

    first_of_import = _entries(engine, "entity = 'thing'")[0].id
    assert first_of_import < checkpoint.through
    report = _verify(engine, admin, incremental=True)
    assert report.checked < report.entries == len(_entries(engine))
    with uow(engine, readonly=True) as session:
        assert audit_anchor.check_checkpoints(session, actor=admin, key=key, path=anchors)

    _behind_the_triggers(engine, f"DELETE FROM audit_entry WHERE id = {first_of_import + 1}")
    with pytest.raises(AuditChainBroken, match=r"seals .* entries"):
        _verify(engine, admin, incremental=True)


def test_audit_verify_walks_after_the_checkpoint_and_full_walks_all(demo_cli):
    """`audit verify` changes nothing; `audit checkpoint` appends the verified checkpoint the
    next one starts from."""
    first = json.loads(demo_cli("-u", "admin", "audit", "verify", "--json").stdout)
    assert first["since"] is None and first["checked"] == first["entries"]
    assert json.loads(demo_cli("-u", "admin", "audit", "verify", "--json").stdout) == first
    demo_cli("-u", "admin", "audit", "checkpoint")
    after = json.loads(demo_cli("-u", "admin", "audit", "verify", "--json").stdout)
    assert after["since"] is not None and after["checked"] == 1  # the checkpoint entry
    assert after["entries"] == first["entries"] + 1
    full = demo_cli("-u", "admin", "audit", "verify", "--full")
    assert f"{first['entries'] + 1} audit entries (all walked)" in full.stderr
