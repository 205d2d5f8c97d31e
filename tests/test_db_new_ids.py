"""`db.new_ids`: the ids a bulk insert names, so that it reads none back; none taken already,
none handed to another unit of work, and the rows added after them get ids of their own."""

import pytest
import sqlalchemy as sa

from biobank.db import insert_rows, new_ids, uow
from biobank.models import Study, utcnow


def _study(number: int) -> dict[str, object]:
    return {"code": f"S{number}", "title": "t", "id_prefix": f"P{number}", "created_at": utcnow()}


def test_new_ids_are_past_every_row_and_the_next_row_is_past_them(engine):
    table = Study.__table__
    with uow(engine) as session:
        session.execute(sa.insert(table), [_study(0)])
        ids = new_ids(session, table, 3)
        rows = [[*_study(n).values(), i] for n, i in enumerate(ids, start=1)]
        insert_rows(session, table, [*_study(0), "id"], rows)
        session.execute(sa.insert(table), [_study(4)])
        stored = dict(session.execute(sa.select(table.c.code, table.c.id)).all())
    assert len(set(ids)) == 3 and min(ids) > stored["S0"]
    assert {stored[f"S{n}"] for n in (1, 2, 3)} == set(ids)
    assert stored["S4"] > max(ids)


def test_none_asked_none_drawn(engine):
    with uow(engine) as session:
        assert new_ids(session, Study.__table__, 0) == []


def test_two_units_of_work_never_share_an_id(pg_engine):
    """PostgreSQL draws from the sequence, which another unit of work draws from meanwhile."""
    with uow(pg_engine) as first, uow(pg_engine) as second:
        mine = new_ids(first, Study.__table__, 50)
        theirs = new_ids(second, Study.__table__, 50)
        again = new_ids(first, Study.__table__, 50)
    assert len(set(mine) | set(theirs) | set(again)) == 150


def test_a_lookup_draws_no_ids(engine):
    with uow(engine, lookup=True) as session:
        with pytest.raises(RuntimeError, match="a lookup unit of work changes nothing"):
            new_ids(session, Study.__table__, 1)
