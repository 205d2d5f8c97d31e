"""The audit trail: one entry per change in the same transaction, append-only in the
database itself, and a hash chain that names the first entry tampered with."""

import itertools
import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import exc

from biobank.db import uow
from biobank.domain.vocabulary import SpecimenStatus
from biobank.errors import AuditChainBroken, NotFound
from biobank.services import audit, studies, users


def _seed(engine, admin, count=5):
    with uow(engine) as session:
        for i in range(count):
            users.add_user(session, actor=admin, username=f"user{i}", role="technician")


def _rows(engine):
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT * FROM audit_entry ORDER BY id")).all()


def test_each_change_appends_one_chained_entry(engine, admin):
    start = len(_rows(engine))  # the bootstrap admin's own entry
    _seed(engine, admin, count=3)
    rows = _rows(engine)
    assert len(rows) == start + 3
    assert rows[0].prev_hash == audit.GENESIS_HASH
    for previous, current in itertools.pairwise(rows):
        assert current.prev_hash == previous.hash
    newest = rows[-1]
    assert (newest.actor, newest.workstation, newest.action, newest.entity) == (
        "admin",
        "test-bench",
        "user.add",
        "user",
    )
    assert '"username":"user2"' in newest.after
    assert '"pin_hash":false' in newest.after  # secrets are never written out
    with uow(engine) as session:
        assert audit.verify_chain(session, actor=admin).entries == start + 3


def test_a_failed_change_leaves_no_entry(engine, admin):
    before = len(_rows(engine))
    with pytest.raises(NotFound), uow(engine) as session:
        studies.add_study(session, actor=admin, code="ABC", title="A study")
        users.set_pin(session, actor=admin, username="nobody", pin="1234")
    assert len(_rows(engine)) == before


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entry SET actor = 'mallory'",
        "DELETE FROM audit_entry",
    ],
)
def test_database_refuses_update_and_delete(engine, admin, statement):
    _seed(engine, admin, count=2)
    before = _rows(engine)
    with pytest.raises(exc.DatabaseError, match="append-only"), engine.begin() as connection:
        connection.exec_driver_sql(statement)
    assert _rows(engine) == before


def test_postgres_refuses_truncate(pg_engine):
    with pytest.raises(exc.DatabaseError, match="append-only"), pg_engine.begin() as connection:
        connection.exec_driver_sql("TRUNCATE audit_entry")


def _behind_the_applications_back(engine, statement: str) -> None:
    """What a person with raw database access could do: lift the guard, change, restore."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql("ALTER TABLE audit_entry DISABLE TRIGGER USER")
            connection.exec_driver_sql(statement)
            connection.exec_driver_sql("ALTER TABLE audit_entry ENABLE TRIGGER USER")
        else:
            triggers = (
                connection.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE type = 'trigger' "
                    "AND tbl_name = 'audit_entry'"
                )
                .scalars()
                .all()
            )
            connection.exec_driver_sql("DROP TRIGGER audit_entry_no_update")
            connection.exec_driver_sql("DROP TRIGGER audit_entry_no_delete")
            connection.exec_driver_sql(statement)
            for trigger in triggers:
                connection.exec_driver_sql(trigger)


def test_verify_names_an_altered_entry(engine, admin):
    _seed(engine, admin, count=5)
    target = _rows(engine)[-2].id  # user3's entry
    _behind_the_applications_back(
        engine,
        f"UPDATE audit_entry SET after = replace(after, 'user3', 'userX') WHERE id = {target}",
    )
    with pytest.raises(AuditChainBroken, match=f"audit entry {target} .*altered") as caught:
        with uow(engine) as session:
            audit.verify_chain(session, actor=admin)
    assert caught.value.value == target


def test_verify_names_the_entry_after_a_removed_one(engine, admin):
    _seed(engine, admin, count=5)
    rows = _rows(engine)
    _behind_the_applications_back(engine, f"DELETE FROM audit_entry WHERE id = {rows[2].id}")
    with pytest.raises(AuditChainBroken, match=f"audit entry {rows[3].id} does not follow"):
        with uow(engine) as session:
            audit.verify_chain(session, actor=admin)


def test_log_filters_by_entity_and_id(engine, admin):
    _seed(engine, admin, count=2)
    with uow(engine) as session:
        entries = audit.audit_log(session, actor=admin, entity="user")
        user2 = users.list_users(session, actor=admin)[-1]
        one = audit.audit_log(session, actor=admin, entity="user", entity_id=str(user2.id))
    assert [e.action for e in entries] == ["user.add"] * 3
    assert len(one) == 1 and one[0].after["username"] == user2.username


def test_concurrent_writers_never_fork_the_chain(engine, admin):
    """Several threads appending at once still leave one unbroken chain."""
    from concurrent.futures import ThreadPoolExecutor

    def add(i: int) -> None:
        with uow(engine) as session:
            users.add_user(session, actor=admin, username=f"para{i}", role="pi")

    start = len(_rows(engine))
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(add, range(16)))
    with uow(engine) as session:
        assert audit.verify_chain(session, actor=admin).entries == start + 16


def test_a_large_unit_of_work_is_one_batch_under_one_seal(engine, admin):
    """`record_many` writes entries as they come, every SEAL_BATCH (flat memory for imports),
    chained among themselves from a start of their own; at commit one seal, chained onto the
    tail, names the batch. The entries stay in order, with those recorded one by one before
    and after."""
    before = len(_rows(engine))
    count = audit.SEAL_BATCH * 2 + 7
    with uow(engine) as session:
        users.add_user(session, actor=admin, username="first", role="pi")
        audit.record_many(
            session,
            actor=admin,
            entries=(
                {"action": "bulk.test", "entity": "thing", "entity_id": i} for i in range(count)
            ),
        )
        users.add_user(session, actor=admin, username="last", role="pi")
    rows = _rows(engine)
    assert len(rows) == before + count + 3
    batch, seal = rows[before:-1], rows[-1]
    assert [r.entity_id for r in batch[1:4]] == ["0", "1", "2"]
    assert batch[0].prev_hash.startswith(audit.BATCH_START)
    for previous, current in itertools.pairwise(batch):
        assert current.prev_hash == previous.hash
    assert (seal.action, seal.prev_hash) == ("audit.seal", rows[before - 1].hash)
    assert json.loads(seal.after) == {
        "first": batch[0].id, "start": batch[0].prev_hash, "head": batch[-1].hash,
        "entries": count + 2,
    }  # fmt: skip
    with uow(engine) as session:
        assert audit.verify_chain(session, actor=admin).entries == len(rows)


ENTRY_FIELDS = (
    "occurred_at", "actor", "workstation", "action", "entity", "entity_id", "before", "after",
    "reason", "prev_hash",
)  # fmt: skip
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()))


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({key: st.none() | ANY_TEXT for key in ENTRY_FIELDS}))
@example(dict.fromkeys(ENTRY_FIELDS, "".join(map(chr, range(0x20))) + '\x7f"\\ \u2028\u2029é€😀'))
@example(dict.fromkeys(ENTRY_FIELDS, "lone \ud800 surrogate"))
def test_an_entry_is_hashed_over_the_bytes_the_standard_library_wrote(fields):
    """Entries are hashed over a canonical JSON of their fields, all text or null. Every chain
    written before (with `json`) must verify now: the encoding may never change a byte."""
    written_before = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        expected = written_before.encode()
    except UnicodeEncodeError:  # a lone surrogate could never be hashed, and still cannot
        with pytest.raises(UnicodeEncodeError):
            audit._canonical_bytes(fields)
        return
    assert audit._canonical_bytes(fields) == expected


def test_a_snapshot_reads_back_as_the_row_it_records():
    row = {
        "quantity": 1000.0, "tiny": 1e-7, "count": 3, "price": Decimal("1.50"),
        "collected_at": datetime(2024, 3, 1, 8, 30, 15, 123456, tzinfo=UTC),
        "frozen_at": datetime(2024, 3, 1, 8, 30, tzinfo=UTC), "visit_date": date(2024, 3, 1),
        "status": SpecimenStatus.available, "notes": "Zoë\n\u2028\x01", "big": 2**70,
        "parent_id": None, "active": True,
    }  # fmt: skip
    for snapshot in (row, {k: v for k, v in row.items() if k != "big"}):  # orjson, and not
        text = audit.canonical_json(snapshot)
        assert list(json.loads(text)) == sorted(snapshot)
        assert json.loads(text) == json.loads(
            json.dumps(snapshot, default=audit._json_default, sort_keys=True)
        )
    with pytest.raises(TypeError, match="cannot record object in the audit trail"):
        audit.canonical_json({"what": object()})
