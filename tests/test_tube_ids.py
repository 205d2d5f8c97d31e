"""A tube ID typed or scanned wrong, at every command that takes one: a misread (its check
character fails) is said to be one, with exit 2; an ID we could have issued but did not is
"no specimen", with exit 4."""

import json
import os
import subprocess
import sys

import pytest

from biobank.domain.identifiers import ALPHABET, check_specimen_id, format_specimen_id

# {tube}: the ID under test; {real}: a real tube; {box}: an empty box
COMMANDS = [
    ("specimen", "show", "{tube}"),
    ("specimen", "show", "{tube}", "--json"),
    ("specimen", "lineage", "{tube}"),
    ("specimen", "aliquot", "{tube}", "-n", "1", "--volume", "10"),
    ("specimen", "derive", "{tube}", "--type", "DNA", "-q", "1", "--unit", "ug"),
    ("specimen", "pool", "{real}:10", "{tube}:10"),
    ("specimen", "move", "{tube}", "{box}"),
    ("specimen", "check-out", "{tube}"),
    ("specimen", "check-in", "{tube}"),
    ("specimen", "thaw", "{tube}"),
    ("specimen", "deplete", "{tube}"),
    ("specimen", "dispose", "{tube}", "--reason", "cracked"),
    ("specimen", "distribute", "{tube}", "--to", "Lab B", "--use", "FUTURE_RESEARCH"),
    ("specimen", "release", "{tube}", "--reason", "done"),
    ("phenotype", "at", "{tube}"),
    ("consent", "pull", "{tube}"),
    ("label", "{tube}", "--format", "zpl"),
]


def _misread(accession_id: str) -> str:
    """The ID with its check character read wrong."""
    wrong = next(c for c in ALPHABET[:36] if c != accession_id[-1])
    misread = accession_id[:-1] + wrong
    assert check_specimen_id(misread) == "misread"
    return misread


def _unissued(prefix: str) -> str:
    return next(i for s in range(9_999_999, 0, -1) if (i := format_specimen_id(prefix, s)))


@pytest.fixture
def tubes(demo_cli) -> dict[str, str]:
    real = demo_cli("-u", "admin", "specimen", "accession", "-p", _participant(demo_cli),
                    "--type", "SER", "-q", "500").stdout.strip()  # fmt: skip
    box = demo_cli("-u", "admin", "storage", "add", "box", "Bench", "--grid", "9x9").stdout.strip()
    return {
        "real": real,
        "box": box,
        "misread": _misread(real),
        "unissued": _unissued(real.split("-")[0]),
    }


def _participant(demo_cli) -> str:
    return json.loads(demo_cli("-u", "admin", "participant", "list", "--json").stdout)[0]["code"]


def _args(command: tuple[str, ...], tubes: dict[str, str], tube: str) -> list[str]:
    return [part.format(tube=tube, real=tubes["real"], box=tubes["box"]) for part in command]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_misread_is_a_misread_and_an_unknown_id_is_no_specimen(demo_cli, tubes, command):
    misread = tubes["misread"]
    typed = misread.lower() if command[1] == "show" else misread  # as Caps Lock leaves it
    result = demo_cli("-u", "admin", *_args(command, tubes, typed), code=2)
    assert result.stderr.strip() == (
        f"biobank: error: MISREAD: {misread} fails its check character; scan again or type the ID"
    )
    assert result.stdout == ""

    unissued = tubes["unissued"]
    result = demo_cli("-u", "admin", *_args(command, tubes, unissued), code=4)
    said = "is not reserved" if command[1] == "release" else f"no specimen '{unissued}'"
    assert said in result.stderr and "MISREAD" not in result.stderr


def test_a_legacy_id_shaped_like_a_misread_still_finds_its_tube(demo_cli):
    """An old system's label may look like one of our IDs with a wrong check character."""
    legacy = _misread(format_specimen_id("OLD", 1))
    made = demo_cli("-u", "admin", "specimen", "accession", "-p", _participant(demo_cli),
                    "--type", "SER", "-q", "500", "--legacy-id", legacy).stdout.strip()  # fmt: skip
    shown = json.loads(demo_cli("-u", "admin", "specimen", "show", legacy, "--json").stdout)
    assert shown["specimen"]["accession_id"] == made


def test_as_a_subprocess(tmp_path):
    env = {**os.environ, "BIOBANK_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}

    def biobank(*args):
        return subprocess.run(
            [sys.executable, "-m", "biobank", "-u", "admin", *args],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    assert biobank("demo", "--participants", "2").returncode == 0
    code = json.loads(biobank("participant", "list", "--json").stdout)[0]["code"]
    real = biobank("specimen", "accession", "-p", code, "--type", "SER", "-q", "5").stdout.strip()
    misread = _misread(real)
    result = biobank("specimen", "show", misread)
    assert (result.returncode, result.stdout) == (2, "")
    said = f"MISREAD: {misread} fails its check character; scan again or type the ID"
    assert result.stderr == f"biobank: error: {said}\n"
    result = biobank("specimen", "show", _unissued(real.split("-")[0]))
    assert result.returncode == 4 and "no specimen" in result.stderr
    assert "Traceback" not in result.stderr
