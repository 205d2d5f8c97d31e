"""The installed `biobank` command in a real terminal (tmux): sign in, scan, see the tube, quit.

Keys reach the application through a pseudo-terminal as they would from a keyboard and a
keyboard-wedge scanner, so this catches what the headless tests cannot: the entry point, the
terminal driver, and the timing that tells a person from a scanner. tmux runs its own server
on a socket in the test's directory, so the developer's sessions are never touched.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIOBANK = Path(sys.executable).parent / "biobank"
HUMAN_GAP = 0.12  # seconds between a person's keys
WAIT = 20.0  # seconds for a screen to show


@pytest.fixture
def tmux(tmp_path):
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is not installed: CI runs the terminal smoke test")
        pytest.skip("the terminal smoke test needs tmux")
    socket = str(tmp_path / "tmux.sock")
    # The server passes its environment on; a terminal's size comes from the terminal.
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["tmux", "-S", socket, "-f", os.devnull, *args],
            env=environment,
            capture_output=True,
            text=True,
            check=check,
        )

    yield run
    run("kill-server", check=False)


def _biobank(env: dict, *args: str) -> str:
    done = subprocess.run(
        [str(BIOBANK), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _screen(tmux) -> str:
    return tmux("capture-pane", "-p", "-t", "smoke").stdout


def _pane(tmux, variable: str) -> str:
    return tmux("display-message", "-p", "-t", "smoke", f"#{{{variable}}}").stdout.strip()


def _wait_for(tmux, *texts: str) -> str:
    deadline = time.monotonic() + WAIT
    while True:
        screen = _screen(tmux)
        if all(text in screen for text in texts) or time.monotonic() > deadline:
            return screen
        time.sleep(0.2)


def _type(tmux, text: str) -> None:
    """A person typing: one key at a time, then Enter."""
    for character in text:
        tmux("send-keys", "-t", "smoke", "-l", character)
        time.sleep(HUMAN_GAP)
    tmux("send-keys", "-t", "smoke", "Enter")


@pytest.mark.slow
def test_sign_in_and_scan_in_a_real_terminal(tmux, tmp_path):
    env = dict(os.environ)
    env["BIOBANK_DATABASE_URL"] = f"sqlite:///{tmp_path / 'biobank.db'}"
    env["BIOBANK_CONFIG"] = str(tmp_path / "config.toml")
    _biobank(env, "demo", "-n", "5")
    code = json.loads(_biobank(env, "-u", "admin", "participant", "list", "--json"))[0]["code"]
    tube = _biobank(
        env, "-u", "admin", "specimen", "accession", "-p", code, "-v", "baseline",
        "--type", "SER", "-q", "500", "--collected", "2025-03-01T08:10", "--force",
    ).strip()  # fmt: skip

    variables = [f"-e{name}={env[name]}" for name in ("BIOBANK_DATABASE_URL", "BIOBANK_CONFIG")]
    status = tmp_path / "exit-status"
    command = f"{shlex.quote(str(BIOBANK))}; echo $? > {shlex.quote(str(status))}"
    tmux(
        "new-session", "-d", "-s", "smoke", "-x", "100", "-y", "30", *variables, command,
        ";", "set-option", "-w", "-t", "smoke", "remain-on-exit", "on",
    )  # fmt: skip
    screen = _wait_for(tmux, "Sign in, or scan your badge")
    assert "Sign in, or scan your badge" in screen, screen
    _type(tmux, "tech")
    _type(tmux, "1111")
    screen = _wait_for(tmux, "Signed in as tech")
    assert "Signed in as tech" in screen, screen

    tmux("send-keys", "-t", "smoke", tube, "Enter")  # one burst, as a scanner types
    screen = _wait_for(tmux, f"Participant {code}", "Location not placed")
    assert f"{tube}  SER primary" in screen and f"Participant {code}" in screen, screen
    assert "Location not placed" in screen, screen
    assert "Scan, or type an ID" in screen, "the scan was typed into the scan box:\n" + screen

    tmux("send-keys", "-t", "smoke", "C-q")
    deadline = time.monotonic() + WAIT
    while _pane(tmux, "pane_dead") != "1":
        assert time.monotonic() < deadline, "ctrl+q did not quit:\n" + _screen(tmux)
        time.sleep(0.2)
    assert status.read_text().strip() == "0", _screen(tmux)
