"""The bad-input corpus: the kinds of wrong input a lab produces — files in other encodings,
with BOMs or other delimiters, empty or not CSV at all; duplicated IDs; Unicode look-alikes;
control characters; over-long text; negative, NaN or infinite quantities; dates in the future,
impossible or before birth; bad SPREC codes; positions outside the grid; injection strings in
filters, codes and types; scans with a wrong check character or from another alphabet; files
that are not files (a FIFO, a process substitution, /dev/zero, a folder) or too large, cells
and records without end, binary mappings; conditions nested or numbered without end; settings
that are not valid; a disk that fills — each given through the CLI as a technician, a PI or
an admin would type it.

Each gets a clear message naming what is wrong (the field, the column, the row or the scan),
a failing exit code, no traceback, and at once (a case that waits is failed by an alarm), and
changes nothing: every table's row count and the audit chain's last entry are as they were.
(A specimen ID handed out to a refused accession is burnt, never reused: that is the serial
counter moving on, not a row.)
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import ENGINES, _postgres_template, _sqlite_template
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel
from typer.testing import CliRunner

from biobank.bootstrap import bootstrap
from biobank.cli import app
from biobank.db import make_engine
from biobank.inputs import IMPORT_LIMIT, SMALL_LIMIT

HEADER = (
    "Sample ID,Subject,Visit,Sample type,Volume (uL),Date collected,Time collected,"
    "Time processed,Freezer,Rack,Box,Position,Thaws,Comments\n"
)
GOOD = "LEG-01,LEGS01,baseline,SER,500,04/28/2017,09:00,12:00,FRZ-09,R01,BOX-X001,A1,0,\n"
ROW = "LEG-02,LEGS01,baseline,SER,500,04/28/2017,09:00,12:00,FRZ-09,R01,BOX-X001,A2,0,ok\n"


def sheet(row: str = ROW, *, encoding: str = "utf-8", header: str = HEADER) -> bytes:
    """A legacy inventory sheet: a good row and `row`."""
    return (header + GOOD + row).encode(encoding)


def alternating(levels: int) -> str:
    """A condition whose `or` and `and` alternate `levels` deep: `a or (a and (a or (…)))`."""
    text = "sledai2k >= 6"
    for level in range(levels):
        text = f"sledai2k >= 6 {('or', 'and')[level % 2]} ({text})"
    return text


@dataclass(frozen=True)
class Bad:
    kind: str
    # {P}: a participant's code, {TUBE}: a stored tube, {FILE}: the file, {MAP}: the mapping;
    # {FIFO}: a named pipe, {PIPE}: a pipe as a process substitution names it (/dev/fd/N);
    # {HUGE}, {BIG}: files just over the import's and the small files' limits
    args: tuple[str, ...]
    expect: str  # in what the command says (stderr, and stdout for a file's fault table)
    file: bytes | None = None
    code: int | None = None  # the exit code, when one is meant (else any failing one)
    user: str = "admin"
    # "report": a file's faults, listed at length; "unbounded": a case that, were it not
    # refused, would read without end, so it runs in a process of its own with its memory
    # limited (it fails, and the machine is spared)
    tags: tuple[str, ...] = field(default=())
    mapping: bytes | None = None
    env: tuple[tuple[str, str], ...] = ()


ACCESSION = ("specimen", "accession", "-p", "{P}", "-v", "baseline", "--type", "SER")
IMPORT = ("import", "inventory", "{FILE}", "--study", "SLE")
REDCAP_FILES = Path(__file__).parent / "data" / "redcap"
REDCAP = ("import", "redcap", "--dictionary", "{FILE}", "--records", "{FILE}")
RECONCILE = ("reconcile", "BX000004")
PREVIEW = ("cohort", "preview", "--where")


def importing(path: str) -> tuple[str, ...]:
    return ("import", "inventory", path, "--study", "SLE")


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
    Bad("not a CSV at all", IMPORT, "no column 'Sample ID'", file=bytes(range(256)) * 4,
        tags=("report",)),
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
                   encoding="cp1252"), tags=("report",)),
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
    Bad("rack scan with CR-only line ends", (*RECONCILE, "{FILE}"),
        "row 3: position A1 is also on row 2", code=2, user="tech",
        file=b"Position,Tube ID\rA1,NO TUBE\rA1,NO TUBE\r"),
    # files that are not files, too large, or without end
    Bad("cell over 128 KB in a sheet", IMPORT, "line 3: field larger than field limit (131072)",
        code=2, file=sheet(ROW.replace("ok", "x" * 200_000))),
    Bad("cell over 128 KB in a REDCap export", (*REDCAP[:3],
        str(REDCAP_FILES / "redcap_data_dictionary.csv"), *REDCAP[4:]),
        "field larger than field limit (131072)", code=2,
        file=(REDCAP_FILES / "redcap_records.csv").read_bytes() + b"S-9," + b"x" * 200_000),
    Bad("cell over 128 KB in a rack scan", (*RECONCILE, "{FILE}"),
        "row 2: the scan cannot be read: field larger than field limit (131072)", code=2,
        user="tech", file=b"Position,Tube ID\nA1," + b"x" * 200_000),
    Bad("record without end in a sheet", IMPORT, "a record longer than 1,000,000 characters",
        code=2, file=(HEADER + "," * 1_100_000).encode()),
    Bad("/dev/zero as a sheet", importing("/dev/zero"),
        "cannot read the sheet /dev/zero: it is a device, not a regular file", code=2,
        tags=("unbounded",)),
    Bad("/dev/zero as a rack scan", (*RECONCILE, "/dev/zero"),
        "cannot read the rack scan /dev/zero: it is a device, not a regular file", code=2,
        user="tech", tags=("unbounded",)),
    Bad("FIFO as a sheet", importing("{FIFO}"), "it is a pipe, not a regular file", code=2),
    Bad("FIFO as REDCap records", (*REDCAP[:-1], "{FIFO}"),
        "cannot read the records export", code=2, file=sheet()),
    Bad("process substitution as a rack scan", (*RECONCILE, "{PIPE}"),
        "it is a pipe, not a regular file", code=2, user="tech"),
    Bad("folder as a sheet", importing("/"), "cannot read the sheet /: it is a folder", code=2),
    Bad("missing sheet", importing("/nonexistent/legacy.csv"),
        "cannot read the sheet /nonexistent/legacy.csv: No such file or directory", code=2),
    Bad("sheet over 1 GB", importing("{HUGE}"), "larger than the 1,000 MB allowed", code=2),
    Bad("rack scan over 10 MB", (*RECONCILE, "{BIG}"), "larger than the 10 MB allowed", code=2,
        user="tech"),
    Bad("mapping over 10 MB", (*IMPORT, "--mapping", "{BIG}"),
        "cannot read the mapping", code=2, file=sheet()),
    Bad("binary mapping", (*IMPORT, "--mapping", "{MAP}"),
        "can't decode byte 0x80", code=2, file=sheet(), mapping=bytes(range(256))),
    Bad("binary REDCap mapping", (*REDCAP, "--mapping", "{MAP}"),
        "cannot read the mapping", code=2, file=sheet(), mapping=bytes(range(256))),
    Bad("mapping nested without end", (*IMPORT, "--mapping", "{MAP}"),
        "cannot read the mapping", code=2, file=sheet(), mapping=b"x = " + b"[" * 100_000),
    # conditions without end
    Bad("5,000-digit number in a condition", (*PREVIEW, "sledai2k >= " + "9" * 5000),
        "the number 999999999999… (5,000 characters) is out of range", code=2, user="pi"),
    Bad("number beyond a float in a condition", (*PREVIEW, "sledai2k >= 1e999"),
        "the number 1e999 is out of range", code=2, user="pi"),
    Bad("2,000 nested parentheses", (*PREVIEW, "(" * 2000 + "sledai2k >= 6" + ")" * 2000),
        "the condition nests parentheses more than 50 deep", code=2, user="pi"),
    Bad("300 alternating and/or levels", (*PREVIEW, alternating(300)),
        "the condition nests parentheses more than 50 deep", code=2, user="pi"),
    Bad("condition over 10,000 characters", (*PREVIEW, " or ".join(["sledai2k >= 6"] * 800)),
        "the condition is 13,596 characters long; at most 10,000", code=2, user="pi"),
    # settings
    Bad("a word for the idle lock", ("scan", "{TUBE}"),
        'environment variable BIOBANK_IDLE_LOCK_MINUTES: idle_lock_minutes = "abc": should be',
        code=2, user="tech", env=(("BIOBANK_IDLE_LOCK_MINUTES", "abc"),)),
    Bad("scanner interval out of range", ("scan", "{TUBE}"),
        'BIOBANK_SCANNER__MAX_KEY_INTERVAL_MS: scanner.max_key_interval_ms = "9999": should '
        "be less than or equal to 500", code=2, user="tech",
        env=(("BIOBANK_SCANNER__MAX_KEY_INTERVAL_MS", "9999"),)),
    Bad("printers that are not JSON", ("scan", "{TUBE}"),
        'environment variable BIOBANK_PRINTERS: printers = "notjson": should be a JSON object',
        code=2, user="tech", env=(("BIOBANK_PRINTERS", "notjson"),)),
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
    engine = make_engine(url)
    bootstrap(engine)  # its first admin, as `biobank db upgrade` leaves a server database
    engine.dispose()
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


def _filled(args: tuple[str, ...], seeded_url: str, paths: dict[str, str]) -> list[str]:
    engine = make_engine(seeded_url)
    with engine.connect() as connection:
        participant = connection.execute(
            sa.text("SELECT code FROM participant ORDER BY id LIMIT 1")
        ).scalar()
    engine.dispose()
    values = {"{P}": participant, "{TUBE}": "SLE-0000001M", **paths}
    return [values.get(a, a) for a in args]


@contextmanager
def _paths(bad: Bad, folder: Path) -> Iterator[dict[str, str]]:
    """The files a case's placeholders name."""
    made = {name: folder / file for name, file in (
        ("{FILE}", "input.csv"), ("{MAP}", "mapping.toml"), ("{FIFO}", "fifo"),
        ("{HUGE}", "huge.csv"), ("{BIG}", "big.csv"))}  # fmt: skip
    for name, data in (("{FILE}", bad.file), ("{MAP}", bad.mapping)):
        if data is not None:
            made[name].write_bytes(data)
    os.mkfifo(made["{FIFO}"])  # nobody writes to it: a reader would wait for ever
    for name, size in (("{HUGE}", IMPORT_LIMIT + 1), ("{BIG}", SMALL_LIMIT + 1)):
        with made[name].open("wb") as file:
            file.truncate(size)  # sparse: no disk spent
    reading, writing = os.pipe()  # what `<(sleep 1d)` hands a command: a pipe that stays open
    try:
        yield {name: str(path) for name, path in made.items()} | {"{PIPE}": f"/dev/fd/{reading}"}
    finally:
        os.close(reading)
        os.close(writing)


# The CLI in a process of its own under a resource limit: RLIMIT_AS for memory, RLIMIT_FSIZE
# for a full disk (no file may grow past it; a write beyond fails instead of killing).
LIMITED = """
import resource, signal, sys
from biobank.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit, size = getattr(resource, sys.argv[1]), int(sys.argv[2])
resource.setrlimit(limit, (size, size))
sys.argv = ["biobank", *sys.argv[3:]]
main()
"""


def _limited(args: list[str], limit: str, size: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", LIMITED, limit, str(size), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _run(bad: Bad, args: list[str]) -> tuple[int, str, str]:
    """The exit code, stdout and stderr of the CLI given a case's input."""
    if "unbounded" in bad.tags:
        done = _limited(args, "RLIMIT_AS", 2 << 30)
        return done.returncode, done.stdout, done.stderr
    with _deadline(60):
        result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stdout, result.stderr


class Hung(BaseException):
    """A case that did not answer in time (a BaseException: no handler of the CLI takes it)."""


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fail a case that hangs (reading a pipe or a device without end) instead of waiting."""

    def hung(*_) -> None:
        raise Hung(f"no answer in {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("bad", CORPUS, ids=[b.kind for b in CORPUS])
def test_bad_input_is_named_and_changes_nothing(bad, seeded, tmp_path, monkeypatch):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", seeded)
    before = _state(seeded)
    with _paths(bad, tmp_path) as paths:
        args = ["-u", bad.user, *_filled(bad.args, seeded, paths)]
        with monkeypatch.context() as environment:
            for name, value in bad.env:
                environment.setenv(name, value)
            code, stdout, stderr = _run(bad, args)
    said = stderr + stdout
    assert code != 0, said
    if bad.code is not None:
        assert code == bad.code, said
    assert bad.expect in said, said
    assert "Traceback" not in said
    if "report" not in bad.tags:  # else the faults are listed, and counted on a line of its own
        assert stderr.count("\n") == 1, said
    assert _state(seeded) == before


def test_a_full_disk_during_an_import_is_one_line(seeded, tmp_path, monkeypatch):
    """No file may grow past 4 KB, as on a full disk: the import's commit and the rollback's
    burning of the serials it took are both refused."""
    if not seeded.startswith("sqlite"):
        pytest.skip("the disk that fills is the SQLite file's")
    path = tmp_path / "full.sqlite"
    with sqlite3.connect(make_url(seeded).database) as source, sqlite3.connect(path) as copy:
        source.backup(copy)
    url = f"sqlite:///{path}"
    (tmp_path / "sheet.csv").write_bytes(sheet())
    before = _state(url)
    monkeypatch.setenv("BIOBANK_DATABASE_URL", url)
    holder = sqlite3.connect(path)  # the -wal and -shm files made, as on a disk not yet full
    holder.execute("SELECT count(*) FROM specimen").fetchone()
    try:
        args = ["-u", "admin", *importing(str(tmp_path / "sheet.csv"))]
        done = _limited(args, "RLIMIT_FSIZE", 4096)
    finally:
        holder.close()
    assert done.returncode == 8, done.stderr
    said = done.stderr.splitlines()[-1]  # after the progress bar's label
    assert said.startswith("biobank: error: database error: "), done.stderr
    assert said.endswith("; nothing of this was saved"), done.stderr
    assert "Traceback" not in done.stderr
    assert _state(url) == before


@pytest.mark.parametrize(
    "raised, said",
    [
        (RecursionError("maximum recursion depth exceeded"),
         "the input is too large or too deeply nested (RecursionError)"),
        (MemoryError(), "the input is too large or too deeply nested (MemoryError)"),
        (PermissionError(errno.EACCES, "Permission denied", "/srv/lab/legacy.csv"),
         "/srv/lab/legacy.csv: Permission denied"),
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    ],
    ids=["recursion", "memory", "permission", "full disk"],
)  # fmt: skip
def test_the_last_line_of_defence_is_one_line(raised, said, monkeypatch):
    def fail() -> None:
        raise raised

    monkeypatch.setattr("biobank.cli.config_commands.config_path", fail)
    result = CliRunner().invoke(app, ["config", "path"])
    assert (result.exit_code, result.stderr) == (2, f"biobank: error: {said}\n")


@pytest.mark.parametrize("raised", [ValueError("a bug"), OSError(errno.EBADF, "Bad file")])
def test_anything_else_is_a_bug_and_keeps_its_traceback(raised, monkeypatch):
    def fail() -> None:
        raise raised

    monkeypatch.setattr("biobank.cli.config_commands.config_path", fail)
    result = CliRunner().invoke(app, ["config", "path"])
    assert result.exception is raised
