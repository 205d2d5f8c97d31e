"""Reconcile a box: scan its tubes one by one (or load a scanner's file) and see every
position as match, moved, unexpected, missing or unread; commit makes the inventory agree.

Scans by hand become the rows of a scanner file, so the comparison is the service the CLI runs
on a real export: nothing here decides a position's status. Nothing changes before commit.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from biobank.services.reconcile import STATUSES, ReconcileReport, read_scan_file, reconcile_box
from biobank.services.scan import BoxScan, KitScan, Scan, SpecimenScan, UnknownScan
from biobank.services.storage import fill_positions
from tui.screens.base import WorkScreen
from tui.text import plain

# A scanner file's rows: position, tube code, and the scanner's word for no code.
Row = tuple[str, str, str]
HEADER: Row = ("Position", "Tube ID", "Status")
EMPTY, UNREAD = "NO TUBE", "NO READ"
STATUS_STYLE = {
    "match": "green",
    "moved": "bold yellow",
    "unexpected": "bold magenta",
    "missing": "bold red",
    "unread": "dim",
    "empty": "dim",
}


def rows_text(rows: list[Row]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows([HEADER, *rows])
    return out.getvalue()


class Confirm(ModalScreen[bool]):
    """A yes-or-no question; Escape means no."""

    DEFAULT_CSS = """
    Confirm { align: center middle; }
    Confirm Vertical { width: 64; height: auto; border: round $warning; padding: 1 2; }
    Confirm Static { width: 100%; }
    """
    BINDINGS = [  # noqa: RUF012
        Binding("y", "answer(True)", "Yes", id="confirm_yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm_no"),
    ]
    KEYS = "y: yes    n: no"

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.question))  # it names a box, maybe a file: never markup
            yield Static(self.KEYS, classes="muted")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ConfirmLeave(Confirm):
    """Leaving with scans not committed: Escape again stays, so a slip of the key loses
    nothing; Enter, like y, agrees to leave."""

    BINDINGS = [Binding("enter", "answer(True)", "Leave", id="confirm_leave")]  # noqa: RUF012
    KEYS = "y or Enter: discard and leave    n or Escape: stay"


class ReconcileScreen(WorkScreen):
    BINDINGS = [  # noqa: RUF012
        Binding("e", "empty", "Position empty", id="reconcile_empty"),
        Binding("s", "unreadable", "Skip: unreadable", id="reconcile_unreadable"),
        Binding("E", "rest_empty", "Rest of the box empty", id="reconcile_rest_empty"),
        Binding("backspace", "undo", "Undo the last scan", id="reconcile_undo"),
        Binding("l", "load_file", "Load a scanner file", id="reconcile_load_file"),
        Binding("ctrl+s", "commit", "Commit", id="reconcile_commit"),
    ]

    def __init__(self, box: str | None = None) -> None:
        super().__init__()
        self.start_box = box
        self.box: str | None = None
        self.order: list[str] = []  # the box's positions in its fill order
        self.rows: list[Row] = []  # scanned by hand, in fill order
        self.file: tuple[str, str] | None = None  # a loaded scanner file: (name, text)
        self.report: ReconcileReport | None = None

    def compose_body(self) -> ComposeResult:
        yield Static("Reconcile a box", id="reconcile-title", classes="title")
        yield Static("Scan the box to reconcile.", id="reconcile-next", classes="prompt")
        yield Static("", id="reconcile-counts", classes="muted")
        path = Input(placeholder="path of the scanner file, then Enter", id="scan-file")
        path.display = False
        yield path
        table = DataTable(id="reconcile-lines", zebra_stripes=True, cursor_type="row")
        table.add_columns("position", "status", "expected", "printed", "found", "note")
        yield table

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        if self.start_box:
            self.start(self.start_box)

    # --- what is compared ----------------------------------------------------------------

    @property
    def scan(self) -> str:
        return self.file[1] if self.file else rows_text(self.rows)

    @property
    def source(self) -> str:
        return self.file[0] if self.file else f"scanned by hand at {self.app.settings.workstation}"

    @property
    def next_position(self) -> str | None:
        return self.order[len(self.rows)] if len(self.rows) < len(self.order) else None

    def start(self, barcode: str) -> None:
        actor = self.app.actor

        def load(session):
            order = fill_positions(session, actor=actor, barcode=barcode)
            return order, reconcile_box(session, actor=actor, box=barcode, scan=rows_text([]))

        def started(loaded) -> None:
            self.order, report = loaded
            self.box, self.rows, self.file = report.box, [], None
            self.show(report)

        self.app.run_db(load, started, readonly=True)

    def compare(self) -> None:
        """Ask the service what the scans so far say; a slower answer to older scans is
        dropped."""
        scan, source, box = self.scan, self.source, self.box
        self.show_prompt()
        self.app.run_db(
            lambda session: reconcile_box(
                session, actor=self.app.actor, box=box, scan=scan, source=source
            ),
            lambda report: self.show(report) if (scan, box) == (self.scan, self.box) else None,
            readonly=True,
        )

    # --- scans and keys ------------------------------------------------------------------

    def take_scan(self, result: Scan) -> bool:
        """A box starts its reconciliation; anything a tube's label could be is placed."""
        match result:
            case BoxScan(unit=unit):
                if self.rows or self.file:
                    self.app.notify(
                        f"{self.box} is being reconciled: commit it (Ctrl+S) or leave (Escape) "
                        "first",
                        severity="warning",
                    )
                else:
                    self.start(unit.barcode)
            case SpecimenScan(specimen=specimen):
                self.place(specimen.accession_id, "")
            case KitScan(code=code) | UnknownScan(code=code):
                if code:
                    self.place(code, "")
            case _:
                return False
        return True

    def ready(self) -> bool:
        """Whether the next position can take a scan; if not, say why."""
        if self.box is None:
            problem = "Scan the box first"
        elif self.file:
            problem = f"Comparing with {self.file[0]}: Backspace drops it"
        elif self.next_position is None:
            problem = "Every position is scanned: commit or undo"
        else:
            return True
        self.app.notify(problem, severity="warning")
        return False

    def place(self, tube: str, word: str) -> None:
        if not self.ready():
            return
        earlier = next((p for p, code, _ in self.rows if tube and code == tube), None)
        if earlier:
            self.app.bell()
            self.app.notify(f"{tube} is already scanned at {earlier}", severity="error")
            return
        self.rows.append((self.next_position, tube, word))
        self.compare()

    def action_empty(self) -> None:
        self.place("", EMPTY)

    def action_unreadable(self) -> None:
        self.place("", UNREAD)

    def action_rest_empty(self) -> None:
        if self.ready():
            self.rows += [(p, "", EMPTY) for p in self.order[len(self.rows) :]]
            self.compare()

    def action_undo(self) -> None:
        if self.file:
            self.file = None
        elif self.rows:
            self.rows.pop()
        else:
            return
        self.compare()

    def action_load_file(self) -> None:
        if self.box is None:
            self.app.notify("Scan the box first", severity="warning")
            return
        path = self.query_one("#scan-file", Input)
        path.display = True
        path.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "scan-file" or not event.value.strip():
            return
        event.input.display = False
        self.query_one(DataTable).focus()
        path, box, actor = Path(event.value.strip()).expanduser(), self.box, self.app.actor

        def load(session):
            text = read_scan_file(path)
            return text, reconcile_box(session, actor=actor, box=box, scan=text, source=path.name)

        def loaded(result) -> None:
            text, report = result
            self.file, self.rows = (path.name, text), []
            self.show(report)

        self.app.run_db(load, loaded, readonly=True)

    def action_back(self) -> None:
        """Hide the file path being typed; else leave, asking first when scans would be lost
        (nothing is kept of them before commit)."""
        path = self.query_one("#scan-file", Input)
        if path.display:
            path.display = False
            self.query_one(DataTable).focus()
            return
        if not (self.rows or self.file):
            super().action_back()
            return
        count = len(self.rows)
        lost = (
            f"The comparison with {self.file[0]}"
            if self.file
            else f"{count} scanned position{'' if count == 1 else 's'}"
        )
        question = f"Leave {self.box} without committing? {lost} will be discarded."

        def answered(leave: bool | None) -> None:
            if leave:
                WorkScreen.action_back(self)

        self.app.push_screen(ConfirmLeave(question), answered)

    def action_commit(self) -> None:
        report = self.report
        if self.box is None or report is None or not (self.rows or self.file):
            self.app.notify("Scan a box and its tubes first", severity="warning")
            return
        scan, source, box = self.scan, self.source, self.box
        question = (
            f"Commit {box}?\n{len(report.moves)} moved here, {len(report.missing)} marked "
            f"missing, {len(report.released)} held positions released."
        )

        def committed(done: ReconcileReport) -> None:
            self.box, self.rows, self.file = None, [], None
            self.show(done)
            self.app.notify(
                f"{done.box} reconciled: {len(done.moves)} moved, "
                f"{len(done.missing)} marked missing, {len(done.released)} released"
            )

        def answered(yes: bool | None) -> None:
            if yes:
                self.app.run_db(
                    lambda session: reconcile_box(
                        session,
                        actor=self.app.actor,
                        box=box,
                        scan=scan,
                        source=source,
                        commit=True,
                    ),
                    committed,
                )

        self.app.push_screen(Confirm(question), answered)

    # --- showing -------------------------------------------------------------------------

    def show(self, report: ReconcileReport) -> None:
        self.report = report
        done = " (committed)" if report.committed else ""
        self.query_one("#reconcile-title", Static).update(
            plain(f"Reconcile {report.path}  [{report.box}]{done}")
        )
        counts = Text("  ").join(
            Text(f"{status} {report.counts[status]}", style=STATUS_STYLE[status])
            for status in STATUSES
        )
        by_hand = self.box is not None and not self.file
        if by_hand:
            counts.append(f"  scanned {len(self.rows)}/{len(report.lines)}")
        self.query_one("#reconcile-counts", Static).update(counts)
        scanned = {position for position, _, _ in self.rows}
        table = self.query_one(DataTable)
        table.clear()
        for line in report.lines:
            waiting = by_hand and line.position not in scanned
            table.add_row(
                line.position,
                Text(line.status, style=STATUS_STYLE[line.status]),
                line.expected or "",
                plain(line.printed),
                plain(line.found),
                plain("not scanned yet" if waiting else line.note),
                key=line.position,
            )
        self.show_prompt()

    def show_prompt(self) -> None:
        prompt = self.query_one("#reconcile-next", Static)
        position = self.next_position
        if self.box is None:
            done = (
                f"{self.report.box} reconciled. " if self.report and self.report.committed else ""
            )
            prompt.update(f"{done}Scan the box to reconcile.")
        elif self.file:
            prompt.update(
                plain(f"Compared with {self.file[0]}. Ctrl+S commits; Backspace drops it.")
            )
        elif position is None:
            prompt.update("Every position is scanned. Ctrl+S commits; Backspace undoes.")
        else:
            lines = {line.position: line for line in self.report.lines} if self.report else {}
            expected = lines[position].expected if position in lines else None
            prompt.update(
                f"Next: {position} (recorded {expected or 'empty'}): "
                "scan its tube, or e empty, s unreadable"
            )
            table = self.query_one(DataTable)
            if table.row_count:
                table.move_cursor(row=table.get_row_index(position))
