"""The architecture's import rules: the core never imports the TUI or Textual, the TUI
reaches the database only through services, and no module imports its way back to itself."""

import ast
import json
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from graphlib import CycleError, TopologicalSorter
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


def _module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Each module's dotted name (a package by its `__init__`) and its file."""
    found = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _run_time_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that runs, in a function too; not those only a type checker reads."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
        return
    children = list(ast.iter_child_nodes(node))
    if isinstance(node, ast.If) and "TYPE_CHECKING" in {
        getattr(node.test, "id", None),  # if TYPE_CHECKING:
        getattr(node.test, "attr", None),  # if typing.TYPE_CHECKING:
    }:
        children = node.orelse
    for child in children:
        yield from _run_time_imports(child)


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Which of these modules each one imports. `from p import x` is an import of the module
    `p.x` when there is one, else of `p` itself: for a package, of its `__init__`."""
    modules = _module_names(root, packages)
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in _run_time_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
                continue
            base = node.module or ""
            if node.level:  # relative: counted from the package this module is in
                here = name.split(".")[: None if path.stem == "__init__" else -1]
                here = here[: len(here) - node.level + 1]
                base = ".".join([*here, base] if base else here)
            imported |= {
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            }
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return error.args[1]
    return None


def test_no_module_imports_its_way_back_to_itself():
    graph = import_graph(ROOT, ("biobank", "tui", "labels"))
    assert len(graph) > 100 and "tui.screens.specimen" in graph["tui.app"]
    circle = _circle(graph)
    assert circle is None, f"import circle: {' -> '.join(circle)}"


def test_screens_open_each_other_through_the_app_never_by_import():
    """Screens share widgets through tui/widgets/ and their base class, never each other: the
    app alone knows which screen opens for what."""
    graph = import_graph(ROOT, ("tui",))
    screens = {name for name in graph if name.startswith("tui.screens.")}
    assert len(screens) > 10
    crossings = sorted(
        f"{name} imports {other}"
        for name in screens
        for other in graph[name] & screens
        if other != "tui.screens.base"
    )
    assert crossings == []


def test_the_circle_check_sees_imports_in_functions_and_through_a_package(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from pkg.a import f\nVALUE = 1\n")
    (package / "a.py").write_text("def f():\n    from pkg import VALUE\n    return VALUE\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import C\n"
    )
    (package / "c.py").write_text("from . import b\nC = b\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg"}, "pkg.b": set(), "pkg.c": {"pkg.b"}}
    assert _circle(graph) in (["pkg", "pkg.a", "pkg"], ["pkg.a", "pkg", "pkg.a"])
