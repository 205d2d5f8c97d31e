"""`biobank import …`: bring in what a lab kept before this system."""

from __future__ import annotations

import sys
from contextlib import closing
from pathlib import Path

import typer

from biobank.cli.common import JsonOption, emit_json, emit_table, message, work
from biobank.errors import ValidationError
from biobank.services.imports.common import ImportReport
from biobank.services.imports.legacy import check_inventory, sheet_format, write_inventory
from biobank.services.imports.redcap import check_redcap, redcap_mapping, write_redcap

app = typer.Typer(help="Import data kept in other systems.", no_args_is_help=True)


@app.command()
def inventory(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV, one row per tube."),
    study: str = typer.Option(..., "--study", help="Study to register into (must exist)."),
    mapping: Path | None = typer.Option(None, "--mapping", help="TOML: settings and [columns]."),
    column: list[str] = typer.Option(
        [], "--column", help='FIELD=HEADER, e.g. subject="Patient" (repeatable).'
    ),
    date_format: str | None = typer.Option(
        None, "--date-format", help="strptime format of dates (default %m/%d/%Y)."
    ),
    unit: str | None = typer.Option(
        None, "--unit", help="Volume unit (default: from the header, e.g. 'Volume (uL)')."
    ),
    timezone: str | None = typer.Option(
        None, "--timezone", help="The lab's zone, e.g. America/New_York (default: local)."
    ),
    box_grid: str | None = typer.Option(
        None, "--box-grid", help="Grid of the boxes it creates (default 9x9)."
    ),
    pre_temp: str | None = typer.Option(
        None, "--pre-temp", help="Temperature before centrifugation: RT, 2-10C or 35-38C."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and report; change nothing."),
    json: JsonOption = False,
) -> None:
    """Import a legacy inventory spreadsheet: all rows, or (if any row is faulty) none."""
    sheet = sheet_format(
        mapping,
        columns=_pairs(column),
        date_format=date_format,
        unit=unit,
        timezone=timezone,
        box_grid=box_grid,
        precentrifugation_temperature=pre_temp,
    )
    with work(ctx, readonly=dry_run) as (session, actor):
        plan = check_inventory(session, actor=actor, path=file, study=study, sheet=sheet)
        with closing(plan):
            report = plan.report
            if not (dry_run or report.fault_count):
                bar = typer.progressbar(length=report.rows, label="importing", file=sys.stderr)
                with bar:
                    report = write_inventory(session, actor=actor, plan=plan, progress=bar.update)
    _emit(report, dry_run=dry_run, json=json)
    if report.fault_count:
        raise typer.Exit(2)


def _pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sign, header = item.partition("=")
        if not sign:
            raise ValidationError(f"{item!r} is not FIELD=HEADER", field="column", value=item)
        pairs[name.strip()] = header.strip().strip("\"'")
    return pairs


def _emit(report: ImportReport, *, dry_run: bool, json: bool) -> None:
    if json:
        emit_json({"dry_run": dry_run, **report.model_dump(mode="json")})
    elif report.faults:
        emit_table(
            ["row", "line", "column", "value", "reason"],
            [(f.row, f.line, f.column, f.value, f.reason) for f in report.faults],
        )
    for notice in report.notices:
        message(f"note: {notice}")
    new = (
        f"{report.new_participants} participants, {report.new_visits} visits and "
        f"{report.new_units} storage units"
    )
    fine = report.rows - report.faulty_rows
    if report.fault_count:
        message(
            f"{report.file}: {report.rows} rows, {fine} fine, {report.faulty_rows} faulty "
            f"({report.fault_count} faults); nothing was imported"
        )
    elif dry_run:
        message(f"{report.file}: all {report.rows} rows fine; would create {new}; dry run")
    else:
        message(f"{report.file}: imported {report.imported} specimens; created {new}")


@app.command()
def redcap(
    ctx: typer.Context,
    dictionary: Path = typer.Option(..., "--dictionary", help="The REDCap data dictionary (CSV)."),
    records: Path = typer.Option(
        ..., "--records", help='A "raw" records export (CSV), one row per record per event.'
    ),
    study: str | None = typer.Option(
        None, "--study", help="Study to register into (default: the only study)."
    ),
    mapping: Path | None = typer.Option(
        None,
        "--mapping",
        help="TOML: which fields are what (default: the shipped redcap_mapping.toml).",
    ),
    skip_faulty: bool = typer.Option(
        False,
        "--skip-faulty",
        help="Import all but the records with a faulty row and the fields with a faulty "
        "definition, and list what was left out.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and report; change nothing."),
    json: JsonOption = False,
) -> None:
    """Import a REDCap project: participants, visits, phenotypes, consent and identity; all
    rows, or (if any row is faulty) none, or with --skip-faulty all but the faulty records.
    Importing the same files again changes nothing."""
    given = redcap_mapping(mapping)
    with work(ctx, readonly=dry_run) as (session, actor):
        plan = check_redcap(
            session,
            actor=actor,
            dictionary=dictionary,
            records=records,
            study=study,
            mapping=given,
            skip_faulty=skip_faulty,
        )
        report = plan.report
        if plan.writable and not dry_run:
            with typer.progressbar(length=report.rows, label="importing", file=sys.stderr) as bar:
                report = write_redcap(session, actor=actor, plan=plan, progress=bar.update)
    _emit_redcap(report, dry_run=dry_run, json=json)
    if not plan.writable:
        raise typer.Exit(2)


def _emit_redcap(report: ImportReport, *, dry_run: bool, json: bool) -> None:
    if json:
        emit_json({"dry_run": dry_run, **report.model_dump(mode="json")})
    elif report.faults:
        emit_table(
            ["file", "row", "line", "record", "event", "instance", "field", "value", "reason"],
            [
                (f.file, f.row, f.line, f.record, f.event, f.instance, f.column, f.value, f.reason)
                for f in report.faults
            ],
        )
    for notice in report.notices:
        message(f"note: {notice}")
    left_out = report.left_out
    if report.fault_count and left_out is None:
        fine = report.rows - report.faulty_rows
        message(
            f"{report.records}: {report.rows} rows, {fine} fine, {report.faulty_rows} faulty "
            f"({report.fault_count} faults in all); nothing was imported"
        )
        return
    if left_out is not None:
        for field, reason in left_out.fields.items():
            message(f"left out: field {field} ({reason})")
        for record in left_out.listed:
            rows = ", ".join(map(str, record.rows))
            named = f"record {record.record}, " if record.record is not None else ""
            message(f"left out: {named}rows {rows} ({record.reason})")
        if left_out.records > len(left_out.listed):
            message(f"left out: {len(left_out.listed)} of {left_out.records} records listed")
    counted = [
        (name, getattr(report, name))
        for name in ("participants", "identities", "visits", "variables", "values", "consents")
    ]
    for name, counts in counted:
        message(
            f"  {name:<12} {counts.added:>7} new {counts.changed:>7} changed "
            f"{counts.unchanged:>7} unchanged"
        )
    for document in report.documents or []:
        message(f"  consent document {document}: {'to be ' if dry_run else ''}created")
    if left_out is not None and (left_out.records or left_out.fields):
        parts = [f"{left_out.records} faulty records ({left_out.rows} rows)"]
        if left_out.fields:
            parts.append(f"{len(left_out.fields)} faulty fields")
        message(
            f"{report.records}: {'would import' if dry_run else 'imported'} "
            f"{report.rows - left_out.rows} of {report.rows} rows, leaving out "
            f"{' and '.join(parts)}{'; dry run, nothing changed' if dry_run else ''}"
        )
    else:
        done = "checked; dry run, nothing changed" if dry_run else "imported"
        message(f"{report.records}: all {report.rows} rows {done}")
