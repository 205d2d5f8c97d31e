"""`biobank shipment …`: a request's picked tubes packed, sent with a manifest, confirmed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from biobank.cli.common import JsonOption, emit_json, emit_record, emit_table, message, work

if TYPE_CHECKING:
    from biobank.services.shipment_receipt import ReceiptRead
    from biobank.services.shipments import ShipmentRead

app = typer.Typer(
    help="Shipments: a request's picked tubes packed, sent with a manifest, confirmed.",
    no_args_is_help=True,
)


def _shown(shipment: ShipmentRead, json: bool) -> None:
    if json:
        emit_json(shipment)
        return
    emit_record(
        [
            ("shipment", shipment.code), ("request", shipment.request),
            ("status", shipment.status.value), ("courier", shipment.courier),
            ("tracking", shipment.tracking or ""),
            ("condition", shipment.condition.value.replace("_", " ")),
            ("to", shipment.destination), ("sent", shipment.dispatched_at or ""),
            ("manifest SHA-256", shipment.manifest_sha256 or ""),
            ("confirmed", shipment.confirmation or ""),
        ]
    )  # fmt: skip
    emit_table(
        ["BOX", "POS", "TUBE", "TYPE", "QUANTITY", "STATUS", "NOTE"],
        [
            [i.box_no, i.position, i.accession_id, i.specimen_type, f"{i.quantity:g} {i.unit}",
             i.status.value, i.note or ""]
            for i in shipment.items
        ],
    )  # fmt: skip


@app.command()
def create(
    ctx: typer.Context,
    request: str = typer.Argument(..., help="The approved request it ships."),
    courier: str = typer.Option(..., "--courier"),
    condition: str = typer.Option(
        ..., "--condition", help="dry_ice, ln2_dry_shipper, cold_pack or ambient."
    ),
    tracking: str | None = typer.Option(None, "--tracking", help="The courier's number."),
    rows: int = typer.Option(9, "--rows", help="Rows of each shipping box."),
    cols: int = typer.Option(9, "--cols", help="Columns of each shipping box."),
    json: JsonOption = False,
) -> None:
    """Open a shipment for an approved request."""
    from biobank.services import shipments

    with work(ctx) as (session, actor):
        made = shipments.create_shipment(
            session, actor=actor, request=request, courier=courier, condition=condition,
            tracking=tracking, box_rows=rows, box_cols=cols,
        )  # fmt: skip
    if json:
        emit_json(made)
        return
    print(made.code)
    message(f"shipment {made.code} for {made.request}: pack its picked tubes")


@app.command()
def pack(
    ctx: typer.Context,
    code: str = typer.Argument(...),
    tubes: list[str] = typer.Argument(..., help="Picked tubes of the request, as scanned."),
    json: JsonOption = False,
) -> None:
    """Put picked tubes into the shipment, each at the next place of its boxes."""
    from biobank.services import shipments

    with work(ctx) as (session, actor):
        made = shipments.pack(session, actor=actor, code=code, accessions=tubes)
    _shown(made, json)


@app.command()
def dispatch(
    ctx: typer.Context,
    code: str = typer.Argument(...),
    to: Path = typer.Option(..., "--to", help="Folder the manifest and packing list go to."),
    part: bool = typer.Option(
        False, "--part", help="Send it though tubes of the request are not yet packed."
    ),
    json: JsonOption = False,
) -> None:
    """Send a packed shipment: consent asked today (tubes it no longer allows are taken off),
    the tubes distributed, the manifest (JSON, CSV, FHIR) and packing list written."""
    from biobank.services import shipments

    with work(ctx) as (session, actor):
        done = shipments.dispatch(session, actor=actor, code=code, part=part)
    files = done.manifest.write(to / done.shipment.code)
    if json:
        emit_json(done.model_dump(mode="json", exclude={"manifest"}) | {
            "files": [str(f) for f in files]})  # fmt: skip
        return
    for accession, why in done.taken_off.items():
        message(f"!!! {accession}: {why}")
    for path in files:
        print(path)
    sent = sum(1 for i in done.shipment.items if i.status.value == "dispatched")
    message(f"shipment {done.shipment.code} sent: {sent} tubes; manifest SHA-256 "
            f"{done.manifest.sha256}")  # fmt: skip


@app.command()
def manifest(
    ctx: typer.Context,
    code: str = typer.Argument(...),
    to: Path = typer.Option(..., "--to", help="Folder to write them to."),
) -> None:
    """Write a sent shipment's manifest and packing list again (checked against its SHA-256)."""
    from biobank.services import shipments

    with work(ctx, readonly=True) as (session, actor):
        made = shipments.sent_manifest(session, actor=actor, code=code)
    for path in made.write(to / code.strip().upper()):
        print(path)


@app.command()
def confirm(
    ctx: typer.Context,
    code: str = typer.Argument(...),
    note: str = typer.Option(..., "--note", help="What the receiver reported."),
    json: JsonOption = False,
) -> None:
    """Record the receiver's confirmation."""
    from biobank.services import shipments

    with work(ctx) as (session, actor):
        made = shipments.confirm_delivery(session, actor=actor, code=code, note=note)
    _shown(made, json)


@app.command()
def show(ctx: typer.Context, code: str = typer.Argument(...), json: JsonOption = False) -> None:
    """A shipment and its tubes, box by box."""
    from biobank.services import shipments

    with work(ctx, readonly=True) as (session, actor):
        made = shipments.show_shipment(session, actor=actor, code=code)
    _shown(made, json)


@app.command("list")
def list_shipments(
    ctx: typer.Context,
    request: str | None = typer.Option(None, "--request", help="Only this request's."),
    json: JsonOption = False,
) -> None:
    """Shipments, oldest first."""
    from biobank.services import shipments

    with work(ctx, readonly=True) as (session, actor):
        rows = shipments.list_shipments(session, actor=actor, request=request)
    if json:
        emit_json(rows)
        return
    emit_table(
        ["SHIPMENT", "REQUEST", "STATUS", "TUBES", "COURIER", "TRACKING", "SENT"],
        [
            [s.code, s.request, s.status.value, len(s.items), s.courier, s.tracking or "",
             f"{s.dispatched_at:%Y-%m-%d}" if s.dispatched_at else ""]
            for s in rows
        ],
    )  # fmt: skip


@app.command("return")
def return_tube(
    ctx: typer.Context,
    code: str = typer.Argument(..., help="The shipment that sent it."),
    tube: str = typer.Argument(..., help="Its ID here, or the label it shipped under."),
    quantity: float | None = typer.Option(
        None, "--quantity", help="What came back, in the tube's unit (default: all sent)."
    ),
    to: str = typer.Option(..., "--to", help="The box (or rack, freezer) it is stored in."),
    position: str | None = typer.Option(None, "--position", help="A1… (default: next free)."),
    thaws: int = typer.Option(0, "--thaws", help="Freeze-thaw cycles it went through away."),
    json: JsonOption = False,
) -> None:
    """A tube come back from a shipment (unused or left over): stored again, available."""
    from biobank.services import shipments

    with work(ctx) as (session, actor):
        line = shipments.receive_return(
            session, actor=actor, code=code, accession=tube, quantity=quantity,
            destination=to, position=position, thaws=thaws,
        )  # fmt: skip
    if json:
        emit_json(line)
        return
    message(f"{line.accession_id}: returned, {line.note}")


def _receipt(made: ReceiptRead, json: bool) -> None:
    if json:
        emit_json(made)
        return
    emit_table(
        ["SENDER'S ID", "DONOR", "TYPE", "QUANTITY", "STATUS", "OURS"],
        [
            [i.sender_accession, i.donor or "", i.specimen_type or "",
             f"{i.quantity:g} {i.unit}" if i.quantity is not None else "", i.status.value,
             i.accession_id or ""]
            for i in made.items
        ],
    )  # fmt: skip
    counts = ", ".join(f"{n} {status}" for status, n in sorted(made.counts.items()))
    message(f"shipment {made.shipment} ({made.request}) into {made.study}: {counts}")


@app.command()
def receive(
    ctx: typer.Context,
    manifest_file: Path = typer.Argument(..., help="The manifest.json the sender sent."),
    study: str = typer.Option(..., "--study", help="The study its tubes join."),
    json: JsonOption = False,
) -> None:
    """Receive a shipment from another biobank by its manifest (checked: an altered one, or one
    received before, is refused); then scan each tube in with `shipment check-in`."""
    from biobank.services import shipment_receipt

    document = shipment_receipt.read_manifest(manifest_file)
    with work(ctx) as (session, actor):
        made = shipment_receipt.receive_manifest(
            session, actor=actor, document=document, study=study
        )
    _receipt(made, json)


@app.command("check-in")
def check_in(
    ctx: typer.Context,
    code: str = typer.Argument(..., help="The received shipment (the sender's code)."),
    tubes: list[str] = typer.Argument(..., help="The tubes, as scanned."),
    damaged: bool = typer.Option(False, "--damaged", help="Thawed on arrival (these tubes)."),
    to: str | None = typer.Option(None, "--to", help="The box they are stored in."),
    json: JsonOption = False,
) -> None:
    """Scan received tubes in: each accessioned (and placed), or recorded as unexpected."""
    from biobank.services import shipment_receipt

    lines = []
    for tube in tubes:
        with work(ctx) as (session, actor):
            line = shipment_receipt.check_in(
                session, actor=actor, shipment=code, tube=tube, damaged=damaged, destination=to
            )
        lines.append(line)
        if not json:
            ours = f" as {line.accession_id}" if line.accession_id else ""
            message(f"{line.sender_accession}: {line.status.value}{ours}")
    if json:
        emit_json(lines)


@app.command()
def close(ctx: typer.Context, code: str = typer.Argument(...), json: JsonOption = False) -> None:
    """Close a received shipment: tubes never scanned are missing; its counts are final."""
    from biobank.services import shipment_receipt

    with work(ctx) as (session, actor):
        made = shipment_receipt.close_receipt(session, actor=actor, shipment=code)
    _receipt(made, json)


@app.command()
def receipt(ctx: typer.Context, code: str = typer.Argument(...), json: JsonOption = False) -> None:
    """A received shipment: each tube and what became of it."""
    from biobank.services import shipment_receipt

    with work(ctx, readonly=True) as (session, actor):
        made = shipment_receipt.show_receipt(session, actor=actor, shipment=code)
    _receipt(made, json)


@app.command("export")
def export_shipment(
    ctx: typer.Context,
    code: str = typer.Argument(...),
    to: Path = typer.Option(..., "--to", help="Folder the export's own folder is made in."),
    formats: list[str] = typer.Option([], "--format", help="csv, xlsx, parquet, … (repeatable)."),
    json: JsonOption = False,
) -> None:
    """The request's linked phenotype export for exactly the tubes a shipment sent, under the
    codes its labels and manifest use (the request's PI, or an admin)."""
    from biobank.services import shipments

    with work(ctx) as (session, actor):
        result = shipments.linked_export(
            session, actor=actor, code=code, directory=to, formats=formats or None
        )
    if json:
        emit_json(result)
        return
    print(result.directory)
    message(f"{result.run_code}: {result.counts.get('specimens', 0)} specimens of {code}")
