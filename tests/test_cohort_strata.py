"""Breakdowns before export, on both engines: a cohort preview's counts per sex, age band,
specimen type, visit and variable; small cells suppressed in de-identified modes (and a second
cell with a lone one, so the total cannot give it away), every count for an admin's identified
preview; an unknown breakdown named; the CLI's tables."""

from __future__ import annotations

import asyncio

import pytest
from textual.widgets import Static
from tui_helpers import settle, sign_in
from typer.testing import CliRunner

from biobank.bootstrap import open_database
from biobank.cli import app
from biobank.db import uow
from biobank.domain.vocabulary import DeidentificationMode, Role
from biobank.errors import PermissionDenied, ValidationError
from biobank.services import cohort_counts
from biobank.services.cohort_strata import age_band
from biobank.settings import Settings
from tui.app import BiobankApp

USES = ["FUTURE_RESEARCH"]


def _cells(preview, by: str) -> dict[str, tuple]:
    (breakdown,) = [b for b in preview.breakdowns if b.by == by]
    return {s.value: (s.specimens, s.participants) for s in breakdown.strata}


def _preview(engine, actor, *by: str, **options):
    with uow(engine, readonly=True) as session:
        return cohort_counts.preview_cohort(session, actor=actor, uses=USES, by=list(by), **options)


def test_counts_per_stratum_with_small_cells_suppressed(cohort_db, actors):
    admin, pi = actors[Role.admin], actors[Role.pi]
    shown = _preview(
        cohort_db, admin, "sex", "age-band", "type", "visit", "ln_class",
        mode=DeidentificationMode.identified,
    )  # fmt: skip
    assert shown.specimens == 8  # P-0004 withdrew
    assert _cells(shown, "sex") == {"female": (6, 3), "male": (2, 1)}
    assert _cells(shown, "type") == {"SER": (8, 4)}
    assert _cells(shown, "visit") == {"baseline": (4, 4), "month 6": (4, 4)}
    assert _cells(shown, "age-band") == {"30-39": (2, 1), "40-49": (2, 1), "70-79": (2, 1),
                                          "20-29": (2, 1)}  # fmt: skip
    assert set(_cells(shown, "ln_class")) >= {"IV", "III"}
    hidden = _preview(cohort_db, pi, "sex", small_cell=2)
    # male (1 participant) is small; alone, it would show by subtraction: female goes too
    assert _cells(hidden, "sex") == {"female": (None, None), "male": (None, None)}
    visits = _preview(cohort_db, pi, "visit", small_cell=2)
    assert _cells(visits, "visit") == {"baseline": (4, 4), "month 6": (4, 4)}


def test_an_unknown_breakdown_or_identified_counts_for_a_pi_are_refused(cohort_db, actors):
    with pytest.raises(ValidationError, match="cannot break down by 'shoe_size'"):
        _preview(cohort_db, actors[Role.pi], "shoe_size")
    with pytest.raises(PermissionDenied):
        _preview(cohort_db, actors[Role.pi], "sex", mode=DeidentificationMode.identified)


@pytest.mark.parametrize(
    ("age", "band"), [(None, "(none)"), (0, "0-9"), (89, "80-89"), (90, "90+"), (104, "90+")]
)
def test_age_bands_top_out_at_90(age, band):
    assert age_band(age) == band


def test_the_cli_prints_each_breakdown(monkeypatch, db_url, cohort_db, actors):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    runner = CliRunner()
    result = runner.invoke(app, ["-u", "pi1", "cohort", "preview", "--by", "visit", "--by", "sex"])
    assert result.exit_code == 0, result.stderr
    assert "baseline" in result.stdout and "suppressed" in result.stdout  # sex: both small
    wrong = runner.invoke(app, ["-u", "pi1", "cohort", "preview", "--by", "shoe_size"])
    assert wrong.exit_code == 2 and "shoe_size" in wrong.stderr


def test_the_workstation_export_preview_shows_the_breakdowns(db_url, cohort_db, actors):
    async def scenario():
        settings = Settings(database_url=db_url, workstation="bench-1", small_cell=2)
        app = BiobankApp(settings=settings, database=open_database(settings))
        async with app.run_test(size=(100, 40)) as pilot:
            await sign_in(app, pilot, "pi1", "4444")
            await pilot.press("ctrl+t")
            await settle(app, pilot)
            await pilot.press("ctrl+s")
            await settle(app, pilot)
            text = str(app.screen.query_one("#counts", Static).content)
            assert "By type: SER 8 (4)" in text, text
            assert "By sex: female suppressed, male suppressed" in text, text
        app.database.engine.dispose()

    asyncio.run(scenario())
