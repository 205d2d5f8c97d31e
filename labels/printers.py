"""Sending labels to a workstation's printer profile (`PrinterProfile` in biobank/settings.py):
raw ZPL to a Zebra on TCP port 9100, a PDF to a CUPS queue through `lp`, or a PDF into a folder
that something else prints from."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from biobank.settings import PrinterProfile
from labels.errors import PrinterError
from labels.model import Label
from labels.pdf import render_pdf
from labels.templates import template
from labels.zpl import render_zpl

TIMEOUT_SECONDS = 10


def print_labels(profile: PrinterProfile, labels: Sequence[Label]) -> str:
    """Render `labels` for `profile` and send them; returns where they went."""
    return send(profile, render(profile, labels))


def render(profile: PrinterProfile, labels: Sequence[Label]) -> bytes:
    """What `profile`'s printer takes: ZPL for a Zebra, otherwise a PDF of its template."""
    stock = template(profile.label)
    if profile.kind == "zpl-tcp":
        return render_zpl(labels, stock, dpi=profile.dpi).encode()
    return render_pdf(labels, stock)


def send(profile: PrinterProfile, payload: bytes) -> str:
    """Deliver a rendered payload; returns where it went, or raises `PrinterError`."""
    if profile.kind == "zpl-tcp":
        return _to_socket(_required(profile, "host"), profile.port, payload)
    if profile.kind == "cups":
        return _to_queue(_required(profile, "queue"), payload)
    return _to_folder(_required(profile, "folder"), payload)


def _required(profile: PrinterProfile, field: str):
    value = getattr(profile, field)
    if not value:
        raise PrinterError(f"a {profile.kind} printer profile needs a {field}", field=field)
    return value


def _to_socket(host: str, port: int, payload: bytes) -> str:
    address = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_SECONDS) as connection:
            connection.sendall(payload)
            connection.shutdown(socket.SHUT_WR)
    except OSError as error:
        raise PrinterError(
            f"printer {address} is unreachable: {error.strerror or error}",
            field="host",
            value=address,
        ) from None
    return address


def _to_queue(queue: str, payload: bytes) -> str:
    lp = shutil.which("lp")
    if lp is None:
        raise PrinterError(
            f"cannot print to CUPS queue {queue}: the `lp` command is missing "
            "(install the CUPS client, e.g. the cups-client package)",
            field="queue",
            value=queue,
        )
    try:
        done = subprocess.run(
            [lp, "-d", queue, "-t", "biobank labels"],
            input=payload,
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PrinterError(
            f"`lp -d {queue}` did not finish in {TIMEOUT_SECONDS} s", field="queue", value=queue
        ) from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
        raise PrinterError(f"`lp -d {queue}` failed: {reason}", field="queue", value=queue)
    return f"CUPS queue {queue}: {done.stdout.decode(errors='replace').strip()}"


def _to_folder(folder: Path, payload: bytes) -> str:
    """Written under a hidden name, then renamed: a folder watcher never sees half a file."""
    name = f"labels-{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}.pdf"
    partial = folder / f".{name}.part"
    try:
        with partial.open("xb") as out:
            out.write(payload)
        partial.rename(folder / name)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise PrinterError(
            f"cannot write labels into {folder}: {error.strerror or error}",
            field="folder",
            value=folder,
        ) from None
    return str(folder / name)
