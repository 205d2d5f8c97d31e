"""Labels rendered to files: one label is the file `--out` names, several go into a folder,
and a file is recorded as rendered, not printed, so it never turns the next print into a
reprint. On the tube's screen, `p` on a printed tube points to `P`, and the history shows the
print at once."""

import asyncio
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa
import zxingcpp
from inventory import accession_tube, seed_inventory
from PIL import Image
from textual.widgets import DataTable
from tui_helpers import make_app, scan, settle, sign_in, type_text
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.models import AuditEntry, Specimen, SpecimenEvent
from biobank.services import consistency, participants, storage
from biobank.services.specimen_read import find_specimen
from biobank.settings import PrinterProfile
from tui.printing import REPRINT_KEY
from tui.screens.specimen import SpecimenScreen


@pytest.fixture
def bench(engine, admin, db_url, monkeypatch, tmp_path):
    """Two tubes, and a workstation whose printer drops PDFs into a folder."""
    layout = seed_inventory(engine, admin)
    with uow(engine) as session:
        box = layout["boxes"][0]
        tubes = [
            accession_tube(session, admin, visit="baseline", destination=box).accession_id
            for _ in "ab"
        ]
    printed = tmp_path / "printer"
    printed.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[printers.bench]\nkind = "pdf-folder"\nfolder = "{printed}"\nlabel = "cryo-1.05x0.5in"\n'
    )
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    monkeypatch.setenv("BIOBANK_CONFIG", str(config))
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(app, ["-u", "admin", "label", *map(str, args)])
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return result

    return run, tubes, engine, printed


def _events(engine, accession_id: str) -> list[tuple[str, str | None, str]]:
    """The tube's label events: kind, reason, and where the labels went."""
    query = (
        sa.select(SpecimenEvent.event_type, SpecimenEvent.reason, SpecimenEvent.details)
        .join(Specimen, Specimen.id == SpecimenEvent.specimen_id)
        .where(Specimen.accession_id == accession_id, SpecimenEvent.event_type.like("label%"))
        .order_by(SpecimenEvent.id)
    )
    with engine.connect() as connection:
        return [(kind, why, details["target"]) for kind, why, details in connection.execute(query)]


def _actions(engine, accession_id: str) -> list[str]:
    """The tube's label audit entries."""
    with uow(engine, readonly=True) as session:
        specimen_id = find_specimen(session, accession_id).id
        query = (
            sa.select(AuditEntry.action)
            .where(
                AuditEntry.entity == "specimen",
                AuditEntry.entity_id == str(specimen_id),
                AuditEntry.action.like("specimen.label%"),
            )
            .order_by(AuditEntry.id)
        )
        return list(session.execute(query).scalars())


def _decode(path) -> str:
    (found,) = zxingcpp.read_barcodes(
        Image.open(path).convert("L"), formats=zxingcpp.BarcodeFormat.QRCode
    )
    return found.text


def test_one_png_label_is_the_file_out_names_as_a_subprocess(bench, db_url, tmp_path):
    _, tubes, engine, _ = bench
    out = tmp_path / "label.png"
    done = subprocess.run(
        [sys.executable, "-m", "biobank", "-u", "admin", "label", tubes[0], "--format", "png",
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "BIOBANK_DATABASE_URL": db_url},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"label(s) -> {out}"
    assert out.is_file() and _decode(out) == tubes[0]
    assert _events(engine, tubes[0]) == [("label_rendered", None, str(out))]
    assert _actions(engine, tubes[0]) == ["specimen.label_rendered"]


def test_files_and_folders_for_png_and_svg(bench, tmp_path):
    run, tubes, engine, _ = bench
    svg = tmp_path / "one.SVG"
    run(tubes[0], "--format", "svg", "--out", svg)
    assert svg.is_file() and tubes[0] in svg.read_text()
    folder = tmp_path / "sheet"  # several labels: a folder, one file each
    run(*tubes, "--format", "png", "--out", folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{t}.png" for t in tubes)
    assert [_decode(folder / f"{t}.png") for t in tubes] == tubes
    into = tmp_path / "existing.d"  # an existing folder stays a folder, whatever its name
    into.mkdir()
    run(tubes[1], "--format", "png", "--out", into)
    assert _decode(into / f"{tubes[1]}.png") == tubes[1]
    assert [kind for kind, _, _ in _events(engine, tubes[1])] == ["label_rendered"] * 2


@pytest.mark.parametrize(
    ("fmt", "out", "several", "error"),
    [
        ("png", "label.pdf", False, "--out {out}: png labels go to a .png file, not .pdf"),
        ("svg", "label.png", False, "--out {out}: svg labels go to a .svg file, not .png"),
        ("png", "labels.png", True, "--out {out}: 2 labels go into a folder, one .png file each"),
        ("pdf", "labels.png", True, "--out {out}: pdf labels go to a .pdf file, not .png"),
        ("zpl", "labels.pdf", False, "--out {out}: zpl labels go to a .zpl file, not .pdf"),
    ],
)
def test_an_out_path_that_does_not_fit_the_format_is_one_line(
    bench, tmp_path, fmt, out, several, error
):
    run, tubes, engine, _ = bench
    path = tmp_path / out
    refused = run(*(tubes if several else tubes[:1]), "--format", fmt, "--out", path, code=2)
    assert refused.stderr.strip() == "biobank: error: " + error.format(out=path)
    assert list(tmp_path.glob("label*")) == [] and _events(engine, tubes[0]) == []


def test_a_file_is_not_a_print_and_never_makes_a_reprint(bench, admin, tmp_path):
    """Rendered first, the label's first print needs no reason; printed, a file still needs
    none, while the next print does."""
    run, tubes, engine, printed = bench
    tube = tubes[0]
    sheet = tmp_path / "sheet.pdf"
    run(tube, "--format", "pdf", "--out", sheet)
    zpl = run(tube, "--format", "zpl").stdout
    assert zpl.startswith("^XA") and f"QM,A{tube}" in zpl
    run(tube, "--printer", "bench")  # not a reprint: nothing was printed yet
    (job,) = printed.iterdir()
    refused = run(tube, "--printer", "bench", code=2)
    assert "printed before: a reprint needs a reason" in refused.stderr
    run(tube, "--format", "png", "--out", tmp_path / "again.png")  # a file needs no reason
    run(tube, "--printer", "bench", "--reason", "smudged")
    assert [(kind, reason) for kind, reason, _ in _events(engine, tube)] == [
        ("label_rendered", None),
        ("label_rendered", None),
        ("label_printed", None),
        ("label_rendered", None),
        ("label_printed", "smudged"),
    ]
    assert [target for _, _, target in _events(engine, tube)][:3] == [
        str(sheet), "stdout", str(job),
    ]  # fmt: skip
    assert _actions(engine, tube) == [
        "specimen.label_rendered", "specimen.label_rendered", "specimen.label_printed",
        "specimen.label_rendered", "specimen.label_printed",
    ]  # fmt: skip
    with uow(engine, readonly=True) as session:  # an entry naming a file is not a row's
        assert consistency.check_consistency(session, actor=admin).ok


def _history(app) -> list[tuple[str, str]]:
    """The tube screen's history: each event and its reason."""
    table = app.screen.query_one("#history", DataTable)
    rows = [table.get_row_at(i) for i in range(table.row_count)]
    return [(str(row[1]), str(row[6])) for row in rows]


def test_the_tube_screen_prints_once_points_to_its_reprint_key_and_shows_each_print(
    db_url, admin, tmp_path
):
    assert any(
        b.key == REPRINT_KEY and b.action == "reprint_label" for b in SpecimenScreen.BINDINGS
    )

    async def scenario():
        jobs = tmp_path / "printer"
        jobs.mkdir()
        printer = PrinterProfile(kind="pdf-folder", folder=jobs)
        app = make_app(db_url, admin, printers={"bench": printer}, default_printer="bench")
        engine = app.database.engine
        with uow(engine) as session:
            box = storage.add_unit(session, actor=admin, kind="box", name="Bench box", grid=(9, 9))
            code = participants.list_participants(session, actor=admin, limit=1)[0].code
            tube = accession_tube(session, admin, code, destination=box.barcode).accession_id
        async with app.run_test(size=(100, 30)) as pilot:
            await sign_in(app, pilot)
            await scan(app, pilot, tube)
            assert isinstance(app.screen, SpecimenScreen)
            await pilot.press("p")
            await settle(app, pilot)
            assert _history(app)[-1] == ("label_printed", "")  # at once, no refresh asked
            await pilot.press("p")
            await settle(app, pilot)
            notice = list(app._notifications)[-1]
            assert (notice.title, notice.message) == (
                "Not printed",
                f"The label of {tube} was printed before: press P to reprint it (it asks why)",
            )
            assert len(list(jobs.iterdir())) == 1  # nothing printed
            await pilot.press(REPRINT_KEY)
            await settle(app, pilot)
            await type_text(app, pilot, "smudged")
            events = _history(app)
            assert [e for e in events if e[0] == "label_printed"] == [
                ("label_printed", ""),
                ("label_printed", "smudged"),
            ]
            assert len(list(jobs.iterdir())) == 2
        engine.dispose()

    asyncio.run(scenario())
