"""A participant by pseudonymous code, in three tabs: specimens (Enter opens one), the
phenotype timeline, and consent per statement; `w` records a consent withdrawal (admins).

The identity (name, MRN, date of birth) is never read here: it stays with the admins' CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from biobank.domain.permissions import Permission, require
from biobank.errors import PermissionDenied
from biobank.services.consent import ConsentStatusRead, consent_status
from biobank.services.participants import show_participant
from biobank.services.phenotypes import ValueRead, participant_phenotypes
from biobank.services.specimen_read import SpecimenRead
from biobank.services.specimens import list_specimens
from biobank.terminal_text import shown
from tui.screens.base import WorkScreen
from tui.text import plain
from tui.widgets.consent import consent_lines, withdrawal_words


@dataclass(frozen=True)
class ParticipantView:
    participant: Any  # ParticipantRead, without the identity
    specimens: list[SpecimenRead]
    phenotypes: list[ValueRead]
    consent: ConsentStatusRead


def load_participant(session, *, actor, code: str) -> ParticipantView:
    """Everything the screen shows, in one unit of work."""
    return ParticipantView(
        participant=show_participant(session, actor=actor, code=code),
        specimens=list_specimens(session, actor=actor, participant=code),
        phenotypes=participant_phenotypes(session, actor=actor, participant=code),
        consent=consent_status(session, actor=actor, participant=code),
    )


# --- phenotypes ---------------------------------------------------------------------------------


def short_label(value: ValueRead) -> str:
    """A one-word label (C3, SLEDAI-2K) reads best; a longer one gives way to the short name."""
    return value.label if " " not in value.label else value.variable


def timeline(values: list[ValueRead]) -> Text:
    """One line per group, in the service's order: participant-level values, then each visit."""
    groups: dict[tuple[str | None, Any, int], list[ValueRead]] = {}
    for value in values:  # a form filled in several times in a visit: a line per filling
        key = (value.visit, value.observed_on if value.visit else None, value.instance)
        groups.setdefault(key, []).append(value)
    lines = []
    for (visit, on, instance), group in groups.items():
        place = f"{shown(visit)} [{instance}]" if instance else shown(visit or "")
        line = Text(f"{place} {on}" if visit else "Participant", style="bold")
        line.append(": " + shown(" · ".join(f"{short_label(v)} {v.display}" for v in group)))
        lines.append(line)
    return Text("\n").join(lines) if lines else Text("No phenotype values recorded.", "dim")


class ParticipantScreen(WorkScreen):
    BINDINGS = [  # noqa: RUF012
        Binding("1", "show_tab('specimens')", "Specimens", id="participant_specimens"),
        Binding("2", "show_tab('phenotypes')", "Phenotypes", id="participant_phenotypes"),
        Binding("3", "show_tab('consent')", "Consent", id="participant_consent"),
        Binding("w", "withdraw", "Withdraw consent (admins)", id="withdraw_consent"),
        Binding("r", "refresh", "Refresh", id="refresh_participant"),
    ]

    def __init__(self, code: str) -> None:
        super().__init__()
        self.code = code
        self.view: ParticipantView | None = None

    def compose_body(self) -> ComposeResult:
        yield Static(self.code, id="participant-title", classes="title", markup=False)
        yield Static("Loading…", id="participant-detail", classes="muted", markup=False)
        banner = Static("", id="withdrawn-banner", classes="withdrawn-flag", markup=False)
        banner.display = False
        yield banner
        with TabbedContent(id="participant-tabs"):
            with TabPane("Specimens 1", id="specimens"):
                table = DataTable(id="participant-specimens", zebra_stripes=True, cursor_type="row")
                table.add_columns("ID", "type", "visit", "quantity", "status", "location")
                yield table
            with TabPane("Phenotypes 2", id="phenotypes"), VerticalScroll(id="phenotypes-scroll"):
                yield Static("", id="participant-phenotypes")
            with TabPane("Consent 3", id="consent"), VerticalScroll(id="consent-scroll"):
                yield Static("", id="participant-consent")

    def on_mount(self) -> None:
        self.query_one("#participant-specimens", DataTable).focus()

    def on_screen_resume(self) -> None:
        self.action_refresh()  # back from a specimen or a withdrawal: it may have changed

    def action_refresh(self) -> None:
        actor = self.app.actor
        self.app.run_db(
            lambda session: load_participant(session, actor=actor, code=self.code),
            self.show,
            readonly=True,
        )

    def show(self, view: ParticipantView) -> None:
        self.view = view
        participant, specimens = view.participant, view.specimens
        self.query_one("#participant-title", Static).update(
            f"{participant.code}  study {participant.study_code}  "
            f"[{participant.status.value.upper()}]  {len(specimens)} specimens"
        )
        visits = shown(" · ".join(f"{v.label} {v.visit_date}" for v in participant.visits))
        self.query_one("#participant-detail", Static).update(
            f"Sex {participant.sex.value}   birth year {participant.birth_year or '-'}   "
            f"enrolled {participant.enrolled_on or '-'}\nVisits: {visits or 'none'}"
        )
        gone = view.consent.full_withdrawal
        banner = self.query_one("#withdrawn-banner", Static)
        banner.display = gone is not None
        if gone is not None:
            banner.update(f"⊘ CONSENT WITHDRAWN  {withdrawal_words(gone)}")
        self.query_one("#participant-phenotypes", Static).update(timeline(view.phenotypes))
        self.query_one("#participant-consent", Static).update(consent_lines(view.consent))
        table = self.query_one("#participant-specimens", DataTable)
        table.clear()
        for s in specimens:
            table.add_row(
                s.accession_id,
                f"{s.specimen_type} {s.kind}",
                plain(s.visit_label),
                f"{s.quantity:g} {s.unit}",
                s.status,
                plain(s.location or "not placed"),
                key=s.accession_id,
            )

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        focus = {"specimens": "#participant-specimens"}.get(tab, f"#{tab}-scroll")
        self.query_one(focus).focus()

    def action_withdraw(self) -> None:
        """Admins only: others are told so at once rather than after filling in the form."""
        try:
            require(self.app.actor, Permission.manage_consent)
        except PermissionDenied as error:
            self.app.show_error(error)
            return
        if self.view is not None:
            statements = [s.code for s in self.view.consent.statements]
            self.app.open_withdrawal(self.code, statements)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_specimen(event.row_key.value)
