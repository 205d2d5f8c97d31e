"""A specimen: what it is, where it is, its lineage and history, and what can be done to it.

Scanning a box here proposes moving the tube there, and Enter moves it (scan the tube, scan
the box, Enter): a stray scan never rewrites the inventory. `u` takes the last move back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from biobank.errors import InvalidTransition
from biobank.services import custody
from biobank.services.audit import AuditEntryRead, audit_log
from biobank.services.scan import BoxScan, Scan, SpecimenView, specimen_view
from biobank.services.specimens import show_specimen
from biobank.services.storage import BoxView
from tui.printing import print_specimen_labels
from tui.screens.base import WorkScreen
from tui.text import plain
from tui.widgets.consent import consent_badge, withdrawal_words

UNDO_REASON = "undo of the last move"
MOVE_HINT = "Scan a box to move the tube there."


@dataclass(frozen=True)
class Move:
    """A move of a tube: proposed on its screen, then made (the app keeps the last for `u`)."""

    accession_id: str
    source: tuple[str, str] | None  # (box, position) it was at; None when it had no place
    box: str
    position: str

    def question(self) -> str:
        source = " ".join(self.source) if self.source else "no position"
        return (
            f"Move {self.accession_id} from {source} to {self.box} (first free: "
            f"{self.position})? Enter moves · Escape cancels"
        )


def _no_undo(move: Move | None, accession_id: str) -> str | None:
    """Why `u` on this tube's screen takes nothing back (None: it can)."""
    if move is None:
        return "No move to undo this session"
    if move.accession_id != accession_id:
        return f"The last move was of {move.accession_id}, not of this tube"
    if move.source is None:
        return f"{move.accession_id} had no position before the last move: nowhere to go back"
    return None


class ReasonPrompt(ModalScreen[str | None]):
    """Asks why (disposal, reprint…); Escape cancels."""

    DEFAULT_CSS = """
    ReasonPrompt { align: center middle; }
    ReasonPrompt Vertical { width: 60; height: auto; border: round $warning; padding: 1 2; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="cancel_reason")]  # noqa: RUF012

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question)
            yield Input(placeholder="reason", id="reason")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class AuditEntries(ModalScreen):
    """The audit trail of one specimen: who changed what, from what, to what, and why."""

    DEFAULT_CSS = "AuditEntries { align: center middle; } AuditEntries DataTable { width: 95%; }"
    BINDINGS = [Binding("escape", "dismiss", "Close", id="close_audit")]  # noqa: RUF012

    def __init__(self, entries: list[AuditEntryRead]) -> None:
        super().__init__()
        self.entries = entries

    def compose(self) -> ComposeResult:
        table = DataTable(zebra_stripes=True)
        table.add_columns("when (UTC)", "who", "where", "action", "changed", "reason")
        for entry in self.entries:
            before, after = entry.before or {}, entry.after or {}
            changed = [k for k in after if before.get(k) != after.get(k) and k != "updated_at"]
            table.add_row(
                entry.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
                plain(entry.actor),
                plain(entry.workstation),
                entry.action,
                ", ".join(changed) if before else "created",
                plain(entry.reason),
            )
        yield table


class SpecimenScreen(WorkScreen):
    DEFAULT_CSS = "SpecimenScreen #move.proposed { color: $warning; text-style: bold; }"
    BINDINGS = [  # noqa: RUF012
        Binding("enter", "confirm_move", "Move the tube", id="confirm_move"),
        Binding("o", "check_out", "Check out", id="check_out"),
        Binding("i", "check_in", "Check in", id="check_in"),
        Binding("t", "thaw", "Record a thaw", id="thaw"),
        Binding("d", "deplete", "Deplete", id="deplete"),
        Binding("x", "dispose", "Dispose", id="dispose"),
        Binding("p", "print_label", "Print label", id="print_label"),
        Binding("P", "reprint_label", "Reprint label (asks why)", id="reprint_label"),
        Binding("r", "refresh", "Refresh", id="refresh_specimen"),
        Binding("a", "audit", "Audit entries (admins)", id="specimen_audit"),
        Binding("u", "undo_move", "Undo the last move", id="undo_move"),
    ]

    def __init__(self, accession_id: str, view: SpecimenView | None = None) -> None:
        """`view`: the tube as read with its scan (else it is loaded once mounted)."""
        super().__init__()
        self.accession_id = accession_id
        self.version: int | None = None
        self.place: tuple[str, str] | None = None  # (box, position) as shown
        self.proposal: tuple[Move, BoxView] | None = None  # the move Enter makes
        self._loaded = view

    def compose_body(self) -> ComposeResult:
        yield Static(self.accession_id, id="specimen-title", classes="title", markup=False)
        flag = Static("", id="consent-flag", classes="withdrawn-flag", markup=False)
        flag.display = False
        yield flag
        yield Static("Loading…", id="detail", markup=False)
        yield Static(MOVE_HINT, id="move", classes="muted", markup=False)
        table = DataTable(id="history", zebra_stripes=True, cursor_type="row")
        table.add_columns("when (UTC)", "event", "by", "from", "to", "change", "reason")
        yield table

    def on_mount(self) -> None:
        if self._loaded is not None:
            self.show(self._loaded)
        else:
            self.action_refresh()
        self._loaded = None

    def open(self, accession_id: str, view: SpecimenView) -> None:
        """Show another tube in this screen (a tube scanned, this screen shown or kept)."""
        self.accession_id, self.version = accession_id, None
        self.show(view)

    def action_refresh(self) -> None:
        self.app.run_db(
            lambda session: specimen_view(
                session, actor=self.app.actor, accession=self.accession_id
            ),
            self.show,
            readonly=True,
        )

    def show(self, view: SpecimenView) -> None:
        detail = view.detail
        s = detail.specimen
        if s.accession_id != self.accession_id:
            return  # a late answer for the tube this screen showed before the last scan
        self.version = s.version
        self.place = (s.box_barcode, s.position) if s.box_barcode else None
        self.query_one("#specimen-title", Static).update(
            f"{s.accession_id}  {s.specimen_type} {s.kind}  [{s.status.upper()}]"
        )
        self.show_consent_flag(view)
        lines = [
            f"Participant {s.participant_code}  visit {s.visit_label or '-'}",
            consent_badge(view.consent),
            f"Quantity {s.quantity:g} of {s.initial_quantity:g} {s.unit}   "
            f"freeze-thaws {s.freeze_thaw_count}   minutes out {s.minutes_out}",
            f"Location {s.location or 'not placed'}",
            f"SPREC {s.sprec_code or '-'}   legacy ID {s.legacy_id or '-'}",
            f"Parent {s.parent_accession_id or '-'}   children {', '.join(detail.children) or '-'}",
        ]
        if s.notes:  # an imported sheet's comments, or what was typed at accession
            lines.append(f"Notes {s.notes}")
        lines += [f"⚠ {w}" for w in s.warnings]
        self.query_one("#detail", Static).update(
            Text("\n").join(plain(line) if isinstance(line, str) else line for line in lines)
        )
        table = self.query_one("#history", DataTable)
        table.clear()
        for e in detail.events:
            table.add_row(
                e.occurred_at.strftime("%Y-%m-%d %H:%M"),
                e.event_type,
                plain(e.actor),
                plain(e.from_location),
                plain(e.to_location),
                "" if e.quantity_change is None else f"{e.quantity_change:+g}",
                plain(e.reason),
            )

    def show_consent_flag(self, view: SpecimenView) -> None:
        """A tube whose participant withdrew consent says so before anything else."""
        flag = self.query_one("#consent-flag", Static)
        withdrawal_id = view.detail.specimen.consent_withdrawal_id
        flag.display = withdrawal_id is not None
        if withdrawal_id is None:
            return
        withdrawal = next((w for w in view.consent.withdrawals if w.id == withdrawal_id), None)
        words = f"  {withdrawal_words(withdrawal)}" if withdrawal else ""
        pulled = " — on the pull list" if view.on_pull_list else ""
        flag.update(f"⊘ CONSENT WITHDRAWN{words}{pulled}")

    def _act(self, call, *, then: Callable[[], None] | None = None, **kwargs) -> None:
        """Change the tube through `call`, show it, then `then`."""

        def change(session):
            read = call(
                session,
                actor=self.app.actor,
                accession=self.accession_id,
                expected_version=self.version,
                **kwargs,
            )
            view = specimen_view(session, actor=self.app.actor, accession=read.accession_id)
            return view, read

        def done(result) -> None:
            view, read = result
            for warning in read.warnings:
                self.app.notify(warning, severity="warning", timeout=8)
            self.show(view)
            if then is not None:
                then()

        self.app.run_db(change, done)

    # --- moving: a box scanned proposes, Enter moves, `u` takes it back ------------------

    def take_scanned(self, result: Scan) -> bool:
        """A scanned box (its grid read with the scan) proposes moving the tube there. Any
        scan while a move is proposed cancels it, and what was scanned opens."""
        if self.proposal is not None:
            self.propose(None)
            return False
        if not isinstance(result, BoxScan) or result.view is None:
            return False
        view = result.view
        free = next((cell.label for cell in view.cells if cell.accession_id is None), None)
        if free is None:
            self.app.bell()
            self.app.notify(
                f"{view.unit.barcode} is full: nowhere to move the tube", severity="error"
            )
        else:
            self.propose((Move(self.accession_id, self.place, view.unit.barcode, free), view))
        return True

    def propose(self, proposal: tuple[Move, BoxView] | None) -> None:
        """Show the move Enter would make in place of the hint (None: withdraw it)."""
        self.proposal = proposal
        line = self.query_one("#move", Static)
        line.update(proposal[0].question() if proposal else MOVE_HINT)
        line.set_class(proposal is not None, "proposed")
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return action != "confirm_move" or self.proposal is not None

    def on_screen_suspend(self) -> None:
        """A proposal is answered here and now: leaving the screen drops it."""
        if self.proposal is not None:
            self.propose(None)

    def action_back(self) -> None:
        """Escape on a proposal cancels it and shows the box that was scanned."""
        if self.proposal is None:
            super().action_back()
            return
        box = self.proposal[1]
        self.propose(None)
        self.app.open_box(box.unit.barcode, box)

    def action_confirm_move(self) -> None:
        move, _ = self.proposal
        self.propose(None)

        def moved() -> None:
            self.app.last_move = move
            self.app.notify(f"Moved {move.accession_id} to {move.box} {move.position} · u undoes")

        self._act(custody.move, destination=move.box, position=move.position, then=moved)

    def action_undo_move(self) -> None:
        """Only the session's last move, and only while the tube is where that move put it."""
        move = self.app.last_move
        refusal = _no_undo(move, self.accession_id)
        if refusal is not None:
            self.app.bell()
            self.app.notify(refusal, title="Not undone", severity="warning")
            return

        def undo(session, *, actor, accession, expected_version):
            now = show_specimen(session, actor=actor, accession=accession).specimen
            if (now.box_barcode, now.position) != (move.box, move.position):
                raise InvalidTransition(
                    f"{accession} is at {now.location or 'no position'} now, not where the last "
                    f"move put it ({move.box} {move.position}): not undone"
                )
            box, position = move.source
            return custody.move(
                session, actor=actor, accession=accession, destination=box, position=position,
                reason=UNDO_REASON, expected_version=expected_version,
            )  # fmt: skip

        def undone() -> None:
            self.app.last_move = None
            self.app.notify(f"Moved {move.accession_id} back to {' '.join(move.source)}")

        self._act(undo, then=undone)

    def action_check_out(self) -> None:
        self._act(custody.check_out)

    def action_check_in(self) -> None:
        self._act(custody.check_in)

    def action_thaw(self) -> None:
        self._act(custody.record_thaw)

    def action_deplete(self) -> None:
        self._act(custody.deplete)

    def action_dispose(self) -> None:
        def answered(reason: str | None) -> None:
            if reason:
                self._act(custody.dispose, reason=reason)

        self.app.push_screen(ReasonPrompt(f"Why is {self.accession_id} disposed?"), answered)

    def action_audit(self) -> None:
        def entries(session):
            specimen = show_specimen(session, actor=self.app.actor, accession=self.accession_id)
            return audit_log(
                session,
                actor=self.app.actor,
                entity="specimen",
                entity_id=str(specimen.specimen.id),
            )

        self.app.run_db(
            entries, lambda found: self.app.push_screen(AuditEntries(found)), readonly=True
        )

    def action_print_label(self) -> None:
        """A tube printed before is not printed again: the notice points to `P`."""
        print_specimen_labels(self.app, [self.accession_id], then=self.action_refresh)

    def action_reprint_label(self) -> None:
        def answered(reason: str | None) -> None:
            if reason:
                print_specimen_labels(
                    self.app, [self.accession_id], reason=reason, then=self.action_refresh
                )

        self.app.push_screen(ReasonPrompt(f"Why reprint {self.accession_id}?"), answered)
