"""Picking a specimen request at the freezer: type the request's code, then scan each tube as it
comes out of its box, in the list's freezer order. The right tube is ticked (a tube of a line
of aliquots is split: its aliquots take its line, their labels printed); a wrong tube, or one
whose consent was withdrawn since approval, is refused loudly (the bell, the title flashes red,
an error names it) and nothing changes. Lines whose consent no longer allows the request are
marked DO NOT PICK from the start. A tube not where the list says is marked missing with `m`
(the next one to pick: it leaves the request), and `s` then replaces it with another tube of its
participant that meets the same line.

The list is drawn a line at a time (`LineTable`); a scan redraws its own line and the counts.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input, Static

from biobank.errors import BiobankError
from biobank.services import request_picks
from biobank.services.request_picks import PickItem, PickList, PickOutcome
from biobank.services.scan import Scan, scanned_tube
from tui.printing import print_specimen_labels
from tui.screens.base import WorkScreen
from tui.text import plain
from tui.widgets.line_table import LineTable

COLUMNS = ("tube", "box", "pos", "line", "type", "note", "picked")
PICKED_COLUMN = COLUMNS.index("picked")


class PickListScreen(WorkScreen):
    SCAN_HELP = "tick the scanned tube on the request's pick list"
    BINDINGS = [  # noqa: RUF012
        Binding("r", "refresh", "Refresh", id="refresh_pick_list"),
        Binding("m", "missing", "Next tube missing", id="pick_missing"),
        Binding("s", "substitute", "Replace the missing tube", id="pick_substitute"),
    ]

    def __init__(self, code: str | None = None) -> None:
        super().__init__()
        self.code = code
        self.items: dict[str, PickItem] = {}  # by accession ID, in freezer order
        self.missing: str | None = None  # the tube last marked missing, to replace

    def compose_body(self) -> ComposeResult:
        yield Static("Pick a request", id="pick-title", classes="title")
        yield Input(placeholder="Request code, e.g. REQ-2026-0001, then Enter", id="pick-request")
        yield Static("", id="pick-prompt", classes="prompt")
        yield LineTable(*COLUMNS, id="pick-lines")

    def on_mount(self) -> None:
        if self.code:
            self.query_one("#pick-request", Input).value = self.code
            self.action_refresh()
        else:
            self.query_one("#pick-request", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "pick-request":
            event.stop()
            self.code = event.value.strip().upper() or None
            self.action_refresh()

    def action_refresh(self) -> None:
        if not self.code:
            return
        code = self.code

        def loaded(found: PickList) -> None:
            self.items = {item.accession_id: item for item in found.items}
            self.show()
            self.query_one(LineTable).focus()

        self.app.run_db(
            lambda session: request_picks.pick_list(session, actor=self.app.actor, code=code),
            loaded,
            readonly=True,
        )

    def take_scan(self, result: Scan) -> bool:
        accession = scanned_tube(result)
        if accession is None:
            return False
        if not self.code or not self.items:
            self.refused(f"{accession}: load a request's pick list first")
            return True
        code = self.code
        self.app.run_db(
            lambda session: request_picks.pick(
                session, actor=self.app.actor, code=code, accession=accession
            ),
            self.picked,
            failed=lambda _error: self.flash(),
        )
        return True

    def refused(self, text: str) -> None:
        self.app.show_error(BiobankError(text))
        self.flash()

    def flash(self) -> None:
        """A refusal seen from the freezer: the title turns red for a moment."""
        title = self.query_one("#pick-title", Static)
        title.add_class("refused")
        self.set_timer(1.5, lambda: title.remove_class("refused"))

    def action_missing(self) -> None:
        """The next tube to pick is not in its place: missing, off the request."""
        tube = self.query_one(LineTable).marked
        if not self.code or tube is None:
            return
        code = self.code

        def done(_: object) -> None:
            self.missing = tube
            self.app.notify(f"{tube} marked missing: press s to replace it", severity="warning")
            self.action_refresh()

        self.app.run_db(
            lambda session: request_picks.mark_missing(
                session, actor=self.app.actor, code=code, accession=tube,
                reason=f"not found when picking {code}",
            ),
            done,
        )  # fmt: skip

    def action_substitute(self) -> None:
        """Replace the tube last marked missing with another of its participant's."""
        if not self.code or self.missing is None:
            self.app.notify("Mark a tube missing first (m)", severity="warning")
            return
        code, tube = self.code, self.missing

        def done(item: PickItem) -> None:
            self.missing = None
            where = " ".join(p for p in (item.box_barcode, item.position) if p) or "not placed"
            self.app.notify(f"{tube} replaced by {item.accession_id} at {where}")
            self.action_refresh()

        self.app.run_db(
            lambda session: request_picks.substitute(
                session, actor=self.app.actor, code=code, accession=tube
            ),
            done,
        )

    def picked(self, outcome: PickOutcome) -> None:
        table = self.query_one(LineTable)
        if outcome.outcome == "split":  # the aliquots take the parent's line, their labels out
            made = [a.accession_id for a in outcome.aliquots]
            self.app.notify(f"split into {', '.join(made)}", title="Picked")
            self.action_refresh()
            print_specimen_labels(self.app, made)
            return
        item = outcome.item
        if item.accession_id not in self.items:
            self.action_refresh()
            return
        self.items[item.accession_id] = item
        table.set_cell(item.accession_id, PICKED_COLUMN, _picked(item))
        self.show_progress()
        if outcome.outcome == "already picked":
            self.app.notify(f"{item.accession_id} is picked already", severity="warning")

    def show(self) -> None:
        self.query_one(LineTable).set_rows(
            {
                item.accession_id: [
                    plain(item.accession_id),
                    plain(item.box_barcode or "not placed"),
                    plain(item.position),
                    plain(str(item.line_no or "")),
                    plain(item.specimen_type),
                    Text(item.blocked, style="bold red")
                    if item.blocked
                    else plain(item.split or ""),
                    _picked(item),
                ]
                for item in self.items.values()
            }
        )
        self.show_progress()

    def show_progress(self) -> None:
        """The counts, and the next tube to pick, its line marked."""
        items = list(self.items.values())
        picked = sum(1 for i in items if i.picked)
        blocked = sum(1 for i in items if i.blocked)
        left = len(items) - picked - blocked
        title = f"Pick {self.code}: {left} to pick, {picked} picked"
        self.query_one("#pick-title", Static).update(
            title + (f", {blocked} NOT TO PICK (consent)" if blocked else "")
        )
        following = next((i for i in items if not i.picked and not i.blocked), None)
        prompt = self.query_one("#pick-prompt", Static)
        if following is None:
            prompt.update("Everything is picked." if items else "Nothing to pick.")
        else:
            where = " ".join(
                part
                for part in (following.location, following.box_barcode, following.position)
                if part
            )
            prompt.update(
                plain(f"Next: {following.accession_id} at {where or '—'}. Scan each tube.")
            )
        self.query_one(LineTable).mark(following and following.accession_id)


def _picked(item: PickItem) -> Text:
    if item.blocked:
        return Text("DO NOT PICK", style="bold red")
    return Text("✓ picked", style="green") if item.picked else Text("to pick")
