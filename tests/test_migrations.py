"""Migrations on both engines: empty to head, down to base, up again, and no drift."""

import subprocess
import sys

import pytest
import sqlalchemy as sa

import migrations
from biobank import migrate
from biobank.bootstrap import open_database
from biobank.db import make_engine
from biobank.errors import DatabaseNotReady
from biobank.settings import Settings


def _tables(engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade_round_trip(empty_db_url):
    engine = make_engine(empty_db_url)
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert {"app_user", "specimen", "storage_unit", "audit_entry", "export_run"} <= _tables(engine)
    assert migrate.schema_differences(engine) == []

    migrate.downgrade(engine, "base")
    assert migrate.current_revision(engine) is None
    assert _tables(engine) == set()

    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert migrate.schema_differences(engine) == []
    engine.dispose()


def test_drift_is_detected(db_url):
    engine = make_engine(db_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE study ADD COLUMN stray INTEGER")
    differences = migrate.schema_differences(engine)
    engine.dispose()
    assert any("stray" in d for d in differences)


def test_every_lookup_path_is_indexed(db_url):
    engine = make_engine(db_url)
    inspector = sa.inspect(engine)

    def indexed(table: str, column: str) -> bool:
        indexes = inspector.get_indexes(table) + inspector.get_unique_constraints(table)
        return any(i["column_names"][0] == column for i in indexes)

    for table, column in [
        ("specimen", "accession_id"),
        ("specimen", "legacy_id"),
        ("storage_unit", "barcode"),
        ("participant", "code"),
        ("participant_identity", "mrn"),
        ("participant_external_id", "value"),
        ("app_user", "username"),
        ("app_user", "badge"),
    ]:
        assert indexed(table, column), f"{table}.{column} has no index"
    engine.dispose()


def test_0011_keeps_the_participant_checks_and_adds_sex_other(empty_db_url):
    """SQLite rebuilds `participant` to change its sex CHECK: the status CHECK must survive."""
    engine = make_engine(empty_db_url)
    migrate.upgrade(engine, "0010")
    insert = (
        "INSERT INTO participant (id, study_id, code, sex, status, created_at) "
        "VALUES ({id}, 1, 'P-{id}', '{sex}', '{status}', '2026-01-01 00:00:00')"
    )
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO study (id, code, title, id_prefix, created_at) "
            "VALUES (1, 'S', 'S', 'S', '2026-01-01 00:00:00')"
        )
        connection.exec_driver_sql(insert.format(id=1, sex="female", status="active"))
    migrate.upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql(insert.format(id=2, sex="other", status="active"))
        assert connection.exec_driver_sql("SELECT sex FROM participant WHERE id = 1").scalar() == (
            "female"
        )
    for sex, status in (("bogus", "active"), ("female", "bogus")):
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.exec_driver_sql(insert.format(id=3, sex=sex, status=status))
    migrate.downgrade(engine, "0010")  # `other` becomes unknown, as the old CHECK allows
    with engine.begin() as connection:
        assert connection.exec_driver_sql("SELECT sex FROM participant WHERE id = 2").scalar() == (
            "unknown"
        )
    engine.dispose()


def test_embedded_database_is_created_and_upgraded_on_first_use(tmp_path):
    url = f"sqlite:///{tmp_path / 'new' / 'biobank.db'}"
    opened = open_database(Settings(database_url=url))
    assert migrate.current_revision(opened.engine) == migrate.head_revision()
    assert opened.created_admin is not None and opened.created_admin.username == "admin"
    assert open_database(Settings(database_url=url)).created_admin is None


def test_head_names_the_newest_script():
    assert migrate.head_revision() == migrations.HEAD


def test_opening_a_current_database_does_not_load_alembic(db_url, engine):
    """Alembic, Mako and Pygments cost half a second of every start; a current database
    needs none of them. (`engine` gave it its first admin: a server has one from the start.)"""
    script = (
        "import sys; from biobank.bootstrap import open_database; "
        "from biobank.settings import Settings; "
        f"open_database(Settings(database_url={db_url!r})); "
        "print(sorted(m for m in ('alembic', 'mako', 'pygments') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_server_database_behind_refuses_to_start(postgres_databases):
    url = postgres_databases.create()
    with pytest.raises(DatabaseNotReady, match="run `biobank db upgrade`"):
        open_database(Settings(database_url=url))


def test_database_newer_than_the_code_refuses(db_url):
    engine = make_engine(db_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    engine.dispose()
    with pytest.raises(DatabaseNotReady, match="newer than this version"):
        open_database(Settings(database_url=db_url))


def test_sort_keys_compare_byte_by_byte_on_postgres(pg_engine):
    """Subtree ranges need '/' just before '0' whatever the server's locale."""
    with pg_engine.connect() as connection:
        collation = connection.execute(
            sa.text(
                "SELECT collation_name FROM information_schema.columns "
                "WHERE table_name = 'storage_unit' AND column_name = 'sort_key'"
            )
        ).scalar()
    assert collation == "C"
