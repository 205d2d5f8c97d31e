"""Printing: ZPL reaches a Zebra-like listener on loopback, one format per label; a PDF goes to
`lp` or into a folder; every failure names the printer and says what is wrong."""

from __future__ import annotations

import re
import socket
import stat
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pypdfium2
import pytest

from biobank.settings import PrinterProfile
from labels import (
    LabelError,
    PrinterError,
    SpecimenLabel,
    print_labels,
    render,
    send,
)

LABELS = [
    SpecimenLabel(f"SLE-000000{n}{check}", "SER", date(2025, 3, 1), participant="SLE-7KQ3MX")
    for n, check in ((1, "M"), (2, "K"), (3, "I"))
]
ZPL_FORMAT = re.compile(
    r"\^XA\^CI28\^PW\d+\^LL\d+\^LH0,0\^BY2,3,10\^FO\d+,\d+\^BQN,2,\d+,Q,7\^FDQM,A([0-9A-Z-]+)\^FS"
    r"(?:\^FO\d+,\d+\^A0N,\d+,\d+\^FH\^FD[^^~]*\^FS)+\^XZ\n"
)


class Printer:
    """A Zebra stand-in on 127.0.0.1: takes one connection and keeps what it was sent."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(10)
        self.port = self.server.getsockname()[1]
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.server.accept()
        with connection:
            connection.settimeout(10)
            while chunk := connection.recv(65536):
                self.received += chunk

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.server.close()


@pytest.fixture
def printer() -> Iterator[Printer]:
    listening = Printer()
    yield listening
    listening.close()


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def test_zpl_reaches_the_printer_one_format_per_label(printer):
    profile = PrinterProfile(kind="zpl-tcp", host="127.0.0.1", port=printer.port, dpi=300)
    assert print_labels(profile, LABELS) == f"127.0.0.1:{printer.port}"
    printer.close()
    zpl = printer.received.decode()
    formats = list(ZPL_FORMAT.finditer(zpl))
    assert "".join(f.group(0) for f in formats) == zpl
    assert [f.group(1) for f in formats] == [label.id for label in LABELS]
    assert zpl.count("^XA") == zpl.count("^XZ") == len(LABELS)


def test_an_unreachable_printer_is_named():
    port = _free_port()
    profile = PrinterProfile(kind="zpl-tcp", host="127.0.0.1", port=port)
    with pytest.raises(
        PrinterError, match=re.escape(f"printer 127.0.0.1:{port} is unreachable")
    ) as raised:
        print_labels(profile, LABELS)
    assert raised.value.exit_code == 10


@pytest.mark.parametrize(
    ("kind", "field"), [("zpl-tcp", "host"), ("cups", "queue"), ("pdf-folder", "folder")]
)
def test_a_profile_missing_its_address_says_which(kind, field):
    with pytest.raises(PrinterError, match=f"needs a {field}") as raised:
        send(PrinterProfile(kind=kind), b"payload")
    assert raised.value.field == field


def test_a_profile_naming_an_unknown_template_is_refused():
    with pytest.raises(LabelError, match="unknown label template 'avery-9999'"):
        render(PrinterProfile(label="avery-9999"), LABELS)


def _fake_lp(folder: Path, body: str) -> None:
    lp = folder / "lp"
    lp.write_text(f"#!/bin/sh\n{body}\n")
    lp.chmod(lp.stat().st_mode | stat.S_IXUSR)


def test_cups_gets_the_pdf_through_lp(tmp_path, monkeypatch):
    got = tmp_path / "got"
    _fake_lp(
        tmp_path,
        f'echo "$@" > {got}.args; /bin/cat > {got}.pdf; echo "request id is labels-7 (1 file(s))"',
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    profile = PrinterProfile(kind="cups", queue="freezer-room", label="letter-4x20")
    assert (
        print_labels(profile, LABELS)
        == "CUPS queue freezer-room: request id is labels-7 (1 file(s))"
    )
    assert Path(f"{got}.args").read_text().split()[:2] == ["-d", "freezer-room"]
    assert len(pypdfium2.PdfDocument(Path(f"{got}.pdf").read_bytes())) == 1


def test_lp_refusing_the_job_is_reported_with_its_reason(tmp_path, monkeypatch):
    _fake_lp(tmp_path, 'echo "lp: The printer or class does not exist." >&2; exit 1')
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrinterError, match="printer or class does not exist") as raised:
        print_labels(PrinterProfile(kind="cups", queue="nowhere"), LABELS)
    assert raised.value.value == "nowhere"


def test_a_missing_lp_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrinterError, match="`lp` command is missing"):
        print_labels(PrinterProfile(kind="cups", queue="freezer-room"), LABELS)


def test_a_pdf_folder_gets_one_whole_file_per_job(tmp_path):
    profile = PrinterProfile(kind="pdf-folder", folder=tmp_path, label="cryo-1.05x0.5in")
    first = Path(print_labels(profile, LABELS))
    second = Path(print_labels(profile, LABELS[:1]))
    assert sorted(tmp_path.iterdir()) == sorted([first, second])
    assert first.parent == tmp_path and first.suffix == ".pdf"
    assert len(pypdfium2.PdfDocument(first.read_bytes())) == len(LABELS)
    assert len(pypdfium2.PdfDocument(second.read_bytes())) == 1


def test_a_missing_folder_is_named(tmp_path):
    folder = tmp_path / "not-mounted"
    with pytest.raises(PrinterError, match=r"cannot write labels into .*not-mounted") as raised:
        print_labels(PrinterProfile(kind="pdf-folder", folder=folder), LABELS)
    assert raised.value.field == "folder"
