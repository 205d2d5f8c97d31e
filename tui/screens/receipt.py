"""Receiving a shipment from another biobank at the bench: type the shipment's code (its
manifest received with `biobank shipment receive`), scan the box the tubes go into, then each
tube as it comes out of the shipper. A tube on the manifest is accessioned and placed (`d`
first: it thawed on arrival); one not on it is recorded as unexpected, loudly; `c` closes the
receipt, and every tube never scanned is missing.

The manifest's tubes are drawn a line at a time (`LineTable`); a scan redraws its own line."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input, Static

from biobank.services import shipment_receipt
from biobank.services.scan import BoxScan, Scan, SpecimenScan, scanned_tube
from biobank.services.shipment_receipt import ReceiptLine, ReceiptRead
from tui.screens.base import WorkScreen
from tui.text import plain
from tui.widgets.line_table import LineTable

COLUMNS = ("sender's tube", "donor", "type", "quantity", "status", "ours")
STATUS_COLUMN = COLUMNS.index("status")
STYLES = {"received": "green", "damaged": "yellow", "missing": "bold red", "unexpected": "bold red"}


class ReceiptScreen(WorkScreen):
    SCAN_HELP = "scan in a tube of the received shipment (or the box they go into)"
    BINDINGS = [  # noqa: RUF012
        Binding("d", "damaged", "Next tube thawed on arrival", id="receipt_damaged"),
        Binding("c", "close", "Close: the rest are missing", id="receipt_close"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.code: str | None = None
        self.box: str | None = None
        self.damaged = False
        self.lines: dict[str, ReceiptLine] = {}

    def compose_body(self) -> ComposeResult:
        yield Static("Receive a shipment", id="receipt-title", classes="title")
        yield Input(placeholder="The shipment's code, e.g. SHP-2026-0001, then Enter",
                    id="receipt-code")  # fmt: skip
        yield Static("", id="receipt-prompt", classes="prompt")
        yield LineTable(*COLUMNS, id="receipt-lines")

    def on_mount(self) -> None:
        self.query_one("#receipt-code", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "receipt-code":
            event.stop()
            self.code = event.value.strip().upper() or None
            self.load()

    def load(self) -> None:
        if not self.code:
            return
        code = self.code

        def loaded(found: ReceiptRead) -> None:
            self.lines = {line.sender_accession: line for line in found.items}
            self.show(found)
            self.query_one(LineTable).focus()

        self.app.run_db(
            lambda session: shipment_receipt.show_receipt(
                session, actor=self.app.actor, shipment=code
            ),
            loaded,
            readonly=True,
        )

    def take_scan(self, result: Scan) -> bool:
        if isinstance(result, BoxScan):
            self.box = result.unit.barcode
            self.prompt()
            return True
        tube = result.code if isinstance(result, SpecimenScan) else scanned_tube(result)
        if tube is None:
            return False
        if not self.code or not self.lines:
            self.app.bell()
            self.app.notify("Type the shipment's code first", severity="error")
            return True
        code, box, damaged = self.code, self.box, self.damaged
        self.damaged = False
        self.app.run_db(
            lambda session: shipment_receipt.check_in(
                session, actor=self.app.actor, shipment=code, tube=tube, damaged=damaged,
                destination=box,
            ),
            self.checked_in,
        )  # fmt: skip
        return True

    def checked_in(self, line: ReceiptLine) -> None:
        table = self.query_one(LineTable)
        known = line.sender_accession in self.lines
        self.lines[line.sender_accession] = line
        if known:
            table.set_cell(line.sender_accession, STATUS_COLUMN, _status(line))
            table.set_cell(line.sender_accession, len(COLUMNS) - 1, plain(line.accession_id or ""))
        else:
            table.set_rows({**table.rows, line.sender_accession: _row(line)})
        if line.status.value == "unexpected":
            self.app.bell()
            self.app.notify(
                f"{line.sender_accession} is not on the manifest: recorded as unexpected, set "
                "it aside",
                title="UNEXPECTED",
                severity="error",
            )
        else:
            ours = line.accession_id
            self.app.notify(f"{line.sender_accession}: {line.status.value} as {ours}")
        self.prompt()

    def action_damaged(self) -> None:
        self.damaged = True
        self.prompt()

    def action_close(self) -> None:
        if not self.code:
            return
        code = self.code
        self.app.run_db(
            lambda session: shipment_receipt.close_receipt(
                session, actor=self.app.actor, shipment=code
            ),
            self.closed,
        )

    def closed(self, found: ReceiptRead) -> None:
        self.lines = {line.sender_accession: line for line in found.items}
        self.show(found)

    def show(self, found: ReceiptRead) -> None:
        self.query_one(LineTable).set_rows({tube: _row(line) for tube, line in self.lines.items()})
        counts = ", ".join(f"{n} {status}" for status, n in sorted(found.counts.items()))
        state = "closed" if found.closed_at else "open"
        self.query_one("#receipt-title", Static).update(
            plain(
                f"Shipment {found.shipment} ({found.request}) into {found.study}, {state}: {counts}"
            )
        )
        self.prompt()

    def prompt(self) -> None:
        expected = sum(1 for line in self.lines.values() if line.status.value == "expected")
        where = f"into {self.box}" if self.box else "unplaced (scan a box to place them)"
        damaged = " The next tube is marked thawed on arrival." if self.damaged else ""
        self.query_one("#receipt-prompt", Static).update(
            plain(f"{expected} to scan in, {where}.{damaged}")
        )


def _status(line: ReceiptLine) -> Text:
    return Text(line.status.value, style=STYLES.get(line.status.value, ""))


def _row(line: ReceiptLine) -> list[Text]:
    quantity = f"{line.quantity:g} {line.unit}" if line.quantity is not None else ""
    return [
        plain(line.sender_accession), plain(line.donor or ""), plain(line.specimen_type or ""),
        plain(quantity), _status(line), plain(line.accession_id or ""),
    ]  # fmt: skip
