"""Settings: defaults in the platform dirs, a TOML file, and BIOBANK_* variables over it."""

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from biobank.cli import app
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
