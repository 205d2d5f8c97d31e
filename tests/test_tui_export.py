"""The export screen driven as a PI would: a condition typed in the condition language, a use
ticked, the counts previewed, a CSV export run in a worker; a bad condition stopped at its
field; a technician turned away before anything is written."""

import asyncio
import json
import re
from datetime import date

import sqlalchemy as sa
from textual.widgets import Checkbox, Input, ProgressBar, Select, Static
from tui_helpers import settle, sign_in, type_text

from biobank.bootstrap import open_database
from biobank.db import uow
from biobank.domain.cohort import CohortQuery, load_query, parse_conditions
from biobank.domain.vocabulary import Role
from biobank.export.formats import DEFAULT_FORMAT, NAMES
from biobank.services import saved_queries
from biobank.settings import Settings
from tui.app import BiobankApp
from tui.screens.export import ExportScreen, ManifestScreen

CONDITION = "ln_class in (III, IV) and upcr >= 0.25"


def _app(engine) -> BiobankApp:
    url = engine.url.render_as_string(hide_password=False)
    database = open_database(Settings(database_url=url))
    return BiobankApp(settings=Settings(database_url=url, workstation="pi-desk"), database=database)


def _runs(engine) -> list[str]:
    with uow(engine, readonly=True) as session:
        return list(session.execute(sa.text("SELECT run_code FROM export_run")).scalars())


def _saved(engine) -> list[tuple]:
    with uow(engine, readonly=True) as session:
        return [
            (name, load_query(json.loads(query) if isinstance(query, str) else query).phenotypes)
            for name, query in session.execute(sa.text("SELECT name, query FROM saved_query"))
        ]


def _text(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).content)


def _errors(app) -> list[str]:
    return [n.message for n in app._notifications if n.severity == "error"]


async def _keys(app, pilot, *keys: str) -> None:
    for key in keys:
        await pilot.press(key)
        await settle(app, pilot)


async def _tick(app, pilot, checkbox: Checkbox) -> None:
    checkbox.focus()
    await _keys(app, pilot, "space")


def _use(screen, code: str) -> Checkbox:
    return next(c for c in screen.query(".use").results(Checkbox) if c.name == code)


async def _open(app, pilot, username: str) -> None:
    await sign_in(app, pilot, username, "4444")
    await _keys(app, pilot, "ctrl+t")


def test_a_pi_previews_and_exports_a_cohort_to_csv(cohort_db, actors, tmp_path):
    async def scenario():
        app = _app(cohort_db)
        async with app.run_test(size=(80, 24)) as pilot:
            await _open(app, pilot, "pi1")
            screen = app.screen
            assert isinstance(screen, ExportScreen)
            offered = {c.name: c.value for c in screen.query(".format").results(Checkbox)}
            assert offered == {name: name == DEFAULT_FORMAT for name in NAMES}  # the registry's
            screen.query_one("#where", Input).focus()
            await type_text(app, pilot, CONDITION, enter=False)
            assert _text(screen, "#where-error") == ""
            await _tick(app, pilot, _use(screen, "FUTURE_RESEARCH"))  # ticked by default
            await _tick(app, pilot, _use(screen, "GENETIC"))
            assert screen.read_uses() == ["GENETIC"]

            await _keys(app, pilot, "ctrl+s")
            counts = _text(screen, "#counts")
            assert "Selected: 1 specimen of 1 participant (3 match the filters" in counts
            assert "GENETIC refused: 1 specimen, 1 participant" in counts
            assert "GENETIC withdrawn: 1 specimen, 1 participant" in counts
            assert _runs(cohort_db) == []  # a preview writes nothing

            screen.query_one("#name", Input).focus()
            await type_text(app, pilot, "ln-genetic")  # Enter saves it
            assert _saved(cohort_db) == [("ln-genetic", parse_conditions(CONDITION))]
            screen.query_one("#where", Input).value = ""
            await settle(app, pilot)
            assert "Changed: Ctrl+S previews again" in _text(screen, "#counts")
            screen.query_one("#saved", Select).value = "ln-genetic"
            await settle(app, pilot)
            assert (
                screen.query_one("#where", Input).value
                == 'ln_class in ("III", "IV") and upcr >= 0.25'
            )
            await _keys(app, pilot, "ctrl+s")
            assert "Selected: 1 specimen of 1 participant" in _text(screen, "#counts")

            screen.query_one("#directory", Input).value = str(tmp_path / "out")
            screen.query_one("#reserve_request", Input).value = "REQ-TUI"
            await _keys(app, pilot, "ctrl+y")
            [run_code] = _runs(cohort_db)
            folder = tmp_path / "out" / run_code
            assert (folder / "specimens.csv").exists() and (folder / "dictionary.csv").exists()
            manifest = json.loads((folder / "manifest.json").read_text())
            assert manifest["counts"]["specimens"] == 1 and manifest["uses"] == ["GENETIC"]
            assert manifest["mode"] == "safe_harbor"
            assert manifest["saved_query"]["name"] == "ln-genetic"  # the form narrowed nothing
            assert manifest["reservation"] == {"request": "REQ-TUI", "reserved": 1, "left_out": {}}
            bar = screen.query_one("#export-progress", ProgressBar)
            # the candidates the conditions leave in the database; the worker's steps reached it
            assert bar.total == 6 and bar.percentage == 1
            result = _text(screen, "#export-result")
            assert f"Export {run_code}: 1 specimen of 1 participant" in result
            sha = manifest["files"]["specimens.csv"]["sha256"]
            assert re.search(rf"specimens\.csv +1 rows +SHA-256 {sha[:12]}", result)
            assert str(folder / "manifest.json") in result
            assert "GENETIC refused: 1 specimen" in result
            assert "Reserved for REQ-TUI: 1 tube" in result

            await _keys(app, pilot, "ctrl+g")
            assert isinstance(app.screen, ManifestScreen)
            assert run_code in _text(app.screen, "#manifest-text")
            await _keys(app, pilot, "escape", "escape")
            assert not isinstance(app.screen, ExportScreen)
        assert _errors(app) == []
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_a_bad_condition_or_a_missing_dua_is_refused_at_its_field_and_nothing_runs(
    cohort_db, actors, tmp_path
):
    async def scenario():
        app = _app(cohort_db)
        async with app.run_test(size=(80, 24)) as pilot:
            await _open(app, pilot, "pi1")
            screen = app.screen
            screen.query_one("#directory", Input).value = str(tmp_path / "out")
            screen.query_one("#where", Input).focus()
            await type_text(app, pilot, "ln_class in (III, IV) and upcr >> 0.25", enter=False)
            shown = _text(screen, "#where-error")  # at once, before anything is asked
            assert shown.startswith("expected a value at '> 0.25' in the condition")
            assert _errors(app) == []

            await _keys(app, pilot, "ctrl+s", "ctrl+y")
            assert _errors(app) == [shown, shown]  # refused twice, by the form
            assert "nothing is written" in _text(screen, "#counts")  # no counts: nothing ran
            assert _text(screen, "#export-result") == ""

            screen.query_one("#where", Input).value = "lnclass = IV"  # reads, but is no variable
            await _keys(app, pilot, "ctrl+s")
            assert "no phenotype variable 'lnclass'" in _text(screen, "#where-error")

            screen.query_one("#where", Input).value = CONDITION
            screen.query_one("#mode", Select).value = "limited"
            await settle(app, pilot)
            assert screen.query_one("#dua-row").display
            await _keys(app, pilot, "ctrl+y")
            assert "registered data use agreement" in _text(screen, "#dua_reference-error")
            assert "Not exported" in _text(screen, "#export-result")
        assert _runs(cohort_db) == [] and not (tmp_path / "out").exists()
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_a_technician_cannot_open_the_export_screen_or_export(cohort_db, actors, tmp_path):
    async def scenario():
        app = _app(cohort_db)
        async with app.run_test(size=(80, 24)) as pilot:
            await _open(app, pilot, "technician1")
            assert not isinstance(app.screen, ExportScreen)
            assert _errors(app) == ["technician1 (technician) may not export"]

            screen = ExportScreen()  # reached some other way: the services still refuse
            await app.push_screen(screen)
            await settle(app, pilot)
            screen.query_one("#directory", Input).value = str(tmp_path / "out")
            screen.query_one("#where", Input).value = CONDITION
            await _keys(app, pilot, "ctrl+y")
            assert "may not export" in _text(screen, "#export-result")
            assert _errors(app)[-1] == "technician1 (technician) may not export"
        assert _runs(cohort_db) == [] and not (tmp_path / "out").exists()
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_consent_is_asked_as_of_today_and_a_saved_query_is_narrowed_never_widened(
    cohort_db, actors
):
    with uow(cohort_db) as session:
        saved_queries.save_query(
            session, actor=actors[Role.pi], name="nephritis",
            query=CohortQuery(phenotypes=parse_conditions("ln_class in (III, IV)")),
        )  # fmt: skip

    async def scenario():
        app = _app(cohort_db)
        async with app.run_test(size=(80, 24)) as pilot:
            await _open(app, pilot, "pi1")
            screen = app.screen
            assert not screen.query("#as_of")  # no day to type: consent is judged as of today
            await _keys(app, pilot, "ctrl+s")  # P-0004's withdrawal (2021) is in force
            counts = _text(screen, "#counts")
            assert "FUTURE_RESEARCH withdrawn: 2 specimens, 1 participant" in counts
            assert f"as of {date.today()}" in counts

            screen.query_one("#saved", Select).value = "nephritis"
            await settle(app, pilot)
            assert screen.query_one("#where", Input).value == 'ln_class in ("III", "IV")'
            await _keys(app, pilot, "ctrl+s")  # P-0001 and P-0003 match; P-0004 withdrew
            assert "Selected: 2 specimens of 2 participants" in _text(screen, "#counts")

            screen.query_one("#where", Input).value = ""  # would widen the saved query
            await _keys(app, pilot, "ctrl+s")
            assert "cannot be emptied" in _text(screen, "#where-error")

            screen.query_one("#where", Input).value = "upcr >= 1"  # narrows it: P-0003 only
            await _keys(app, pilot, "ctrl+s")
            assert "Selected: 1 specimen of 1 participant" in _text(screen, "#counts")
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_a_pi_exports_the_long_shape_from_the_screen(cohort_db, actors, tmp_path):
    async def scenario():
        app = _app(cohort_db)
        async with app.run_test(size=(80, 24)) as pilot:
            await _open(app, pilot, "pi1")
            screen = app.screen
            screen.query_one("#directory", Input).value = str(tmp_path / "out")
            await _tick(app, pilot, screen.query_one("#long_shape", Checkbox))
            await _keys(app, pilot, "ctrl+y")
            [run_code] = _runs(cohort_db)
            folder = tmp_path / "out" / run_code
            manifest = json.loads((folder / "manifest.json").read_text())
            assert manifest["shape"] == "long"
            assert {"specimens.csv", "phenotype_values.csv", "load.py"} <= set(manifest["files"])
        assert _errors(app) == []
        app.database.engine.dispose()

    asyncio.run(scenario())
