"""Consent and phenotypes at the workstation, driven as a technician or an admin would: a
participant's tabs, a withdrawal reviewed before it is written, and the pull list worked
through by scanning each tube."""

import asyncio
from datetime import date

import sqlalchemy as sa
from inventory import accession_tube, seed_inventory, serum
from textual.widgets import Input, Select, Static, TabbedContent
from tui_helpers import scan, settle, sign_in, type_text

from biobank.bootstrap import open_database
from biobank.db import uow
from biobank.services import consent, lineage, participants, phenotypes, users
from biobank.settings import Settings
from tui.app import BiobankApp
from tui.screens.participant import ParticipantScreen
from tui.screens.pull_list import PullListScreen
from tui.screens.specimen import SpecimenScreen
from tui.screens.withdrawal import WithdrawalScreen

SIGNED = date(2025, 1, 2)
VALUES = (  # variable, value, visit
    ("acr1997_count", 5, None),
    ("sledai2k", 4, "month 6"),
    ("sledai2k", 12, "baseline"),
    ("upcr", 0.567, "baseline"),
    ("ln_class", "III", "baseline"),
)


def _lab(db_url, admin) -> tuple[BiobankApp, dict[str, str]]:
    """SLE-0001 (two visits, phenotype values, consent signed for three statements) with a
    serum tube in the second box and two aliquots in the first; SLE-0002 with one tube.
    Users: tech (PIN 1111) and admin (PIN 9876)."""
    database = open_database(Settings(database_url=db_url))
    engine = database.engine
    boxes = seed_inventory(engine, admin)["boxes"]
    with uow(engine) as session:
        users.add_user(session, actor=admin, username="tech", role="technician", pin="1111")
        users.set_pin(session, actor=admin, username="admin", pin="9876")
        participants.add_participant(session, actor=admin, study="SLE", code="SLE-0002")
        participants.add_visit(
            session, actor=admin, participant="SLE-0001", label="month 6",
            visit_date=date(2025, 7, 1),
        )  # fmt: skip
        consent.add_document(
            session, actor=admin, code="SLE-MAIN", version="1", title="Registry consent",
            effective_on=date(2024, 1, 1), statements=["FUTURE_RESEARCH", "GENETIC", "COMMERCIAL"],
        )  # fmt: skip
        consent.record_consent(
            session, actor=admin, participant="SLE-0001", document="SLE-MAIN", version="1",
            signed_on=SIGNED,
            answers={"FUTURE_RESEARCH": True, "GENETIC": False, "COMMERCIAL": True},
        )  # fmt: skip
        for variable, value, visit in VALUES:
            phenotypes.set_value(
                session, actor=admin, participant="SLE-0001", variable=variable, value=value,
                visit=visit,
            )  # fmt: skip
        primary = serum(session, admin, destination=boxes[1], position="A1").accession_id
        first, second = (
            a.accession_id
            for a in lineage.aliquot(
                session, actor=admin, parent=primary, count=2, volume=250, destination=boxes[0]
            )
        )
        other = accession_tube(session, admin, "SLE-0002", destination=boxes[0]).accession_id
    app = BiobankApp(
        settings=Settings(database_url=db_url, workstation="bench-1"), database=database
    )
    return app, {"primary": primary, "first": first, "second": second, "other": other}


def _rows(engine, sql: str, **params) -> list[tuple]:
    with uow(engine, readonly=True) as session:
        return [tuple(r) for r in session.execute(sa.text(sql), params)]


def _written(engine) -> tuple[int, int, int]:
    """Withdrawals recorded, specimens flagged, 'consent_withdrawn' events."""
    return (
        _rows(engine, "SELECT count(*) FROM consent_withdrawal")[0][0],
        _rows(engine, "SELECT count(*) FROM specimen WHERE consent_withdrawal_id IS NOT NULL")[0][
            0
        ],
        _rows(engine, "SELECT count(*) FROM specimen_event WHERE event_type = 'consent_withdrawn'")[
            0
        ][0],
    )


def _text(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).content)


def _errors(app) -> list[str]:
    return [n.message for n in app._notifications if n.severity == "error"]


async def _keys(app, pilot, *keys: str) -> None:
    for key in keys:
        await pilot.press(key)
        await settle(app, pilot)


def _table(screen, selector: str) -> list[tuple]:
    table = screen.query_one(selector)  # a DataTable, or the pull list's LineTable
    return [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


def _fits(app, widget) -> None:
    """Shown on an 80x24 screen (not hidden in an inactive tab, not below the footer)."""
    region = widget.region
    assert region.height > 0 and region.width > 0
    assert region.right <= 80 and region.bottom <= 23


def test_a_participant_shows_specimens_phenotypes_and_consent_and_a_technician_cannot_withdraw(
    db_url, admin
):
    async def scenario():
        app, tubes = _lab(db_url, admin)
        engine = app.database.engine
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            await scan(app, pilot, "SLE-0001")
            screen = app.screen
            assert isinstance(screen, ParticipantScreen)
            assert [r[0] for r in _table(screen, "#participant-specimens")] == [
                tubes["primary"], tubes["first"], tubes["second"],
            ]  # fmt: skip
            _fits(app, screen.query_one("#participant-specimens"))
            assert not screen.query_one("#withdrawn-banner").display

            await _keys(app, pilot, "2")
            assert screen.query_one(TabbedContent).active == "phenotypes"
            assert _text(screen, "#participant-phenotypes").splitlines() == [
                "Participant: acr1997_count 5",
                "baseline 2025-01-02: SLEDAI-2K 12 · ln_class III · upcr 0.567 g/g",  # as listed
                "month 6 2025-07-01: SLEDAI-2K 4",
            ]
            _fits(app, screen.query_one("#participant-phenotypes"))

            await _keys(app, pilot, "3")
            consent_lines = _text(screen, "#participant-consent").splitlines()
            assert consent_lines[:5] == [
                "✓ FUTURE_RESEARCH  granted    since 2025-01-02",
                "✗ GENETIC          refused    since 2025-01-02",
                "✓ COMMERCIAL       granted    since 2025-01-02",
                "– DATA_SHARING     not asked",
                "– RECONTACT        not asked",
            ]
            assert consent_lines[5] == "Signed SLE-MAIN v1 on 2025-01-02 (recorded by admin)"
            _fits(app, screen.query_one("#participant-consent"))

            await _keys(app, pilot, "1", "down", "enter")  # Enter on a row opens that tube
            assert isinstance(app.screen, SpecimenScreen)
            assert app.screen.accession_id == tubes["first"]
            assert "Consent: FUTURE ✓ GENETIC ✗ COMMERCIAL ✓ DATA – RECONTACT –" in _text(
                app.screen, "#detail"
            )
            assert not app.screen.query_one("#consent-flag").display
            await _keys(app, pilot, "escape", "w")  # a technician may not withdraw
            assert app.screen is screen
            assert "tech (technician) may not manage consent" in _errors(app)
        assert _written(engine) == (0, 0, 0)
        engine.dispose()

    asyncio.run(scenario())


def test_an_admin_withdraws_everything_and_a_technician_pulls_the_tubes(db_url, admin):
    async def scenario():
        app, tubes = _lab(db_url, admin)
        engine = app.database.engine
        mine = [tubes["first"], tubes["second"], tubes["primary"]]  # freezer order
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot, "admin", "9876")
            await scan(app, pilot, "SLE-0001")
            await _keys(app, pilot, "w")
            form = app.screen
            assert isinstance(form, WithdrawalScreen)
            await type_text(app, pilot, "the participant, by letter")
            await _keys(app, pilot, "enter", "down", "enter")  # disposition: destroy
            assert form.query_one("#disposition", Select).value == "destroy"
            await _keys(app, pilot, "tab")
            await type_text(app, pilot, "no longer wishes to take part")  # Enter: review
            impact = _text(form, "#impact")
            assert "3 tubes go on the pull list, to be destroyed" in impact
            for tube in mine:
                assert tube in impact
            assert f"    {tubes['first']}" in impact  # an aliquot under its parent
            assert tubes["other"] not in impact
            assert _written(engine) == (0, 0, 0)  # reviewed: nothing written yet

            await _keys(app, pilot, "ctrl+y")
            assert "3 specimens flagged" in _text(form, "#impact")
            assert _written(engine) == (1, 3, 3)
            assert _rows(engine, "SELECT status FROM participant WHERE code = 'SLE-0001'") == [
                ("withdrawn",)
            ]
            await _keys(app, pilot, "p")
            pull = app.screen
            assert isinstance(pull, PullListScreen)
            assert [r[0] for r in _table(pull, "#pull-lines")] == mine
            assert {r[3] for r in _table(pull, "#pull-lines")} == {"destroy"}

            await _keys(app, pilot, "escape")  # back to the participant, past the form
            assert isinstance(app.screen, ParticipantScreen)
            assert app.screen.query_one("#withdrawn-banner").display
            await scan(app, pilot, tubes["first"])
            assert isinstance(app.screen, SpecimenScreen)
            flag = app.screen.query_one("#consent-flag", Static)
            assert flag.display and "CONSENT WITHDRAWN" in str(flag.content)
            assert str(flag.content).endswith("— on the pull list")
            assert "Consent: WITHDRAWN (all uses · destroy" in _text(app.screen, "#detail")

            await _keys(app, pilot, "ctrl+o")
            pull = app.screen
            assert isinstance(pull, PullListScreen)
            before = _rows(engine, "SELECT count(*) FROM specimen_event")
            await scan(app, pilot, tubes["other"])  # not on the list: refused by name
            assert f"{tubes['other']} is not on the pull list" in _errors(app)
            assert _rows(engine, "SELECT count(*) FROM specimen_event") == before
            assert app.screen is pull

            for tube in mine:
                await scan(app, pilot, tube)
            assert [r[5] for r in _table(pull, "#pull-lines")] == ["✓ destroyed"] * 3
            assert "0 to pull, 3 pulled" in _text(pull, "#pull-title")
            assert _text(pull, "#pull-prompt") == "Nothing left to pull."
        statuses = _rows(
            engine,
            "SELECT accession_id, status FROM specimen WHERE participant_id = "
            "(SELECT id FROM participant WHERE code = 'SLE-0001')",
        )
        assert sorted(statuses) == sorted((tube, "disposed") for tube in mine)
        disposed = _rows(
            engine,
            "SELECT s.accession_id, e.reason FROM specimen_event e "
            "JOIN specimen s ON s.id = e.specimen_id WHERE e.event_type = 'disposed'",
        )
        assert sorted(t for t, _ in disposed) == sorted(mine)
        assert all("destroyed" in reason for _, reason in disposed)
        assert _rows(
            engine, "SELECT status FROM specimen WHERE accession_id = :a", a=tubes["other"]
        ) == [("available",)]
        engine.dispose()

    asyncio.run(scenario())


def test_one_statement_keeps_the_specimens_and_escape_writes_nothing(db_url, admin):
    async def scenario():
        app, _ = _lab(db_url, admin)
        engine = app.database.engine
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot, "admin", "9876")
            await scan(app, pilot, "SLE-0001")
            participant = app.screen
            await _keys(app, pilot, "w", "ctrl+s")  # nobody named as asking: refused at review
            assert _text(app.screen, "#requested_by-error") == ("say who requested the withdrawal")
            assert "flagged" not in _text(app.screen, "#impact")  # no impact of what cannot be
            await _keys(app, pilot, "ctrl+y")  # nothing reviewed: nothing to confirm
            assert _written(engine) == (0, 0, 0)
            await _keys(app, pilot, "escape")  # cancelled
            assert app.screen is participant
            assert _written(engine) == (0, 0, 0)

            await _keys(app, pilot, "w")
            form = app.screen
            day = form.query_one("#withdrawn_on", Input)
            day.value = "2025-02-30"
            await _keys(app, pilot, "ctrl+s")  # refused at the field, before any review
            assert _text(form, "#withdrawn_on-error") == "withdrawn_on must be a date as YYYY-MM-DD"
            assert "withdrawn_on must be a date as YYYY-MM-DD" in _errors(app)
            day.value = date.today().isoformat()
            await type_text(app, pilot, "phone call")
            await _keys(app, pilot, "enter", "down", "enter")  # destroy...
            await _keys(app, pilot, "shift+tab", "shift+tab", "shift+tab")
            await _keys(app, pilot, "enter", "down", "down", "down", "enter")  # ...COMMERCIAL
            assert form.query_one("#scope", Select).value == "COMMERCIAL"
            assert any("destroy and return apply to a withdrawal of everything" in n.message
                       for n in app._notifications)  # fmt: skip
            disposition = form.query_one("#disposition", Select)
            assert disposition.value == "keep_no_use"  # one statement keeps the tubes...
            await _keys(app, pilot, "tab", "tab", "tab", "enter", "down", "enter")
            assert app.focused is disposition and disposition.value == "keep_no_use"  # ...only
            await _keys(app, pilot, "ctrl+y")  # not reviewed: nothing to confirm
            assert _written(engine) == (0, 0, 0)
            await _keys(app, pilot, "ctrl+s")
            assert "flagged for no further use" in _text(form, "#impact")
            await _keys(app, pilot, "ctrl+y", "p")  # nothing to pull: no pull list
            assert app.screen is form
            assert "3 specimens flagged" in _text(form, "#impact")
            assert _written(engine) == (1, 3, 3)
            await _keys(app, pilot, "escape", "3")
            assert app.screen is participant
            assert not participant.query_one("#withdrawn-banner").display
            lines = _text(participant, "#participant-consent").splitlines()
            assert lines[2] == f"⊘ COMMERCIAL       withdrawn  since {date.today()}"
        engine.dispose()

    asyncio.run(scenario())
