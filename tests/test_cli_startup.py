"""What a `biobank` command imports to start: help imports no database layer, and a scan none
of the other commands' modules (the CPU it costs is measured by `benchmarks/cli_bench.py`).
Each command runs in a new process, as it does at a terminal, which then names its modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from biobank import cli
from biobank.db import make_engine

ROOT = Path(__file__).resolve().parent.parent
DATABASE_LAYER = ("sqlalchemy", "sqlmodel", "alembic", "psycopg", "biobank.db",
                  "biobank.models", "biobank.services", "biobank.bootstrap")  # fmt: skip
LAZY = sorted([*cli.COMMANDS, *cli.GROUPS])


def _modules_of(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """The modules `biobank ARGS` has imported when it ends (successfully)."""
    listing = tmp_path / "modules.json"
    script = f"""
import json, sys
from biobank.cli import main
sys.argv = ["biobank", *sys.argv[1:]]
try:
    main()
finally:
    with open({str(listing)!r}, "w") as out:
        json.dump(sorted(sys.modules), out)
"""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(listing.read_text())


def _within(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(f"{p}.") for p in packages)]


def test_the_help_imports_no_database_layer_nor_any_command(tmp_path):
    modules = _modules_of(tmp_path, "--help")
    assert _within(modules, DATABASE_LAYER) == []
    assert [m for m in modules if m.startswith("biobank.cli.")] == ["biobank.cli.common"]


@pytest.mark.parametrize("name", LAZY)
def test_each_commands_help_imports_no_database_layer(tmp_path, name):
    modules = _modules_of(tmp_path, name, "--help")
    assert _within(modules, DATABASE_LAYER) == []
    module, _ = {**cli.COMMANDS, **cli.GROUPS}[name]
    assert module in modules  # the help did load the command's own module


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_a_scan_imports_its_own_service_and_no_other_commands(tmp_path, admin_db_url):
    env = os.environ | {"BIOBANK_DATABASE_URL": admin_db_url, "BIOBANK_USER": "admin"}
    subprocess.run(
        [sys.executable, "-m", "biobank", "demo", "--participants", "2"],
        cwd=ROOT, env=env, capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    engine = make_engine(admin_db_url)
    with engine.connect() as connection:
        tube = connection.execute(sa.text("SELECT accession_id FROM specimen LIMIT 1")).scalar()
    engine.dispose()

    modules = _modules_of(tmp_path, "scan", tube, env=env)
    assert "biobank.services.scan" in modules  # it did scan
    others = ("tui", "textual", "labels", "biobank.export", "biobank.services.imports",
              "biobank.services.exports", "biobank.services.export_runs",
              "biobank.services.cohort_counts", "biobank.services.backups",
              "biobank.services.label_data", "biobank.services.audit_anchor")  # fmt: skip
    assert _within(modules, others) == []
    commands = [m for m in modules if m.startswith("biobank.cli.")]
    assert commands == ["biobank.cli.common", "biobank.cli.specimen_commands"]


def test_the_help_lists_each_command_as_its_own_help_begins():
    """`SUMMARIES` stand in for the commands' help in `biobank --help`: the list reads as the
    loaded commands' would, at any width."""
    assert set(cli.SUMMARIES) == set(LAZY)
    root = typer.main.get_command(cli.app)
    context = typer.Context(root, info_name="biobank")
    for name in LAZY:
        loaded = root.get_command(context, name)
        summary = typer.core.TyperCommand(name=name, help=cli.SUMMARIES[name])
        for width in range(20, 160):
            assert summary.get_short_help_str(width) == loaded.get_short_help_str(width), name


def test_the_help_lists_every_command_and_group():
    shown = CliRunner().invoke(cli.app, ["--help"]).stdout
    listed = shown.split("Commands:")[1].split()
    assert {*LAZY, "demo", "tui"} <= set(listed)
