"""Labels from the inventory: files, a Zebra-like printer on loopback, kits, and reprints."""

import json
import socket
import threading

import pytest
import sqlalchemy as sa
import zxingcpp
from inventory import seed_inventory, serum
from PIL import Image
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.services import scan, users


class Listener:
    """A stand-in Zebra printer on 127.0.0.1 that keeps what it receives."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.server.accept()
        with connection:
            while chunk := connection.recv(65536):
                self.received += chunk

    def close(self) -> str:
        self.thread.join(timeout=5)
        self.server.close()
        return self.received.decode()


@pytest.fixture
def lab(engine, admin, db_url, monkeypatch, tmp_path):
    layout = seed_inventory(engine, admin)
    with uow(engine) as session:
        tubes = [serum(session, admin, destination=layout["boxes"][0]).accession_id for _ in "ab"]
        users.add_user(session, actor=admin, username="pi", role="pi")
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(app, ["-u", "admin", *args])
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return result

    return run, tubes, layout, engine


def _printed(engine, accession_id) -> list[str | None]:
    with engine.connect() as connection:
        return (
            connection.execute(
                sa.text(
                    "SELECT e.reason FROM specimen_event e JOIN specimen s ON s.id = e.specimen_id "
                    "WHERE s.accession_id = :a AND e.event_type = 'label_printed' ORDER BY e.id"
                ),
                {"a": accession_id},
            )
            .scalars()
            .all()
        )


def test_specimen_labels_to_a_pdf_and_reprints_need_a_reason(lab, tmp_path, monkeypatch):
    """A PDF sheet is a file, not a print; the printer's first print needs no reason, its
    second does."""
    import pypdfium2

    run, tubes, _, engine = lab
    sheet = tmp_path / "labels.pdf"
    run("label", *tubes, "--format", "pdf", "--out", str(sheet))
    assert len(pypdfium2.PdfDocument(sheet)) == 1  # two labels on one letter sheet
    assert _printed(engine, tubes[0]) == []
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f'[printers.sheet]\nkind = "pdf-folder"\nfolder = "{jobs}"\n')
    monkeypatch.setenv("BIOBANK_CONFIG", str(config))
    run("label", tubes[0], "--printer", "sheet")
    assert _printed(engine, tubes[0]) == [None]
    refused = run("label", tubes[0], "--printer", "sheet", code=2)
    assert "reprint needs a reason" in refused.stderr and len(list(jobs.iterdir())) == 1
    run("label", tubes[0], "--printer", "sheet", "--reason", "label smudged")
    assert _printed(engine, tubes[0]) == [None, "label smudged"]


def test_box_labels_as_png_decode_to_the_barcode(lab, tmp_path):
    run, _, layout, _ = lab
    box = layout["boxes"][0]
    run("label", "--box", box, "--format", "png", "--out", str(tmp_path / "png"))
    (decoded,) = zxingcpp.read_barcodes(Image.open(tmp_path / "png" / f"{box}.png"))
    assert decoded.text == box


def test_kit_labels_reserve_ids_and_go_to_a_zebra(lab, tmp_path, monkeypatch):
    run, _, _, engine = lab
    printer = Listener()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[printers.zebra]\nkind = "zpl-tcp"\nhost = "127.0.0.1"\nport = {printer.port}\n'
        'dpi = 203\nlabel = "cryo-1.05x0.5in"\n'
    )
    monkeypatch.setenv("BIOBANK_CONFIG", str(config))
    result = run(
        "label", "--kit", "baseline", "--participant", "SLE-0001", "--count", "3",
        "--type", "SER", "--printer", "zebra",
    )  # fmt: skip
    zpl = printer.close()
    assert zpl.count("^XA") == 3 and zpl.count("^XZ") == 3
    kit_ids = result.stderr.split("kit IDs: ")[1].splitlines()[0].split()
    assert len(kit_ids) == 3 and all(f"QM,A{i}" in zpl for i in kit_ids)
    with uow(engine) as session:
        from biobank.services.identity import actor_for

        admin = actor_for(session, username="admin", workstation="t")
        assert scan.resolve_scan(session, actor=admin, scanned=kit_ids[0]).kind == "kit"
    unknown = run("label", "--kit", "baseline", "--participant", "SLE-0001", "-p", "nope", code=2)
    assert "no printer profile 'nope'" in unknown.stderr


def test_zpl_to_stdout_and_who_may_print(lab, monkeypatch):
    run, tubes, _, _ = lab
    zpl = run("label", tubes[1], "--format", "zpl", "--dpi", "203").stdout
    assert zpl.startswith("^XA") and zpl.count("^XZ") == 1 and "^PW213" in zpl
    result = CliRunner().invoke(app, ["-u", "pi", "label", tubes[1], "--format", "zpl"])
    assert result.exit_code == 3 and "may not print labels" in result.stderr
    assert (
        json.loads(run("specimen", "show", tubes[1], "--json").stdout)["events"][-1]["event_type"]
        == "label_rendered"  # ZPL on stdout is a file, not a print
    )
