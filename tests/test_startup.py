"""Start-up failures as a user meets them: a settings file with a mistake, a database folder
that cannot be made, a read-only one, a database file that cannot take its schema's upgrade.
A command, and the workstation started in a real pseudo-terminal, each say it in one line with
its exit code (2 a bad setting, 8 a database that cannot be opened), never a traceback."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from biobank.settings import config_path

BIOBANK = (sys.executable, "-m", "biobank")


def _unprivileged() -> tuple[str, ...]:
    """What runs a command without root's power to write where the modes forbid it, so that
    a read-only folder is read-only to it: nothing for another user; for root, `setpriv`
    dropping that power."""
    if os.geteuid() != 0:
        return ()
    drop = ("setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search")
    if shutil.which("setpriv") is None or subprocess.run([*drop, "true"]).returncode != 0:
        pytest.skip("as root, a read-only folder is only read-only with setpriv")
    return drop


def _command(*args: str, url: str, as_: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    environment = {**os.environ, "BIOBANK_DATABASE_URL": url}
    return subprocess.run(
        [*as_, *BIOBANK, *args], env=environment, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _workstation(url: str, as_: tuple[str, ...] = ()) -> tuple[int, str]:
    """`biobank` with no command, in an 80×24 pseudo-terminal as a person starts it: its exit
    code and all it wrote to the terminal."""
    terminal, its_side = pty.openpty()
    fcntl.ioctl(its_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    environment = {**os.environ, "BIOBANK_DATABASE_URL": url, "TERM": "xterm-256color"}
    process = subprocess.Popen(
        [*as_, *BIOBANK], stdin=its_side, stdout=its_side, stderr=its_side, env=environment,
        start_new_session=True,
    )  # fmt: skip
    os.close(its_side)
    written = bytearray()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([terminal], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # the terminal's last writer has gone
                break
            if not chunk:
                break
            written += chunk
        return process.wait(timeout=30), written.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
        os.close(terminal)


def _said_once(written: str, line: str) -> None:
    assert line in written, written[-2000:]
    assert written.count("biobank: error:") == 1 and "Traceback" not in written


def test_a_database_folder_that_cannot_be_made():
    url = "sqlite:////proc/nope/bb.db"
    line = (
        f"biobank: error: cannot open the database at {url}: its folder /proc/nope cannot be "
        "made (No such file or directory)"
    )
    for args in (("db", "upgrade"), ("user", "list"), ("db", "current")):
        result = _command(*args, url=url)
        assert (result.returncode, result.stdout, result.stderr) == (8, "", f"{line}\n")
    code, written = _workstation(url)
    assert code == 8
    _said_once(written, line)


@pytest.fixture
def database(tmp_path) -> tuple[Path, str]:
    """A new SQLite database in a folder of its own, and its URL."""
    path = tmp_path / "bank" / "biobank.db"
    url = f"sqlite:///{path}"
    assert _command("db", "upgrade", url=url).returncode == 0
    yield path, url
    for made in (path.parent, *path.parent.iterdir()):  # for the test's folder to be removed
        made.chmod(0o700)


def test_a_read_only_database_folder(database):
    as_ = _unprivileged()
    path, url = database
    path.parent.chmod(0o500)
    line = (
        f"biobank: error: cannot open the database at {url}: its folder {path.parent} is not "
        "writable (SQLite writes its journal there)"
    )
    for args in (("user", "list"), ("db", "upgrade")):
        result = _command(*args, url=url, as_=as_)
        assert (result.returncode, result.stderr) == (8, f"{line}\n")
    code, written = _workstation(url, as_)
    assert code == 8
    _said_once(written, line)


def test_a_database_file_that_cannot_take_its_upgrade(tmp_path, database):
    """A read-only database behind this version's schema: the embedded database is upgraded
    as it opens, and the upgrade's first write is refused."""
    as_ = _unprivileged()
    path, url = database
    assert _command("db", "downgrade", "0009", "--yes", url=url).returncode == 0
    path.chmod(0o400)
    line = f"biobank: error: cannot open the database at {url}: attempt to write a readonly"
    for args in (("user", "list"), ("db", "upgrade")):
        result = _command(*args, url=url, as_=as_)
        assert result.returncode == 8 and result.stderr.startswith(line), result.stderr
        assert result.stderr.count("\n") == 1
    code, written = _workstation(url, as_)
    assert code == 8
    _said_once(written, line)


def test_a_settings_mistake_stops_the_workstation_in_one_line(tmp_path):
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('[printers.bench]\nkind = "zpl"\n')
    line = (
        f'biobank: error: settings file {path}, line 2: printers.bench.kind = "zpl": should '
        "be 'zpl-tcp', 'cups' or 'pdf-folder'"
    )
    url = f"sqlite:///{tmp_path / 'biobank.db'}"
    code, written = _workstation(url)
    assert code == 2
    _said_once(written, line)
    result = _command("tui", url=url)
    assert (result.returncode, result.stderr) == (2, f"{line}\n")
