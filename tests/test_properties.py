"""Property tests over inputs nobody wrote down: whatever text arrives, the SPREC parser, the
way an unknown code is quoted, the scan resolver and the two CSV importers (legacy inventory,
REDCap) answer with a result or a ValidationError naming the problem — never another
exception, never a write."""

import csv
import io
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from inventory import seed_inventory

from biobank.db import uow
from biobank.domain.identifiers import SHOWN_CHARACTERS, unknown_code
from biobank.domain.sprec import parse_sprec
from biobank.errors import ValidationError
from biobank.services import scan
from biobank.services.imports import legacy as legacy_import
from biobank.services.imports import redcap as redcap_import

# Text as it arrives from keyboards, scanners and spreadsheets: any character, control
# characters and look-alikes included.
anything = st.text(st.characters(codec="utf-8"), max_size=200)
sprec_like = st.lists(
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=3),
    min_size=1,
    max_size=8,
).map("-".join)
with_database = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@given(st.one_of(anything, sprec_like))
def test_a_sprec_code_parses_and_reads_back_or_is_refused_by_name(text):
    try:
        code = parse_sprec(text)
    except ValidationError as error:
        assert error.field == "sprec_code" and "SPREC code" in error.message
        return
    assert parse_sprec(str(code)) == code
    assert str(code) == text.strip().upper()


@given(anything)
def test_an_unknown_code_is_quoted_short_and_its_odd_character_named(text):
    quoted = unknown_code(text * 100)  # however long the code, the quote stays short
    assert len(quoted) < 10 * SHOWN_CHARACTERS + 150  # (a character may print as \U0001134e)
    odd = next((c for c in text if not c.isascii()), None)
    if odd is not None:
        assert f"U+{ord(odd):04X}" in quoted


@with_database
@given(text=anything)
@example(text="0\x00")  # found: a NUL at the end reached PostgreSQL by the legacy-ID lookup
@example(text="SLE\x00-0000001M")  # and one inside the code
def test_any_scan_resolves_to_a_result_and_writes_nothing(engine, admin, text):
    with uow(engine, readonly=True) as session:
        found = scan.resolve_scan(session, actor=admin, scanned=text)
    assert found.kind in ("specimen", "unit", "participant", "user", "kit", "misread", "unknown")
    assert found.message and len(found.message) < 400


cells = st.one_of(
    anything,
    st.sampled_from(["", "SER", "-5", "NaN", "1e309", "04/28/2017", "13/45/2017", "A1", "Z99"]),
)


@pytest.fixture
def registry(engine, admin):
    seed_inventory(engine, admin)  # study SLE, a participant, a freezer with boxes
    return engine


@with_database
@given(rows=st.lists(st.lists(cells, min_size=14, max_size=14), min_size=1, max_size=5))
def test_any_sheet_is_checked_row_by_row_and_nothing_is_written(registry, admin, tmp_path, rows):
    path = tmp_path / "sheet.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(legacy_import.FIELDS.values())
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    with registry.connect() as connection:
        before = connection.execute(sa.text("SELECT count(*) FROM specimen")).scalar()
    with uow(registry, readonly=True) as session:
        plan = legacy_import.check_inventory(session, actor=admin, path=path, study="SLE")
    report = plan.report
    assert report.rows <= len(rows)  # blank lines are not rows
    for fault in report.faults:
        assert fault.reason and (fault.row is None or 1 <= fault.row <= len(rows))
    with registry.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM specimen")).scalar() == before


REDCAP = Path(__file__).parent / "data" / "redcap"
_REDCAP_ROWS = list(csv.reader(io.StringIO((REDCAP / "redcap_records.csv").read_text("utf-8"))))


def _garbled_export(tmp_path, garbled) -> tuple[list[list[str]], Path]:
    """The sample REDCap export with the (row, column, text) cells replaced, as a file."""
    rows = [list(row) for row in _REDCAP_ROWS]
    for row, column, text in garbled:
        rows[row][column % len(rows[row])] = text
    path = tmp_path / "records.csv"
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return rows, path


@with_database
@given(
    garbled=st.lists(
        st.tuples(st.integers(1, len(_REDCAP_ROWS) - 1), st.integers(0, 30), cells),
        min_size=1,
        max_size=8,
    )
)
def test_any_redcap_export_is_checked_row_by_row_and_nothing_is_written(
    registry, admin, tmp_path, garbled
):
    """The sample export with cells replaced by anything: every fault names its row, and the
    check writes nothing."""
    rows, path = _garbled_export(tmp_path, garbled)
    with registry.connect() as connection:
        before = connection.execute(sa.text("SELECT count(*) FROM audit_entry")).scalar()
    with uow(registry, readonly=True) as session:
        plan = redcap_import.check_redcap(
            session,
            actor=admin,
            dictionary=REDCAP / "redcap_data_dictionary.csv",
            records=path,
            study="SLE",
        )
    report = plan.report
    assert report.rows <= len(rows) - 1
    for fault in report.faults:
        assert fault.reason and (fault.row is None or 1 <= fault.row <= len(rows))
    with registry.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM audit_entry")).scalar() == before


class _Undone(Exception):
    """Raised to roll back what an example wrote, so the next example meets the same database."""


@pytest.mark.parametrize("engine_name", ["sqlite"])
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    garbled=st.lists(
        st.tuples(st.integers(1, len(_REDCAP_ROWS) - 1), st.integers(0, 30), cells),
        min_size=1,
        max_size=6,
    ),
    skip_faulty=st.booleans(),
)
@example(garbled=[(1, 24, "\x1b")], skip_faulty=False)  # an escape in the consent version
def test_a_garbled_redcap_export_is_faulted_by_row_and_written_by_whole_records(
    registry, admin, tmp_path, garbled, skip_faulty
):
    """The sample export with cells replaced by anything: every fault names its row (and its
    record, when the row has one); without skip_faulty a faulty export writes nothing, with it
    exactly the records without a faulty row are written."""
    rows, path = _garbled_export(tmp_path, garbled)

    def written(connection: sa.Connection) -> tuple[set[str], int, int]:
        query = sa.text("SELECT value FROM participant_external_id")  # the records written
        codes = set(connection.execute(query).scalars())
        audit = connection.execute(sa.text("SELECT count(*) FROM audit_entry")).scalar_one()
        values = connection.execute(sa.text("SELECT count(*) FROM phenotype_value")).scalar_one()
        return codes, audit, values

    with registry.connect() as connection:
        before = written(connection)
    with pytest.raises(_Undone), uow(registry) as session:
        plan = redcap_import.check_redcap(
            session,
            actor=admin,
            dictionary=REDCAP / "redcap_data_dictionary.csv",
            records=path,
            study="SLE",
            skip_faulty=skip_faulty,
        )
        report = plan.report
        for fault in report.faults:
            assert fault.row is not None and 1 <= fault.row <= len(rows) - 1, fault
            assert fault.record == (rows[fault.row][0].strip() or None), fault
        if report.fault_count and not skip_faulty:
            with pytest.raises(ValidationError, match="nothing was imported"):
                redcap_import.write_redcap(session, actor=admin, plan=plan)
            assert written(session.connection()) == before
        else:
            redcap_import.write_redcap(session, actor=admin, plan=plan)
            faulty = {f.record for f in report.faults if f.record}
            records = {row[0].strip() for row in rows[1:]}
            kept = {r for r in records - faulty if r}
            assert written(session.connection())[0] == before[0] | kept
        raise _Undone
    with registry.connect() as connection:
        assert written(connection) == before
