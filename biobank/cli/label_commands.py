"""`biobank label …`: render labels to files or send them to a printer."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

import typer

from biobank.cli.common import message, state, work
from biobank.errors import ValidationError


class Format(StrEnum):
    png = "png"
    svg = "svg"
    pdf = "pdf"
    zpl = "zpl"


DEFAULT_TEMPLATE = {Format.pdf: "letter-4x20"}


def _file(out: Path, fmt: Format) -> Path:
    """`out` as a file of `fmt`: a suffix, if it has one, must say so."""
    if out.suffix and out.suffix.lower() != f".{fmt}":
        raise ValidationError(
            f"--out {out}: {fmt} labels go to a .{fmt} file, not {out.suffix}",
            field="out",
            value=out,
        )
    return out


def _image_file(out: Path, fmt: Format, count: int) -> Path | None:
    """The file one png/svg label goes to: `out` when it has a suffix and is not a folder;
    otherwise None, and `out` is the folder each label is written into as ID.png/ID.svg."""
    if out.is_dir():
        return None
    if count > 1:
        if out.suffix.lower() == f".{fmt}":
            raise ValidationError(
                f"--out {out}: {count} labels go into a folder, one .{fmt} file each",
                field="out",
                value=out,
            )
        return None
    return _file(out, fmt) if out.suffix else None


def _write(labels, fmt: Format, out: Path | None, template_name: str, dpi: int) -> str:
    import labels as render

    stock = render.template(template_name)
    if fmt in (Format.png, Format.svg):
        if out is None:
            raise ValidationError(f"{fmt} labels need --out FILE.{fmt} or FOLDER", field="out")
        file = _image_file(out, fmt, len(labels))
        if file is None:
            out.mkdir(parents=True, exist_ok=True)
        for label in labels:
            path = file or out / f"{label.id}.{fmt}"
            if fmt == Format.png:
                path.write_bytes(render.render_png(label, stock, dpi=dpi))
            else:
                path.write_text(render.render_svg(label, stock))
        return str(file or out)
    if fmt == Format.zpl:
        text = render.render_zpl(labels, stock, dpi=dpi)
        if out is None:
            sys.stdout.write(text)
            return "stdout"
        _file(out, fmt).write_text(text)
        return str(out)
    if out is None:
        raise ValidationError("PDF labels need --out FILE.pdf", field="out")
    _file(out, fmt).write_bytes(render.render_pdf(labels, stock))
    return str(out)


def label_command(
    ctx: typer.Context,
    specimens: list[str] = typer.Argument(None, help="Accession IDs of the tubes to label."),
    box: list[str] = typer.Option([], "--box", help="Barcode of a box (repeatable)."),
    kit: str | None = typer.Option(None, "--kit", help="Visit label: print a collection kit."),
    shipment: str | None = typer.Option(
        None, "--shipment", help="A relabelled shipment: its tubes under their ship codes."
    ),
    participant: str | None = typer.Option(None, "--participant", help="The kit's participant."),
    count: int = typer.Option(4, "--count", "-n", help="Tubes in the kit."),
    kit_type: str | None = typer.Option(None, "--type", help="The kit tubes' SPREC type."),
    fmt: Format = typer.Option(Format.pdf, "--format", "-f"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="File; for png/svg, a folder unless one label to FILE.png/.svg."
    ),
    printer: str | None = typer.Option(None, "--printer", "-p", help="A printer profile name."),
    template: str | None = typer.Option(None, "--template", help="Label stock (see labels/)."),
    dpi: int = typer.Option(300, "--dpi", help="203 or 300 (png and zpl)."),
    reason: str | None = typer.Option(None, "--reason", help="Why (required for a reprint)."),
) -> None:
    """Make labels for tubes, boxes or a collection kit: files (--format/--out) or a printer
    (--printer, or the workstation's default printer when no --out is given). Only a printer
    prints: a tube's label written to a file is recorded as rendered, not printed."""
    from biobank.services import label_data

    cli = state(ctx)
    settings = cli.settings
    specimens = specimens or []
    if sum(bool(x) for x in (specimens, box, kit, shipment)) != 1:
        raise ValidationError(
            "label either specimens, --box BOX, --kit VISIT or --shipment SHP (one of them)",
            field="labels",
        )
    if kit and not participant:
        raise ValidationError("--kit needs --participant", field="participant")
    printer = printer or (settings.default_printer if out is None and fmt == Format.pdf else None)
    show = settings.labels_show_participant

    def output(made) -> str:
        if printer:
            import labels

            return labels.print_labels(settings.printer_profile(printer), made)
        chosen = template or DEFAULT_TEMPLATE.get(fmt, "cryo-1.05x0.5in")
        return _write(made, fmt, out, chosen, dpi)

    with work(ctx) as (session, actor):
        if specimens:
            target = label_data.issue_specimen_labels(
                session,
                actor=actor,
                accession_ids=specimens,
                output=output,
                reason=reason,
                show_participant=show,
                to_printer=bool(printer),
            )
        else:
            if box:
                made = label_data.box_labels(session, actor=actor, barcodes=box)
            elif shipment:
                made = label_data.shipment_labels(session, actor=actor, code=shipment)
            else:
                made = label_data.kit_labels(
                    session,
                    actor=actor,
                    participant=participant,
                    visit=kit,
                    count=count,
                    specimen_type=kit_type,
                    show_participant=show,
                )
            target = output(made)
    if kit:
        message("kit IDs: " + " ".join(label.id for label in made))
    message(f"label(s) -> {target}")
