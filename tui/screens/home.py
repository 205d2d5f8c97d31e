"""Home: who is signed in, what the inventory holds, and the scan line."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from biobank.services.overview import Overview, inventory_overview
from tui.screens.base import WorkScreen


class HomeScreen(WorkScreen):
    BINDINGS = [Binding("r", "refresh", "Refresh", id="refresh")]  # noqa: RUF012

    def compose_body(self) -> ComposeResult:
        actor = self.app.actor
        yield Static(
            f"Signed in as {actor.username} ({actor.role.value}) at {actor.workstation}",
            id="who",
            classes="title",
            markup=False,
        )
        yield Static("Loading…", id="overview", classes="muted")
        yield Static(
            "Scan a tube, a box or a participant at any time.  "
            "Ctrl+N accession · Ctrl+F freezers · Ctrl+R reconcile · Ctrl+O pull list · "
            "Ctrl+T export · Ctrl+P all actions · F1 keys",
            classes="muted",
        )

    def on_mount(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self.app.run_db(
            lambda session: inventory_overview(session, actor=self.app.actor),
            self.show_overview,
            readonly=True,
        )

    def show_overview(self, overview: Overview) -> None:
        self.query_one("#overview", Static).update(
            f"Studies: {overview.studies}   Participants: {overview.participants}   "
            f"Visits: {overview.visits}   Specimens available: {overview.specimens_available}"
        )
