"""`biobank storage …`: the freezer tree and box grids."""

from __future__ import annotations

import typer

from biobank.cli.common import JsonOption, emit_json, emit_record, emit_table, message, work
from biobank.domain.positions import parse_grid
from biobank.domain.vocabulary import FillOrder, PositionLabels
from biobank.terminal_text import shown

app = typer.Typer(help="Storage units: sites, freezers, shelves, racks and boxes.")

STATUS_MARK = {
    "available": "■",
    "reserved": "R",
    "checked_out": "o",
    "quarantined": "Q",
    "depleted": "d",
}


# Freezer names like "-80 #3" start with a dash: take unknown dash-words as names.
@app.command(context_settings={"ignore_unknown_options": True})
def add(
    ctx: typer.Context,
    kind: str = typer.Argument(..., help="site, freezer, shelf, rack, box, or a kind of yours."),
    name: str = typer.Argument(...),
    parent: str | None = typer.Option(None, "--parent", "-p", help="Barcode of the parent."),
    position: str | None = typer.Option(None, "--position", help="Position in the parent."),
    grid: str | None = typer.Option(None, "--grid", help="Own grid, e.g. 9x9 or 8x12."),
    barcode: str | None = typer.Option(None, "--barcode", help="Default: generated."),
    shelves: int | None = typer.Option(None, "--shelves", help="Freezer template: shelves."),
    racks_per_shelf: int = typer.Option(4, "--racks-per-shelf"),
    boxes_per_rack: int = typer.Option(12, "--boxes-per-rack"),
    box: str = typer.Option("9x9", "--box", help="Freezer template: box grid."),
    labels: PositionLabels = typer.Option(PositionLabels.letter_number, "--labels"),
    fill: FillOrder = typer.Option(FillOrder.row_major, "--fill", help="Box fill order."),
    temperature: str | None = typer.Option(None, "--temperature", help="e.g. -80C, LN2."),
    types: str | None = typer.Option(None, "--types", help="Allowed specimen types: SER,PL1"),
    json: JsonOption = False,
) -> None:
    """Add a unit; `freezer NAME --shelves N …` builds a whole freezer from the template."""
    from biobank.services import storage

    allowed = [t.strip() for t in types.split(",")] if types else None
    with work(ctx) as (session, actor):
        if kind.lower() == "freezer" and shelves is not None:
            unit = storage.add_freezer(
                session,
                actor=actor,
                name=name,
                parent=parent,
                shelves=shelves,
                racks_per_shelf=racks_per_shelf,
                boxes_per_rack=boxes_per_rack,
                box_grid=parse_grid(box, field="box"),
                temperature_class=temperature or "-80C",
                position_labels=labels,
                fill_order=fill,
                allowed_types=allowed,
            )
        else:
            unit = storage.add_unit(
                session,
                actor=actor,
                kind=kind,
                name=name,
                parent=parent,
                position=position,
                grid=parse_grid(grid) if grid else None,
                barcode=barcode,
                position_labels=labels,
                fill_order=fill,
                temperature_class=temperature,
                allowed_types=allowed,
            )
    if json:
        emit_json(unit)
    else:
        typer.echo(unit.barcode)
        message(f"added {unit.kind} {unit.path}")


@app.command()
def tree(
    ctx: typer.Context,
    root: str | None = typer.Argument(None, help="Barcode of a unit (default: everything)."),
    json: JsonOption = False,
) -> None:
    """The storage tree with free positions per box."""
    from biobank.services import storage

    with work(ctx, readonly=True) as (session, actor):
        nodes = storage.storage_tree(session, actor=actor, root=root)
    if json:
        emit_json(nodes)
        return
    for node in nodes:
        u = node.unit
        room = f"  {u.free_slots}/{u.capacity} free" if u.holds_specimens else ""
        typer.echo(shown(f"{'  ' * node.depth}{u.name}  [{u.barcode}] {u.kind}{room}"))


@app.command()
def show(ctx: typer.Context, box: str, json: JsonOption = False) -> None:
    """Draw a box's grid with occupancy (■ available, o out, R reserved, · free)."""
    from biobank.services import storage

    with work(ctx, readonly=True) as (session, actor):
        view = storage.box_view(session, actor=actor, barcode=box)
    if json:
        emit_json(view)
        return
    u = view.unit
    emit_record(
        [("box", f"{u.name} [{u.barcode}]"), ("where", u.path), ("free", f"{u.free_slots}")]
    )
    numeric = view.cells[0].label.isdigit()
    width = max(len(c.label) for c in view.cells) if numeric else 2
    header = "" if numeric else "   " + "".join(f"{c:>3}" for c in range(1, view.cols + 1))
    if header:
        typer.echo(header)
    for r in range(view.rows):
        row_cells = view.cells[r * view.cols : (r + 1) * view.cols]
        marks = [STATUS_MARK.get(c.status, "?") if c.accession_id else "·" for c in row_cells]
        if numeric:
            typer.echo(
                "  ".join(f"{c.label:>{width}}{m}" for c, m in zip(row_cells, marks, strict=True))
            )
        else:
            row_name = row_cells[0].label.rstrip("0123456789")
            typer.echo(f"{row_name:>2} " + "".join(f"{m:>3}" for m in marks))
    occupied = [c for c in view.cells if c.accession_id]
    if occupied:
        typer.echo("")
        emit_table(
            ["pos", "specimen", "type", "status"],
            [(c.label, c.accession_id, c.specimen_type, c.status) for c in occupied],
        )


@app.command()
def move(
    ctx: typer.Context,
    unit: str = typer.Argument(..., help="Barcode of the box, rack… to move."),
    to: str = typer.Argument(..., help="Barcode of the new parent."),
    position: str | None = typer.Argument(None, help="Position in the parent."),
    reason: str | None = typer.Option(None, "--reason"),
    json: JsonOption = False,
) -> None:
    """Move a unit with everything in it."""
    from biobank.services import storage

    with work(ctx) as (session, actor):
        moved = storage.move_unit(
            session, actor=actor, unit=unit, destination=to, position=position, reason=reason
        )
    if json:
        emit_json(moved)
    else:
        message(f"moved {moved.barcode} to {moved.path} {moved.position or ''}".rstrip())
