"""The bad-input corpus: the kinds of wrong input a lab produces — files in other encodings,
with BOMs or other delimiters, empty or not CSV at all; duplicated IDs; Unicode look-alikes;
control characters; over-long text; negative, NaN or infinite quantities; dates in the future,
impossible or before birth; bad SPREC codes; positions outside the grid; injection strings in
filters, codes and types; scans with a wrong check character or from another alphabet — each
given through the CLI as a technician, a PI or an admin would type it.

Each gets a clear message naming what is wrong (the field, the column, the row or the scan),
a failing exit code, and changes nothing: every table's row count and the audit chain's last
entry are as they were. (A specimen ID handed out to a refused accession is burnt, never
reused: that is the serial counter moving on, not a row.)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from conftest import ENGINES, _postgres_template, _sqlite_template
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import make_engine
from biobank.models import SQLModel

HEADER = (
    "Sample ID,Subject,Visit,Sample type,Volume (uL),Date collected,Time collected,"
    "Time processed,Freezer,Rack,Box,Position,Thaws,Comments\n"
)
GOOD = "LEG-01,LEGS01,baseline,SER,500,04/28/2017,09:00,12:00,FRZ-09,R01,BOX-X001,A1,0,\n"
ROW = "LEG-02,LEGS01,baseline,SER,500,04/28/2017,09:00,12:00,FRZ-09,R01,BOX-X001,A2,0,ok\n"


def sheet(row: str = ROW, *, encoding: str = "utf-8", header: str = HEADER) -> bytes:
    """A legacy inventory sheet: a good row and `row`."""
    return (header + GOOD + row).encode(encoding)


@dataclass(frozen=True)
class Bad:
    kind: str
    args: tuple[str, ...]  # {P}: a participant's code, {TUBE}: a stored tube, {FILE}: the file
    expect: str  # in what the command says (stderr, and stdout for a file's fault table)
    file: bytes | None = None
    code: int | None = None  # the exit code, when one is meant (else any failing one)
    user: str = "admin"
    tags: tuple[str, ...] = field(default=())


ACCESSION = ("specimen", "accession", "-p", "{P}", "-v", "baseline", "--type", "SER")
IMPORT = ("import", "inventory", "{FILE}", "--study", "SLE")

CORPUS = [
    # quantities
    Bad("negative quantity", (*ACCESSION, "-q", "-5"), "quantity must be more than zero"),
    Bad("zero quantity", (*ACCESSION, "-q", "0"), "quantity must be more than zero"),
    Bad("NaN quantity", (*ACCESSION, "-q", "nan"), "quantity must be a number"),
    Bad("infinite quantity", (*ACCESSION, "-q", "inf"), "quantity must be a number"),
    Bad("quantity beyond a float", (*ACCESSION, "-q", "1e309"), "quantity must be a number"),
    Bad("unknown unit", (*ACCESSION, "-q", "100", "--unit", "gallons"), "unknown unit 'gallons'"),
    Bad("aliquots overdraw", (*ACCESSION, "-q", "100", "--aliquots", "10", "--volume", "1000"),
        "has 100 uL left, 10000 uL asked"),
    Bad("aliquot count out of range", (*ACCESSION, "-q", "100", "--aliquots", "-2",
        "--volume", "10"), "count must be 1-500"),
    Bad("NaN aliquot volume", ("specimen", "aliquot", "{TUBE}", "-n", "2", "--volume", "nan"),
        "volume must be a number"),
    # dates and times
    Bad("collection in the future", (*ACCESSION, "-q", "100", "--collected", "2099-01-01T08:00"),
        "collection time is in the future"),
    Bad("collection before birth", (*ACCESSION, "-q", "100", "--collected", "1900-01-01T08:00"),
        "collection time is before"),
    Bad("processing before collection", (*ACCESSION, "-q", "100", "--collected",
        "2026-01-05T09:00", "--processed", "2026-01-05T08:00"),
        "processing time is before collection time"),
    Bad("date in a US format where ISO is asked", (*ACCESSION, "-q", "100", "--collected",
        "05/01/2026"), "collected must be a date and time as YYYY-MM-DDTHH:MM"),
    Bad("impossible date", ("participant", "add", "--study", "SLE", "--dob", "1980-02-30"),
        "dob must be a date as YYYY-MM-DD"),
    Bad("birth year in the future", ("participant", "add", "--study", "SLE", "--birth-year",
        "2099"), "birth year must be between 1900"),
    Bad("enrolled before birth", ("participant", "add", "--study", "SLE", "--birth-year", "1980",
        "--enrolled", "1975-01-01"), "enrolment date is before birth"),
    Bad("visit in the future", ("visit", "add", "{P}", "month_99", "--date", "2099-01-01"),
        "visit date is in the future"),
    Bad("withdrawal dated in the future", ("consent", "withdraw", "{P}", "--date", "2099-01-01",
        "--requested-by", "the participant", "--disposition", "destroy", "-y"),
        "the withdrawal date is in the future"),
    # codes and identifiers
    Bad("unknown specimen type", (*ACCESSION[:-1], "XYZ", "-q", "100"),
        "unknown specimen type 'XYZ'"),
    Bad("bad SPREC code", (*ACCESSION, "-q", "100", "--sprec", "SER-QQQ-A-B-C-D-E"),
        "primary container 'QQQ' is not a SPREC 3.0 fluid code"),
    Bad("bad pre-centrifugation temperature", (*ACCESSION, "-q", "100", "--pre-temp", "hot"),
        "precentrifugation_temperature must be one of"),
    Bad("unknown participant", ("specimen", "accession", "-p", "SLE-NOPE99", "-v", "baseline",
        "--type", "SER", "-q", "100"), "no participant with code 'SLE-NOPE99'", code=4),
    Bad("Cyrillic look-alike in a code", ("specimen", "accession", "-p", "\u0405LE-NOPE99", "-v",
        "baseline", "--type", "SER", "-q", "100"), "U+0405 CYRILLIC CAPITAL LETTER DZE", code=4),
    Bad("unknown visit", (*ACCESSION[:5], "nosuchvisit", "--type", "SER", "-q", "100"),
        "has no visit 'nosuchvisit'", code=4),
    Bad("bad username", ("user", "add", "Robert Tables", "--role", "technician"),
        "a username is 2-64 characters"),
    Bad("bad study code", ("study", "add", "S" * 40, "--title", "x", "--prefix", "ZZ"),
        "a study code is 2-16 letters or digits"),
    # text
    Bad("control character in an ID", (*ACCESSION, "-q", "100", "--legacy-id", "A\x07B"),
        "legacy_id holds a control character (U+0007) at position 2"),
    Bad("escape sequence in a name", ("storage", "add", "freezer", "Freezer\x1b[31m"),
        "name holds a control character (U+001B)"),
    Bad("over-long text", (*ACCESSION, "-q", "100", "--legacy-id", "y" * 5000),
        "legacy_id is 5,000 characters long; at most 64 are kept"),
    # storage positions
    Bad("position outside the grid", (*ACCESSION, "-q", "100", "--to", "BX000004", "--position",
        "K12"), "position K12 is outside the 9x9 grid (A1-I9)"),
    Bad("position taken", (*ACCESSION, "-q", "100", "--to", "BX000004", "--position", "A1"),
        "BX000004 A1 is occupied by", code=5),
    Bad("move outside the grid", ("specimen", "move", "{TUBE}", "BX000005", "Z9"),
        "position Z9 is outside the 9x9 grid"),
    Bad("no grid", ("storage", "add", "box", "B1", "--grid", "0x0", "-p", "RK000003"),
        "'0x0' is not a grid"),
    # filters
    Bad("SQL after a condition", ("cohort", "preview", "--where",
        "sledai2k >= 6; DROP TABLE specimen"), "unexpected text at 'DROP TABLE specimen'",
        user="pi"),
    Bad("injection in a type filter", ("cohort", "preview", "--type", "SER' OR '1'='1"),
        "unknown specimen type \"SER' OR '1'='1\"", user="pi"),
    Bad("unknown variable in a condition", ("cohort", "preview", "--where", "nosuch >= 6"),
        "no phenotype variable 'nosuch'", user="pi"),
    Bad("mistyped operator", ("cohort", "preview", "--where", "sledai2k => 6"),
        "expected a value at '> 6'", user="pi"),
    Bad("a word where a number is compared", ("cohort", "preview", "--where", "sledai2k >= high"),
        "sledai2k", user="pi"),
    Bad("negative minimum quantity", ("cohort", "preview", "--min-quantity", "-5"),
        "min_quantity", user="pi"),
    Bad("unknown use", ("cohort", "preview", "--use", "NOT_A_USE"), "unknown use 'NOT_A_USE'",
        user="pi"),
    # scans
    Bad("scan with a wrong check character", ("scan", "SLE-0000001X"),
        "SLE-0000001X fails its check character", user="tech"),
    Bad("scan in another alphabet", ("scan", "SLE-0000001\u041c"),
        "U+041C CYRILLIC CAPITAL LETTER EM", user="tech"),
    Bad("empty scan", ("scan", "  "), "empty scan", user="tech"),
    Bad("endless scan", ("scan", "A" * 3000), "(3,000 characters)", user="tech"),
    # files
    Bad("empty file", IMPORT, "the file is empty", file=b""),
    Bad("not a CSV at all", IMPORT, "no column 'Sample ID'", file=bytes(range(256)) * 4),
    Bad("a required column missing", IMPORT, "no column 'Subject'",
        file=sheet(ROW.replace("LEGS01,", ""), header=HEADER.replace("Subject,", ""))),
    Bad("UTF-16 with a bad volume", IMPORT, "volume must be more than zero",
        file=sheet(ROW.replace(",500,", ",-5,"), encoding="utf-16")),
    Bad("BOM and a bad type", IMPORT, "XYZ", file=b"\xef\xbb\xbf" + sheet(ROW.replace(
        "SER", "XYZ"))),
    Bad("semicolons and a word for a volume", IMPORT, "abc",
        file=sheet(ROW.replace(",500,", ",abc,")).replace(b",", b";")),
    Bad("Windows-1252 and an impossible date", IMPORT, "13/45/2017",
        file=sheet(ROW.replace("04/28/2017", "13/45/2017").replace("ok", "h\u00e9molys\u00e9"),
                   encoding="cp1252")),
    Bad("duplicated IDs in a file", IMPORT, "LEG-01", file=sheet(GOOD)),
    Bad("NaN volume in a file", IMPORT, "volume must be a number",
        file=sheet(ROW.replace(",500,", ",NaN,"))),
    Bad("date in the future in a file", IMPORT, "04/28/2099",
        file=sheet(ROW.replace("04/28/2017", "04/28/2099"))),
    Bad("position outside the grid in a file", IMPORT, "Z99",
        file=sheet(ROW.replace(",A2,", ",Z99,"))),
    Bad("two tubes in one position", IMPORT, "A1", file=sheet(ROW.replace(",A2,", ",A1,"))),
    Bad("control character in a file", IMPORT, "the value holds a control character (U+0007)",
        file=sheet(ROW.replace("ok", "bad\x07bell"))),
    Bad("over-long ID in a file", IMPORT, "the value is 500 characters long; at most 64",
        file=sheet(ROW.replace("LEG-02", "L" * 500))),
    Bad("injection in a file", IMPORT, "Subject",
        file=sheet(ROW.replace("LEGS01", "'; DROP TABLE specimen;--"))),
    Bad("rack scan that is not one", ("reconcile", "BX000004", "{FILE}"),
        "the scan has no position column", file=bytes(range(256)) * 4, user="tech"),
    Bad("empty rack scan", ("reconcile", "BX000004", "{FILE}"), "the scan file is empty",
        file=b"", user="tech"),
]  # fmt: skip


def test_the_corpus_has_at_least_forty_kinds():
    assert len({bad.kind for bad in CORPUS}) == len(CORPUS) >= 40


@pytest.fixture(scope="module", params=ENGINES)
def seeded(request, tmp_path_factory) -> str:
    """One demo database per engine for the whole corpus: no case may change it."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("corpus") / "db.sqlite"
        shutil.copy(_sqlite_template(request), path)
        url = f"sqlite:///{path}"
    else:
        databases = request.getfixturevalue("postgres_databases")
        url = databases.create(template=_postgres_template(request, databases))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BIOBANK_DATABASE_URL", url)
        done = CliRunner().invoke(app, ["demo", "--participants", "3"])
    assert done.exit_code == 0, done.output
    return url


def _state(url: str) -> tuple[dict[str, int], tuple | None]:
    """Every table's row count, and the audit chain's last entry."""
    engine = make_engine(url)
    with engine.connect() as connection:
        counts = {
            table.name: connection.execute(sa.select(sa.func.count()).select_from(table)).scalar()
            for table in SQLModel.metadata.sorted_tables
        }
        tail = connection.execute(
            sa.text("SELECT id, hash FROM audit_entry ORDER BY id DESC LIMIT 1")
        ).first()
    engine.dispose()
    return counts, tuple(tail) if tail else None


def _filled(args: tuple[str, ...], seeded_url: str, file: str) -> list[str]:
    engine = make_engine(seeded_url)
    with engine.connect() as connection:
        participant = connection.execute(
            sa.text("SELECT code FROM participant ORDER BY id LIMIT 1")
        ).scalar()
    engine.dispose()
    values = {"{P}": participant, "{TUBE}": "SLE-0000001M", "{FILE}": file}
    return [values.get(a, a) for a in args]


@pytest.mark.parametrize("bad", CORPUS, ids=[b.kind for b in CORPUS])
def test_bad_input_is_named_and_changes_nothing(bad, seeded, tmp_path, monkeypatch):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", seeded)
    path = tmp_path / "input.csv"
    if bad.file is not None:
        path.write_bytes(bad.file)
    before = _state(seeded)
    result = CliRunner().invoke(app, ["-u", bad.user, *_filled(bad.args, seeded, str(path))])
    said = result.stderr + result.stdout
    assert result.exit_code != 0, said
    assert result.exception is None or isinstance(result.exception, SystemExit), said
    if bad.code is not None:
        assert result.exit_code == bad.code, said
    assert bad.expect in said, said
    assert "Traceback" not in said
    assert _state(seeded) == before
