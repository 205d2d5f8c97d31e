"""Settings: defaults in the platform dirs, a TOML file, and BIOBANK_* variables over it; each
mistake in them (a bad value, a misspelt key, a file that is not TOML) one line, exit 2."""

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from biobank.cli import app
from biobank.errors import ValidationError
from biobank.settings import config_path, load_settings


def test_defaults_live_in_the_platform_dirs():
    settings = load_settings()
    data_home = Path(os.environ["XDG_DATA_HOME"])
    assert settings.database_url == f"sqlite:///{data_home / 'biobank' / 'biobank.db'}"
    assert settings.is_embedded
    assert settings.workstation
    assert settings.scanner.max_key_interval_ms == 35


def test_file_then_environment(monkeypatch):
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        'database_url = "postgresql://db.example/biobank"\n'
        'workstation = "bench-3"\n'
        '[scanner]\nprefix = "]Q1"\n'
        '[printers.freezer-room]\nkind = "zpl-tcp"\nhost = "10.1.2.3"\ndpi = 300\n'
    )
    settings = load_settings()
    assert settings.database_url == "postgresql://db.example/biobank"
    assert not settings.is_embedded
    assert settings.workstation == "bench-3"
    assert settings.scanner.prefix == "]Q1"
    assert settings.printers["freezer-room"].dpi == 300

    monkeypatch.setenv("BIOBANK_WORKSTATION", "bench-4")
    monkeypatch.setenv("BIOBANK_SCANNER__MAX_KEY_INTERVAL_MS", "20")
    settings = load_settings()
    assert settings.workstation == "bench-4"
    assert settings.scanner.max_key_interval_ms == 20
    assert settings.scanner.prefix == "]Q1"


def test_config_show(monkeypatch):
    monkeypatch.setenv("BIOBANK_WORKSTATION", "bench-9")
    monkeypatch.setenv("BIOBANK_TOKEN", "bbk_not-for-your-eyes")
    result = CliRunner().invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert "not-for-your-eyes" not in result.stdout  # a personal token is a secret
    data = json.loads(result.stdout)
    assert data["workstation"] == "bench-9" and data["token"] == "**********"
    assert data["config_file"] == str(config_path())
    assert data["config_file_exists"] is False


# --- settings that are not valid: one line, exit 2 --------------------------------------------

FILE_MISTAKES = [  # (the file, the line named, what the error says of it)
    ('workstation = "bench-3"\n[printers.bench]\nkind = "zpl"\n', 3,
     "printers.bench.kind = \"zpl\": should be 'zpl-tcp', 'cups' or 'pdf-folder'"),
    ('idle_lock_minutes = "ten"\n', 1,
     'idle_lock_minutes = "ten": should be a valid integer'),
    ('scanner = { prefix = "]Q1", max_key_interval_ms = 9999 }\n', 1,
     "scanner.max_key_interval_ms = 9999: should be less than or equal to 500"),
    ('printers.bench.dpi = 200\n', 1, "printers.bench.dpi = 200: should be 203 or 300"),
    ('workstation = "bench-3"\ndefault_printr = "bench"\n', 2,
     'default_printr = "bench": not a setting; did you mean default_printer?'),
    ('[printer.bench]\nkind = "cups"\n', 1,
     'printer = {"bench": {"kind": "cups"}}: not a setting; did you mean printers?'),
    ('[printers.bench]\nkind = "cups"\nqueu = "freezer"\n', 3,
     'printers.bench.queu = "freezer": not a setting; did you mean printers.bench.queue?'),
    ('[scanner]\n"min_len" = 2\n', 2,
     "scanner.min_len = 2: not a setting; did you mean scanner.min_length?"),
    ('colour = "blue"\n', 1,
     'colour = "blue": not a setting (known here: database_url, workstation, user, token'),
    ('workstation = "bench-3"\nidle_lock_minutes = \n', "2, column 21",
     "not valid TOML: Invalid value"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "said"), FILE_MISTAKES)
def test_a_mistake_in_the_settings_file_is_one_line_naming_its_line(text, line, said):
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    result = CliRunner().invoke(app, ["config", "show"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(f"biobank: error: settings file {path}, line {line}: {said}")
    assert result.stderr.count("\n") == 1  # one line, no traceback
    with pytest.raises(ValidationError) as refused:
        load_settings()
    assert refused.value.exit_code == 2


VARIABLE_MISTAKES = [
    ("BIOBANK_IDLE_LOCK_MINUTES", "ten", 'idle_lock_minutes = "ten": should be a valid integer'),
    ("BIOBANK_SCANNER__MIN_LENGTH", "0", 'scanner.min_length = "0": should be greater than'),
    ("BIOBANK_SCANNER__PREFX", "]Q1",
     'scanner.prefx = "]Q1": not a setting; did you mean scanner.prefix?'),
    ("BIOBANK_PRINTERS", '{"bench": {"kind": "zpl"}}',
     "printers.bench.kind = \"zpl\": should be 'zpl-tcp', 'cups' or 'pdf-folder'"),
    ("BIOBANK_SCANNER", "{", 'scanner = "{": should be a JSON object, or set one key as '
     "BIOBANK_SCANNER__KEY"),
]  # fmt: skip


@pytest.mark.parametrize(("variable", "value", "said"), VARIABLE_MISTAKES)
def test_a_variable_that_is_not_valid_is_named(monkeypatch, variable, value, said):
    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text("idle_lock_minutes = 5\n")  # the file is not the culprit
    monkeypatch.setenv(variable, value)
    result = CliRunner().invoke(app, ["config", "show"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(f"biobank: error: environment variable {variable}: {said}")
    assert result.stderr.count("\n") == 1


def test_a_refused_setting_does_not_show_a_token(monkeypatch):
    monkeypatch.setenv("BIOBANK_SCANNER", '{"prefix": "x", "token": "bbk_not-for-your-eyes"}')
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2 and "not-for-your-eyes" not in result.stderr
