"""The architecture's import rules: the core never imports the TUI or Textual, and the TUI
reaches the database only through services."""

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import biobank
import labels

ROOT = Path(__file__).resolve().parent.parent


def _modules(package) -> list[str]:
    found = pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")
    return [package.__name__] + [m.name for m in found if not m.name.endswith("__main__")]


def test_core_and_labels_never_import_textual_or_tui():
    modules = _modules(biobank) + _modules(labels)
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    loaded = json.loads(result.stdout)
    offenders = [m for m in loaded if m.split(".")[0] in {"textual", "tui"}]
    assert offenders == []
    assert "biobank.cli" in loaded  # the check did import the whole core


def test_tui_reaches_the_database_only_through_services():
    forbidden = {"sqlalchemy", "sqlmodel", "biobank.db", "biobank.models"}
    for path in (ROOT / "tui").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in forbidden), (
                    f"{path.relative_to(ROOT)} imports {name}"
                )


def test_the_cli_starts_without_loading_textual():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, biobank.cli; print('textual' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "False"


def test_the_sign_in_screen_needs_no_database_layer():
    """The workstation shows its sign-in screen before it imports the database layer (which
    takes longer than the screen itself), opening the database behind it."""
    script = (
        "import sys, biobank.cli, tui.app, tui.screens.sign_in\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'sqlmodel', "
        "'alembic', 'psycopg'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"
