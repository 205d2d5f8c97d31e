"""Record a consent withdrawal (admins): fill in the form, review what it touches, confirm.

Nothing is written before Confirm: Review only reads the impact (every specimen with its
descendants, those already sent out, the exports that included them). Changing the form after
a review asks for a new one. `destroy` and `return` take the tubes out, so they apply only to a
withdrawal of everything (the service refuses otherwise; the form offers no more).
"""

from __future__ import annotations

from datetime import date

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Input, Select, Static

from biobank.domain.dates import parse_day
from biobank.domain.vocabulary import SpecimenStatus as Status
from biobank.domain.vocabulary import WithdrawalDisposition as Disposition
from biobank.errors import BiobankError, ValidationError
from biobank.services import pulls, withdrawals
from biobank.services.consent import WithdrawalRead
from biobank.services.pulls import PullItem
from biobank.services.scan import Scan
from biobank.services.withdrawals import ImpactReport
from tui.screens.base import FormErrors, WorkScreen
from tui.text import plain
from tui.widgets.field_row import row

EVERYTHING = "*"  # the scope "all statements" (no statement code has a '*')
DISPOSITIONS = [
    ("keep, no further use", Disposition.keep_no_use),
    ("destroy (pull list)", Disposition.destroy),
    ("return to participant (pull list)", Disposition.return_to_participant),
]
PULLED = frozenset({Disposition.destroy, Disposition.return_to_participant})
FIELDS = ("scope", "withdrawn_on", "requested_by", "disposition", "reason")
SHOWN_AT = {"statement": "scope"}  # the service names the statement; the form calls it scope
GONE = frozenset({Status.disposed, Status.distributed})


def impact_text(report: ImpactReport, disposition: str) -> Text:
    """What the withdrawal touches, as a tree of specimens, before anything is written."""
    scope = report.statement or "all statements"
    pulled = [s for s in report.specimens if s.status not in GONE]
    lines = [
        Text(
            f"Withdrawing {scope} for {report.participant_code}: {len(report.specimens)} "
            f"specimens ({report.in_storage} in storage, {len(report.distributed)} sent out), "
            f"{len(report.exports)} export runs.",
            style="bold",
        )
    ]
    if disposition in PULLED:
        to = "destroyed" if disposition == Disposition.destroy else "returned to the participant"
        lines.append(Text(f"{len(pulled)} tubes go on the pull list, to be {to}.", "bold red"))
    else:
        lines.append(Text("The specimens stay where they are, flagged for no further use."))
    for s in report.specimens:
        lines.append(
            Text(
                f"{'  ' * (s.depth + 1)}{s.accession_id}  {s.kind} {s.specimen_type} "
                f"{s.quantity:g} {s.unit}  {s.status}",
                style="dim" if s.status in GONE else "",
            )
        )
    if report.distributed:
        lines.append(
            Text(f"Already sent out (recall them by hand): {', '.join(report.distributed)}", "red")
        )
    for run in report.exports:
        lines.append(
            Text(
                f"Export {run.run_code} ({run.created_at:%Y-%m-%d}, {run.mode}) included "
                f"{run.specimens} of them",
                style="yellow",
            )
        )
    lines.append(Text("Ctrl+Y records the withdrawal · Escape cancels: nothing is written yet."))
    return Text("\n").join(lines)


class WithdrawalScreen(FormErrors, WorkScreen):
    FIELDS = FIELDS
    SHOWN_AT = SHOWN_AT
    SCAN_HELP = "not used: finish or cancel the withdrawal first"
    BINDINGS = [  # noqa: RUF012
        Binding("ctrl+s", "review", "Review the impact", id="withdrawal_review"),
        Binding("ctrl+y", "confirm", "Confirm the withdrawal", id="withdrawal_confirm"),
        Binding("p", "pull_list", "Open the pull list", id="withdrawal_pull_list"),
    ]

    def __init__(self, participant: str, statements: list[str]) -> None:
        super().__init__()
        self.participant = participant
        self.statements = statements
        self.reviewed: dict | None = None  # the service arguments the shown impact is for
        self.done: WithdrawalRead | None = None

    def compose_body(self) -> ComposeResult:
        scopes = [("all statements (withdraw entirely)", EVERYTHING)]
        scopes += [(f"{code} only", code) for code in self.statements]
        with VerticalScroll(id="withdrawal-form"):
            yield Static(
                f"Withdraw consent: {self.participant}", id="withdrawal-title", classes="title"
            )
            yield row(
                "Scope",
                Select(scopes, allow_blank=False, value=EVERYTHING, id="scope", compact=True),
                field="scope",
            )
            yield row(
                "Date",
                Input(date.today().isoformat(), id="withdrawn_on", compact=True),
                field="withdrawn_on",
            )
            yield row(
                "Requested by",
                Input(placeholder="who asked, and how", id="requested_by", compact=True),
                field="requested_by",
            )
            yield row(
                "Disposition",
                Select(
                    DISPOSITIONS,
                    allow_blank=False,
                    value="keep_no_use",
                    id="disposition",
                    compact=True,
                ),
                field="disposition",
            )
            yield row(
                "Reason", Input(placeholder="optional", id="reason", compact=True), field="reason"
            )
            yield Static(
                "Ctrl+S reviews what this touches; nothing is written before Ctrl+Y.",
                id="impact",
                classes="muted",
            )

    def on_mount(self) -> None:
        self.query_one("#requested_by", Input).focus()

    def take_scan(self, result: Scan) -> bool:
        self.app.notify(
            f"Finish or cancel the withdrawal first; {result.code} was not used",
            severity="warning",
        )
        return True

    # --- the form ----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "review":
            return self.done is None
        if action == "confirm":
            return self.reviewed is not None and self.done is None
        if action == "pull_list":
            return self.done is not None and self.done.disposition.value in PULLED
        return True

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "scope":
            disposition = self.query_one("#disposition", Select)
            everything = event.value == EVERYTHING
            allowed = DISPOSITIONS if everything else DISPOSITIONS[:1]
            if not everything and disposition.value in PULLED:
                self.app.notify(
                    "A withdrawal of one statement keeps the specimens: destroy and return "
                    "apply to a withdrawal of everything",
                    severity="warning",
                )
            kept = disposition.value if everything else "keep_no_use"
            disposition.set_options(allowed)
            disposition.value = kept
        self._unreview()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id in FIELDS:
            self._unreview()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "reason":
            self.action_review()
        else:
            self.focus_next()

    def _unreview(self) -> None:
        """The form changed: the impact shown is no longer what would be confirmed."""
        if self.reviewed is not None and self.done is None:
            self.reviewed = None
            self.query_one("#impact", Static).update(
                "Changed: Ctrl+S reviews again; nothing is written before Ctrl+Y."
            )
            self.refresh_bindings()

    def read_form(self) -> dict:
        """The service's arguments; only the date's shape is checked here."""
        scope = self.query_one("#scope", Select).value
        reason = self.query_one("#reason", Input).value.strip()
        return {
            "participant": self.participant,
            "statement": None if scope == EVERYTHING else scope,
            "withdrawn_on": parse_day(self.query_one("#withdrawn_on", Input).value, "withdrawn_on"),
            "requested_by": self.query_one("#requested_by", Input).value.strip(),
            "disposition": self.query_one("#disposition", Select).value,
            "reason": reason or None,
        }

    # --- review, then confirm ------------------------------------------------------------

    def action_review(self) -> None:
        self.clear_errors()
        try:
            arguments = self.read_form()
        except ValidationError as error:
            self.refuse(error)
            return
        actor = self.app.actor

        def reviewed(report: ImpactReport) -> None:
            self.reviewed = arguments
            impact = self.query_one("#impact", Static)
            impact.update(impact_text(report, arguments["disposition"]))
            impact.scroll_visible()
            self.refresh_bindings()

        self.app.run_db(
            lambda session: withdrawals.review_withdrawal(session, actor=actor, **arguments),
            reviewed,
            readonly=True,
            failed=self.show_at_field,
        )

    def action_confirm(self) -> None:
        arguments, actor = self.reviewed, self.app.actor
        if arguments is None:
            return
        self.reviewed = None  # one confirmation per review: a second key press does nothing
        self.refresh_bindings()

        def withdraw(session) -> tuple[WithdrawalRead, list[PullItem]]:
            withdrawal, _ = withdrawals.withdraw(session, actor=actor, **arguments)
            waiting = pulls.pull_list(session, actor=actor, participant=self.participant)
            return withdrawal, waiting

        self.app.run_db(withdraw, self.withdrawn, failed=self.not_withdrawn)

    def not_withdrawn(self, error: BiobankError) -> None:
        self.show_at_field(error)
        self.query_one("#impact", Static).update(
            plain(f"Not recorded: {error.message}. Correct the form; Ctrl+S reviews again.")
        )

    def withdrawn(self, result: tuple[WithdrawalRead, list[PullItem]]) -> None:
        withdrawal, waiting = result
        self.done = withdrawal
        for field in FIELDS:
            self.query_one(f"#{field}").disabled = True
        self.set_focus(None)
        scope = withdrawal.statement or "all statements"
        lines = [
            Text(
                f"Withdrawal recorded ({scope}, {withdrawal.disposition.value}): "
                f"{withdrawal.flagged} specimens flagged.",
                style="bold",
            )
        ]
        if withdrawal.disposition.value in PULLED:
            lines.append(
                Text(f"{len(waiting)} tubes are on the pull list: p opens it.", "bold red")
            )
        lines.append(Text("Escape: back to the participant"))
        self.query_one("#impact", Static).update(Text("\n").join(lines))
        self.refresh_bindings()
        self.app.notify(f"Consent withdrawn: {withdrawal.flagged} specimens flagged")

    def action_pull_list(self) -> None:
        self.app.open_pull_list(instead_of_this=True)
