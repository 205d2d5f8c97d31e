"""Files only their owner reads, and files biobank never takes the place of.

The embedded database holds names and MRNs: its folder is made 0700 and its files (with the
-wal and -shm SQLite keeps beside it) 0600, whatever the umask. A settings file holding a
personal token is refused while other accounts may read it. A backup never replaces a device,
a pipe or a folder (as root, `backup /dev/null --force` would have made /dev/null a file).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from biobank.cli import app
from biobank.settings import config_path

BIOBANK = Path(sys.executable).with_name("biobank")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_database_is_its_owners_alone_under_umask_022():
    folder = Path(os.environ["XDG_DATA_HOME"]) / "biobank"
    database = folder / "biobank.db"
    files = [database, folder / "biobank.db-wal", folder / "biobank.db-shm"]
    # set-pin opens (and so makes) the database, then waits for the PIN on stdin, its
    # connection open: the -wal and -shm files are there until it ends
    command = ["sh", "-c", 'umask 022 && exec "$@"', "sh", str(BIOBANK), "user", "set-pin",
               "admin", "--pin-stdin"]  # fmt: skip
    running = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not all(path.exists() for path in files) and running.poll() is None:
            assert time.monotonic() < deadline, "the database was not made"
            time.sleep(0.05)
        modes = {path.name: oct(_mode(path)) for path in [folder, *files]}
        _, err = running.communicate("1234\n", timeout=60)
    finally:
        running.kill()
    assert running.returncode == 0, err
    assert modes == {
        "biobank": "0o700",
        "biobank.db": "0o600",
        "biobank.db-wal": "0o600",
        "biobank.db-shm": "0o600",
    }


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_token_in_a_settings_file_others_may_read_is_refused(mode):
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('token = "bbk_not-for-your-eyes"\n')
    path.chmod(mode)
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"biobank: error: the settings file {path} holds a token and other accounts may read "
        f"or change it: chmod 600 {path}\n"
    )
    assert "not-for-your-eyes" not in result.output

    path.chmod(0o600)
    assert CliRunner().invoke(app, ["config", "show"]).exit_code == 0


def test_a_settings_file_without_a_token_may_be_read_by_others():
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('workstation = "bench-2"\n')
    path.chmod(0o644)
    result = CliRunner().invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert '"workstation": "bench-2"' in result.stdout


def _special_files(folder: Path) -> list[Path]:
    fifo = folder / "fifo"
    os.mkfifo(fifo)
    return [fifo, Path("/dev/null"), folder]


def test_a_backup_never_replaces_a_device_a_pipe_or_a_folder(tmp_path, monkeypatch):
    replaced = []

    def replace(source, target):  # were the refusal gone, /dev/null must still be spared
        replaced.append(target)
        raise AssertionError(f"{target} was to be replaced")

    assert CliRunner().invoke(app, ["user", "list"]).exit_code == 0  # the database made
    monkeypatch.setattr(os, "replace", replace)
    for path in _special_files(tmp_path):
        before = path.stat()
        result = CliRunner().invoke(app, ["-u", "admin", "backup", str(path), "--force"])
        assert (result.exit_code, result.stderr) == (
            2,
            f"biobank: error: {path} is not a regular file (a device, a pipe or a folder): "
            "give a file's path\n",
        )
        after = path.stat()
        assert (after.st_ino, after.st_mode, after.st_rdev) == (
            before.st_ino,
            before.st_mode,
            before.st_rdev,
        )
    assert replaced == []
