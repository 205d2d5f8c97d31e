"""Tubes back from a shipment, at the bench: type the shipment's code, scan the box they go
into, then each tube as it comes out (by our label, or by the one it shipped under). A tube
comes back with all that was sent unless what is left is typed first (`q`); `t` first: it
went through a thaw away. Each is available again where it is stored (`receive_return`); a
tube the shipment did not send is refused with the bell, and nothing changes.

The shipment's tubes are drawn a line at a time (`LineTable`); a scan redraws its own line."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input, Static

from biobank.errors import ValidationError
from biobank.services import shipments
from biobank.services.scan import BoxScan, Scan, scanned_tube
from biobank.services.shipments import ShipmentLine, ShipmentRead
from tui.screens.base import WorkScreen
from tui.text import plain
from tui.widgets.line_table import LineTable

COLUMNS = ("tube", "shipped as", "type", "sent", "status", "note")
STATUS_COLUMN = COLUMNS.index("status")
STYLES = {"returned": "green", "dispatched": "", "withdrawn": "dim"}


class ReturnScreen(WorkScreen):
    SCAN_HELP = "scan a tube back from the shipment (or the box it goes into)"
    BINDINGS = [  # noqa: RUF012
        Binding("q", "quantity", "What is left of the next tube", id="return_quantity"),
        Binding("t", "thawed", "Next tube thawed away", id="return_thawed"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.code: str | None = None
        self.box: str | None = None
        self.thaws = 0
        self.lines: dict[str, ShipmentLine] = {}

    def compose_body(self) -> ComposeResult:
        yield Static("Tubes back from a shipment", id="return-title", classes="title")
        yield Input(placeholder="The shipment's code, e.g. SHP-2026-0001, then Enter",
                    id="return-code")  # fmt: skip
        yield Input(placeholder="What is left of the next tube (blank: all that was sent)",
                    id="return-quantity")  # fmt: skip
        yield Static("", id="return-prompt", classes="prompt")
        yield LineTable(*COLUMNS, id="return-lines")

    def on_mount(self) -> None:
        self.query_one("#return-code", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "return-code":
            self.code = event.value.strip().upper() or None
            self.load()
        else:
            self.query_one(LineTable).focus()
            self.prompt()

    def load(self) -> None:
        if not self.code:
            return
        code = self.code
        self.app.run_db(
            lambda session: shipments.show_shipment(session, actor=self.app.actor, code=code),
            self.show,
            readonly=True,
        )

    def take_scan(self, result: Scan) -> bool:
        if isinstance(result, BoxScan):
            self.box = result.unit.barcode
            self.prompt()
            return True
        tube = scanned_tube(result)
        if tube is None:
            return False
        if not self.code or not self.lines:
            return self.refused("Type the shipment's code first")
        if self.box is None:
            return self.refused("Scan the box it goes into first")
        try:
            quantity = self.quantity()
        except ValueError:
            return self.refused("What is left is a number, in the tube's unit")
        code, box, thaws = self.code, self.box, self.thaws
        self.app.run_db(
            lambda session: shipments.receive_return(
                session, actor=self.app.actor, code=code, accession=tube, destination=box,
                quantity=quantity, thaws=thaws,
            ),
            self.returned,
        )  # fmt: skip
        return True

    def quantity(self) -> float | None:
        typed = self.query_one("#return-quantity", Input).value.strip()
        return float(typed.replace(",", ".")) if typed else None

    def refused(self, message: str) -> bool:
        self.app.show_error(ValidationError(message, field="tube"))
        return True

    def returned(self, line: ShipmentLine) -> None:
        self.lines[line.accession_id] = line
        table = self.query_one(LineTable)
        table.set_cell(line.accession_id, STATUS_COLUMN, _status(line))
        table.set_cell(line.accession_id, len(COLUMNS) - 1, plain(line.note or ""))
        self.thaws = 0
        self.query_one("#return-quantity", Input).value = ""
        self.app.notify(f"{line.accession_id}: back in {self.box}, {line.note}")
        self.prompt()

    def action_quantity(self) -> None:
        self.query_one("#return-quantity", Input).focus()

    def action_thawed(self) -> None:
        self.thaws += 1
        self.prompt()

    def show(self, found: ShipmentRead) -> None:
        self.lines = {line.accession_id: line for line in found.items}
        self.query_one(LineTable).set_rows({tube: _row(line) for tube, line in self.lines.items()})
        self.query_one("#return-title", Static).update(
            plain(f"Tubes back from {found.code} ({found.request}, {found.destination})")
        )
        self.query_one(LineTable).focus()
        self.prompt()

    def prompt(self) -> None:
        out = sum(1 for line in self.lines.values() if line.status.value == "dispatched")
        where = f"into {self.box}" if self.box else "scan the box they go into"
        thaws = f" The next tube went through {self.thaws} thaw(s) away." if self.thaws else ""
        self.query_one("#return-prompt", Static).update(plain(f"{out} still out; {where}.{thaws}"))


def _status(line: ShipmentLine) -> Text:
    return Text(line.status.value, style=STYLES.get(line.status.value, ""))


def _row(line: ShipmentLine) -> list[Text]:
    return [
        plain(line.accession_id), plain(line.ship_code or ""), plain(line.specimen_type),
        plain(f"{line.quantity:g} {line.unit}"), _status(line), plain(line.note or ""),
    ]  # fmt: skip
