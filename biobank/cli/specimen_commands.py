"""`biobank specimen …` and `biobank scan`: accession, lineage and custody."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from biobank.cli.common import (
    JsonOption,
    emit_json,
    emit_record,
    emit_table,
    message,
    parse_datetime,
    state,
    work,
)
from biobank.errors import ValidationError

if TYPE_CHECKING:
    from biobank.services import scan
    from biobank.services.specimen_read import SpecimenRead

app = typer.Typer(help="Accession specimens, split aliquots, and keep custody of tubes.")

Destination = typer.Option(
    None, "--to", "-t", help="Box barcode, or a rack/shelf/freezer to auto-allocate in."
)
Position = typer.Option(None, "--position", help="Position in the box, e.g. A1.")
Reason = typer.Option(None, "--reason", help="Why (kept in the history and audit trail).")


def _summary(read: SpecimenRead) -> str:
    where = read.location or "not placed"
    return f"{read.accession_id}  {read.specimen_type} {read.quantity:g} {read.unit}  {where}"


def _emit(reads: list[SpecimenRead], json: bool) -> None:
    if json:
        emit_json(reads if len(reads) != 1 else reads[0])
        return
    for read in reads:
        typer.echo(read.accession_id)
        message(_summary(read))
        for warning in read.warnings:
            message(f"warning: {warning}")


@app.command("accession")
def accession_(
    ctx: typer.Context,
    participant: str = typer.Option(..., "--participant", "-p"),
    specimen_type: str = typer.Option(
        ..., "--type", help="SPREC type: SER, PL1, BUF, CEL… (DNA, RNA: an extract received)."
    ),
    quantity: float = typer.Option(..., "--quantity", "-q"),
    unit: str = typer.Option("uL", "--unit", help="uL, mL, mg, ug or cells."),
    visit: str | None = typer.Option(None, "--visit", "-v", help="Visit label, e.g. baseline."),
    container: str | None = typer.Option(None, "--container", help="SPREC container: SST…"),
    collected: str | None = typer.Option(None, "--collected", help="YYYY-MM-DDTHH:MM"),
    received: str | None = typer.Option(None, "--received", help="Default: now."),
    processed: str | None = typer.Option(None, "--processed"),
    frozen: str | None = typer.Option(None, "--frozen"),
    pre_temp: str | None = typer.Option(None, "--pre-temp", help="RT, 2-10C or 35-38C."),
    post_temp: str | None = typer.Option(None, "--post-temp", help="RT or 2-10C."),
    centrifugation: str | None = typer.Option(None, "--centrifugation", help="SPREC letter."),
    storage: str | None = typer.Option(None, "--storage", help="SPREC long-term storage."),
    sprec: str | None = typer.Option(None, "--sprec", help="A whole SPREC code instead."),
    legacy_id: str | None = typer.Option(None, "--legacy-id"),
    kit_id: str | None = typer.Option(None, "--kit-id", help="A collection kit tube's ID."),
    aliquots: int | None = typer.Option(None, "--aliquots", help="Then split N aliquots…"),
    volume: float | None = typer.Option(None, "--volume", help="…of this volume each."),
    to: str | None = Destination,
    position: str | None = Position,
    force: bool = typer.Option(
        False,
        "--force",
        help="Accept a collection further from the visit than visit_gap_days (audited).",
    ),
    json: JsonOption = False,
) -> None:
    """Receive a primary specimen (and split aliquots from it, all in one transaction)."""
    from biobank.services import lineage, specimens

    if (aliquots is None) != (volume is None):
        raise ValidationError("--aliquots and --volume go together", field="aliquots")
    gap_days = state(ctx).settings.visit_gap_days
    with work(ctx) as (session, actor):
        primary = specimens.accession(
            session,
            actor=actor,
            participant=participant,
            visit=visit,
            specimen_type=specimen_type,
            container_type=container,
            quantity=quantity,
            unit=unit,
            collected_at=parse_datetime(collected, "collected"),
            received_at=parse_datetime(received, "received"),
            processed_at=parse_datetime(processed, "processed"),
            frozen_at=parse_datetime(frozen, "frozen"),
            precentrifugation_temperature=pre_temp,
            postcentrifugation_temperature=post_temp,
            centrifugation=centrifugation,
            storage=storage,
            sprec_code=sprec,
            legacy_id=legacy_id,
            kit_id=kit_id,
            destination=to,
            position=position,
            room_for_aliquots=aliquots or 0,
            visit_gap_days=gap_days,
            force=force,
        )
        made = [primary]
        if aliquots is not None:
            made += lineage.aliquot(
                session,
                actor=actor,
                parent=primary.accession_id,
                count=aliquots,
                volume=volume,
                destination=to,
            )
            made[0] = specimens.show_specimen(
                session, actor=actor, accession=primary.accession_id
            ).specimen
    _emit(made, json)


@app.command()
def aliquot(
    ctx: typer.Context,
    parent: str,
    count: int = typer.Option(..., "--count", "-n"),
    volume: float = typer.Option(..., "--volume", help="Each, in the parent's unit."),
    to: str | None = Destination,
    json: JsonOption = False,
) -> None:
    """Split aliquots from a specimen (the parent's quantity goes down)."""
    from biobank.services import lineage

    with work(ctx) as (session, actor):
        made = lineage.aliquot(
            session, actor=actor, parent=parent, count=count, volume=volume, destination=to
        )
    _emit(made, json)


@app.command()
def derive(
    ctx: typer.Context,
    parent: str,
    specimen_type: str = typer.Option(..., "--type", help="e.g. DNA, RNA."),
    quantity: float = typer.Option(..., "--quantity", "-q"),
    unit: str = typer.Option(..., "--unit"),
    used: float | None = typer.Option(None, "--used", help="Drawn from the parent."),
    to: str | None = Destination,
    position: str | None = Position,
    json: JsonOption = False,
) -> None:
    """Make a derivative of a new type (DNA from buffy coat)."""
    from biobank.services import lineage

    with work(ctx) as (session, actor):
        made = lineage.derive(
            session,
            actor=actor,
            parent=parent,
            specimen_type=specimen_type,
            quantity=quantity,
            unit=unit,
            used=used,
            destination=to,
            position=position,
        )
    _emit([made], json)


@app.command("pool")
def pool_(
    ctx: typer.Context,
    sources: list[str] = typer.Argument(..., help="ID:QUANTITY of each source."),
    to: str | None = Destination,
    position: str | None = Position,
    json: JsonOption = False,
) -> None:
    """Pool specimens of one participant into a new tube."""
    from biobank.services import lineage

    parsed = []
    for item in sources:
        accession_id, _, amount = item.rpartition(":")
        try:
            parsed.append((accession_id, float(amount)))
        except ValueError:
            raise ValidationError(
                f"{item!r} is not ID:QUANTITY", field="sources", value=item
            ) from None
    with work(ctx) as (session, actor):
        made = lineage.pool(session, actor=actor, sources=parsed, destination=to, position=position)
    _emit([made], json)


@app.command()
def show(ctx: typer.Context, specimen: str, json: JsonOption = False) -> None:
    """A specimen with its location and history."""
    from biobank.services import specimens

    with work(ctx, readonly=True) as (session, actor):
        detail = specimens.show_specimen(session, actor=actor, accession=specimen)
    if json:
        emit_json(detail)
        return
    s = detail.specimen
    emit_record(
        [
            ("specimen", s.accession_id),
            ("legacy ID", s.legacy_id),
            ("participant", s.participant_code),
            ("visit", s.visit_label),
            ("kind", s.kind),
            ("parent", s.parent_accession_id),
            ("type", f"{s.specimen_type} in {s.container_type or '?'}"),
            ("SPREC", s.sprec_code),
            ("quantity", f"{s.quantity:g} of {s.initial_quantity:g} {s.unit}"),
            ("status", s.status),
            ("location", s.location),
            ("freeze-thaws", s.freeze_thaw_count),
            ("minutes out", s.minutes_out),
            ("collected", s.collected_at),
            ("children", ", ".join(detail.children)),
            ("notes", s.notes),
        ]
    )
    typer.echo("")
    emit_table(
        ["time (UTC)", "event", "by", "from", "to", "change", "reason"],
        [
            (
                e.occurred_at.strftime("%Y-%m-%d %H:%M"),
                e.event_type,
                e.actor,
                e.from_location,
                e.to_location,
                "" if e.quantity_change is None else f"{e.quantity_change:+g}",
                e.reason,
            )
            for e in detail.events
        ],
    )


@app.command("lineage")
def lineage_(ctx: typer.Context, specimen: str, json: JsonOption = False) -> None:
    """Ancestors and descendants."""
    from biobank.services import lineage

    with work(ctx, readonly=True) as (session, actor):
        tree = lineage.trace(session, actor=actor, accession=specimen)
    if json:
        emit_json(tree)
        return
    rows = [("ancestor", a) for a in tree.ancestors] + [("this", tree.specimen)]
    rows += [("descendant", d) for d in tree.descendants]
    emit_table(
        ["relation", "specimen", "kind", "type", "quantity", "status"],
        [
            (rel, r.accession_id, r.kind, r.specimen_type, f"{r.quantity:g} {r.unit}", r.status)
            for rel, r in rows
        ],
    )


def _custody(ctx: typer.Context, json: bool, call, **kwargs) -> None:
    with work(ctx) as (session, actor):
        read = call(session, actor=actor, **kwargs)
    _emit([read], json)


@app.command()
def move(
    ctx: typer.Context,
    specimen: str,
    to: str = typer.Argument(..., help="Box barcode, or a rack/freezer to auto-allocate in."),
    position: str | None = typer.Argument(None, help="Position, e.g. A1 (default: next free)."),
    reason: str | None = Reason,
    json: JsonOption = False,
) -> None:
    """Place or move a tube."""
    from biobank.services import custody

    _custody(
        ctx,
        json,
        custody.move,
        accession=specimen,
        destination=to,
        position=position,
        reason=reason,
    )


@app.command("check-out")
def check_out(
    ctx: typer.Context, specimen: str, reason: str | None = Reason, json: JsonOption = False
) -> None:
    """Take a tube out; its position stays held."""
    from biobank.services import custody

    _custody(ctx, json, custody.check_out, accession=specimen, reason=reason)


@app.command("check-in")
def check_in(
    ctx: typer.Context,
    specimen: str,
    to: str | None = Destination,
    position: str | None = Position,
    reason: str | None = Reason,
    json: JsonOption = False,
) -> None:
    """Put a tube back (in its held position unless told otherwise)."""
    from biobank.services import custody

    _custody(
        ctx,
        json,
        custody.check_in,
        accession=specimen,
        destination=to,
        position=position,
        reason=reason,
    )


@app.command()
def thaw(
    ctx: typer.Context, specimen: str, reason: str | None = Reason, json: JsonOption = False
) -> None:
    """Record a freeze-thaw cycle."""
    from biobank.services import custody

    _custody(ctx, json, custody.record_thaw, accession=specimen, reason=reason)


@app.command()
def deplete(
    ctx: typer.Context, specimen: str, reason: str | None = Reason, json: JsonOption = False
) -> None:
    """Mark a tube used up."""
    from biobank.services import custody

    _custody(ctx, json, custody.deplete, accession=specimen, reason=reason)


@app.command()
def dispose(
    ctx: typer.Context,
    specimen: str,
    reason: str = typer.Option(..., "--reason", help="Why it was destroyed."),
    json: JsonOption = False,
) -> None:
    """Destroy a tube; its position is freed, its record and ID kept."""
    from biobank.services import custody

    _custody(ctx, json, custody.dispose, accession=specimen, reason=reason)


@app.command()
def distribute(
    ctx: typer.Context,
    specimen: str,
    recipient: str = typer.Option(..., "--to", "-t", help="Who receives it."),
    use: list[str] = typer.Option(
        ..., "--use", help="An intended use, e.g. GENETIC (repeatable); consent must allow each."
    ),
    reason: str | None = Reason,
    json: JsonOption = False,
) -> None:
    """Send a tube out; its position is freed (exit 6 when consent does not allow a use)."""
    from biobank.services import custody

    _custody(
        ctx,
        json,
        custody.distribute,
        accession=specimen,
        recipient=recipient,
        uses=use,
        reason=reason,
    )


@app.command()
def release(
    ctx: typer.Context,
    specimens: list[str] = typer.Argument(None, help="Reserved tubes to give back."),
    request: str | None = typer.Option(
        None, "--request", help="Give back every tube reserved for this request."
    ),
    reason: str = typer.Option(..., "--reason", "-r", help="Why (kept with each event)."),
    json: JsonOption = False,
) -> None:
    """Release reservations (their owner or an admin): the tubes are available again."""
    from biobank.services import reservations

    with work(ctx) as (session, actor):
        result = reservations.release_reservations(
            session, actor=actor, accessions=specimens or None, request=request, reason=reason
        )
    if json:
        emit_json(result)
        return
    shown = ", ".join(result.released[:10]) + (", …" if len(result.released) > 10 else "")
    message(f"released {len(result.released)}: {shown}")


@app.command("reservations")
def list_reservations(
    ctx: typer.Context,
    request: str | None = typer.Option(None, "--request", help="Only this request's."),
    ended: bool = typer.Option(False, "--all", help="Ended reservations too."),
    json: JsonOption = False,
) -> None:
    """Reserved tubes: for which request and uses, whose, since when."""
    from biobank.services import reservations

    with work(ctx, readonly=True) as (session, actor):
        rows = reservations.list_reservations(
            session, actor=actor, request=request, standing_only=not ended
        )
    if json:
        emit_json(rows)
        return
    emit_table(
        ["SPECIMEN", "REQUEST", "USES", "OWNER", "SINCE", "ENDED"],
        [
            [r.accession_id, r.request, ", ".join(r.uses), r.owner or "",
             f"{r.reserved_at:%Y-%m-%d}", r.end_reason or ""]
            for r in rows
        ],
    )  # fmt: skip


# `scan --json`: every kind of scan in one shape, null where it names nothing of a key
SCAN_KEYS = (
    "kind",
    "scanned",
    "code",
    "message",
    "specimen",
    "unit",
    "participant_code",
    "username",
    "reserved",
)


def _scan_record(result: scan.Scan) -> dict:
    found = result.model_dump(mode="json")
    return {key: found.get(key) for key in SCAN_KEYS}


def scan_command(
    ctx: typer.Context,
    scanned: str = typer.Argument(..., help="What the scanner typed."),
    json: JsonOption = False,
) -> None:
    """Resolve a scan to a specimen, box, participant or badge (exit 4 unknown, 2 misread)."""
    from biobank.services import scan

    cli = state(ctx)
    with work(ctx, lookup=True) as (session, actor):
        result = scan.resolve_scan(
            session, actor=actor, scanned=scanned, scanner_prefix=cli.settings.scanner.prefix
        )
    if json:
        emit_json(_scan_record(result))
    else:
        match result:
            case scan.SpecimenScan(specimen=specimen):
                typer.echo(specimen.accession_id)
                message(_summary(specimen))
            case scan.UnitScan(unit=unit):
                typer.echo(unit.barcode)
                message(f"{unit.kind} {unit.path}")
            case scan.ParticipantScan(participant_code=name) | scan.BadgeScan(username=name):
                typer.echo(name)
                message(result.message)
            case _:
                typer.echo("")
                message(result.message)
    if isinstance(result, scan.MisreadScan):
        raise typer.Exit(2)
    if isinstance(result, scan.UnknownScan):
        raise typer.Exit(4)
