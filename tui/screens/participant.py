"""A participant by pseudonymous code: visits and specimens; Enter opens a specimen.

The identity (name, MRN, date of birth) is never read here: it stays with the admins' CLI.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from biobank.services.participants import show_participant
from biobank.services.specimens import list_specimens
from tui.screens.base import WorkScreen


class ParticipantScreen(WorkScreen):
    BINDINGS = [Binding("r", "refresh", "Refresh", id="refresh_participant")]  # noqa: RUF012

    def __init__(self, code: str) -> None:
        super().__init__()
        self.code = code

    def compose_body(self) -> ComposeResult:
        yield Static(self.code, id="participant-title", classes="title", markup=False)
        yield Static("Loading…", id="participant-detail", classes="muted", markup=False)
        table = DataTable(id="participant-specimens", zebra_stripes=True, cursor_type="row")
        table.add_columns("ID", "type", "visit", "quantity", "status", "location")
        yield table

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()

    def on_screen_resume(self) -> None:
        self.action_refresh()  # back from a specimen: it may have changed

    def action_refresh(self) -> None:
        actor = self.app.actor

        def load(session):
            return (
                show_participant(session, actor=actor, code=self.code),
                list_specimens(session, actor=actor, participant=self.code),
            )

        self.app.run_db(load, self.show, readonly=True)

    def show(self, loaded) -> None:
        participant, specimens = loaded
        self.query_one("#participant-title", Static).update(
            f"{participant.code}  study {participant.study_code}  "
            f"[{participant.status.value.upper()}]  {len(specimens)} specimens"
        )
        visits = " · ".join(f"{v.label} {v.visit_date}" for v in participant.visits)
        self.query_one("#participant-detail", Static).update(
            f"Sex {participant.sex.value}   birth year {participant.birth_year or '-'}   "
            f"enrolled {participant.enrolled_on or '-'}\nVisits: {visits or 'none'}"
        )
        table = self.query_one(DataTable)
        table.clear()
        for s in specimens:
            table.add_row(
                s.accession_id,
                f"{s.specimen_type} {s.kind}",
                s.visit_label or "",
                f"{s.quantity:g} {s.unit}",
                s.status,
                s.location or "not placed",
                key=s.accession_id,
            )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        from tui.screens.specimen import SpecimenScreen

        self.app.push_screen(SpecimenScreen(event.row_key.value))
