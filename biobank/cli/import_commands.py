"""`biobank import …`: bring in what a lab kept before this system."""

from __future__ import annotations

import sys
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from biobank.cli.common import (
    JsonOption,
    emit_json,
    emit_table,
    message,
    parse_datetime,
    state,
    work,
)
from biobank.errors import ValidationError

if TYPE_CHECKING:
    from biobank.services.imports.common import ImportReport, InferredMapping
    from biobank.services.imports.redcap.api import PulledProject

app = typer.Typer(help="Import data kept in other systems.", no_args_is_help=True)


@app.command()
def inventory(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV or .xlsx workbook, one row per tube."),
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
    sheet_name: str | None = typer.Option(
        None, "--sheet", help="A workbook's sheet to read (default: its first)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and report; change nothing."),
    json: JsonOption = False,
) -> None:
    """Import a legacy inventory spreadsheet: all rows, or (if any row is faulty) none."""
    from biobank.services.imports.legacy import check_inventory, sheet_format, write_inventory

    sheet = sheet_format(
        mapping,
        columns=_pairs(column),
        date_format=date_format,
        unit=unit,
        timezone=timezone,
        box_grid=box_grid,
        precentrifugation_temperature=pre_temp,
        sheet=sheet_name,
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
    dictionary: Path | None = typer.Option(
        None, "--dictionary", help="The REDCap data dictionary (CSV)."
    ),
    records: Path | None = typer.Option(
        None, "--records", help='A "raw" records export (CSV), one row per record per event.'
    ),
    api_url: str | None = typer.Option(
        None,
        "--api-url",
        help="Pull the project from this REDCap server's API instead (e.g. "
        "https://redcap.example.edu/api/; default: the settings' redcap_api_url), with the token "
        "in BIOBANK_REDCAP_TOKEN or the settings' redcap_token. Needs biobank[redcap].",
    ),
    since: str | None = typer.Option(
        None,
        "--since",
        help="With --api-url: only the records created or changed since this date or time "
        "(YYYY-MM-DD[ HH:MM[:SS]], the server's time); the others are left as they are.",
    ),
    study: str | None = typer.Option(
        None, "--study", help="Study to register into (default: the only study)."
    ),
    mapping: str | None = typer.Option(
        None,
        "--mapping",
        metavar="FILE|lupus",
        help="Which fields are what: a TOML file, or 'lupus' (the shipped lupus registry "
        "mapping). Default: inferred from the project (the lupus one when the dictionary has "
        "all its fields); the report says what was inferred.",
    ),
    write_mapping: Path | None = typer.Option(
        None,
        "--write-mapping",
        help="Write the mapping (inferred, or given) to this new TOML file to edit and use with "
        "--mapping; with --dry-run, check too, else import nothing.",
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
    from biobank.services.imports.redcap import check_redcap, redcap_mapping, write_redcap
    from biobank.services.imports.redcap.inference import SHIPPED, infer_mapping, inferred_mapping

    mapping_file = None if mapping in (None, SHIPPED) else Path(mapping)
    given = None if mapping is None else redcap_mapping(mapping_file)
    dictionary, records, pulled = _redcap_files(
        ctx, dictionary, records, api_url, since, dry_run=dry_run, json=json
    )
    names = pulled.names if pulled is not None else None
    setup = pulled.setup if pulled is not None else None
    inferred = None
    if given is None:
        inferred = infer_mapping(dictionary, records, setup)
        given = inferred_mapping(inferred)
    if write_mapping is not None:
        files = names or (dictionary.name, records.name)
        _write_mapping(write_mapping, inferred, mapping_file, files)
        if not dry_run:
            return
    with work(ctx, readonly=dry_run) as (session, actor):
        plan = check_redcap(
            session,
            actor=actor,
            dictionary=dictionary,
            records=records,
            study=study,
            mapping=given,
            skip_faulty=skip_faulty,
            names=names,
            inferred=inferred,
        )
        report = plan.report
        if plan.writable and not dry_run:
            with typer.progressbar(length=report.rows, label="importing", file=sys.stderr) as bar:
                report = write_redcap(session, actor=actor, plan=plan, progress=bar.update)
    _emit_redcap(report, dry_run=dry_run, json=json)
    if not plan.writable:
        raise typer.Exit(2)


def _write_mapping(
    path: Path,
    inferred: InferredMapping | None,
    given: Path | None,
    files: tuple[str, str],
) -> None:
    """Write the mapping to a new file to edit (`--write-mapping`): the one inferred from
    `files`, the shipped one, or the file given with the shipped settings it leaves out."""
    from biobank.services.imports.redcap.inference import INFERRED, mapping_toml
    from biobank.services.imports.redcap.mapping import mapping_settings

    if inferred is not None and inferred.mapping == INFERRED:
        title = f"A REDCap mapping inferred from {files[0]} and {files[1]}: check it, edit it."
    elif given is None:
        title = "The shipped lupus registry mapping (biobank/reference/redcap_mapping.toml)."
    else:
        title = f"The mapping {given.name}, with the shipped lupus mapping's settings it left out."
    settings = inferred.settings if inferred is not None else mapping_settings(given)
    try:
        with path.open("x", encoding="utf-8") as file:
            file.write(mapping_toml(inferred, settings, title))
    except OSError as error:
        reason = "it exists" if isinstance(error, FileExistsError) else error.strerror or error
        raise ValidationError(
            f"cannot write the mapping to {path}: {reason}", field="write_mapping", value=str(path)
        ) from None
    message(f"wrote the mapping to {path}: edit it, then import with --mapping {path}")


def _redcap_files(
    ctx: typer.Context,
    dictionary: Path | None,
    records: Path | None,
    api_url: str | None,
    since: str | None,
    *,
    dry_run: bool,
    json: bool,
) -> tuple[Path, Path, PulledProject | None]:
    """The dictionary and the records to import: the files given, or the project pulled from a
    REDCap server's API into a private temporary folder that is removed when the command ends
    (and then the pull, with what the report calls them and the project's setup). A pull
    without records (none changed since `--since`) has nothing to check: it is said, and the
    command ends."""
    from biobank.services.imports.redcap.api import pull_redcap

    cli = state(ctx)
    url = api_url or (None if dictionary or records else cli.settings.redcap_api_url)
    if url is None:
        if dictionary is None or records is None:
            raise ValidationError(
                "give --dictionary and --records, or --api-url (a REDCap server's API URL)",
                field="api_url",
            )
        if since is not None:
            raise ValidationError("--since is for --api-url", field="since", value=since)
        return dictionary, records, None
    if dictionary or records:
        raise ValidationError(
            "--api-url pulls the data dictionary and the records itself: give it without "
            "--dictionary and --records",
            field="api_url",
        )
    pulled = ctx.with_resource(
        pull_redcap(
            actor=cli.actor(),
            url=url,
            token=cli.settings.redcap_token,
            since=parse_datetime(since, "--since"),
        )
    )
    message(f"note: {pulled.summary}")
    if not pulled.has_records:
        if json:
            emit_json({"dry_run": dry_run, "records": pulled.names[1], "rows": 0})
        message(f"{pulled.names[1]}: no records; nothing to import")
        raise typer.Exit(0)
    return pulled.dictionary, pulled.records, pulled


def _emit_inferred(inferred: InferredMapping | None) -> None:
    """What an import without a mapping inferred, and what not (on stderr)."""
    from biobank.services.imports.redcap.inference import SHIPPED

    if inferred is None:
        return
    if inferred.mapping == SHIPPED:
        message(f"mapping: the shipped lupus mapping ({inferred.why['mapping']})")
        return
    message("mapping: inferred from the project (--write-mapping FILE writes it to edit)")
    for key, why in inferred.why.items():
        table, _, name = key.partition(".")
        value = inferred.settings.get(table)
        if name and isinstance(value, dict):
            value = value.get(name)
        if isinstance(value, list):
            value = ", ".join(value)
        shown = f" = {value}" if isinstance(value, str) else ""
        message(f"  inferred: {key}{shown} ({why})")
    for key, why in inferred.not_inferred.items():
        message(f"  not inferred: {key} ({why})")


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
    _emit_inferred(report.inferred)
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
            + (f" {counts.withdrawn:>7} withdrawn" if counts.withdrawn else "")
            + (f" {counts.removed:>7} removed" if counts.removed else "")
        )
    _emit_removed(report, dry_run=dry_run)
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


def _emit_removed(report: ImportReport, *, dry_run: bool) -> None:
    """The values a re-import removes, their cells blank in REDCap now."""
    removed = report.removed or []
    for gone in removed:
        record = f"record {gone.record}, " if gone.record is not None else ""
        event = f"event {gone.event}, " if gone.event else ""
        instance = f"instance {gone.instance}, " if gone.instance is not None else ""
        message(
            f"  {'would remove' if dry_run else 'removed'}: {record}{event}{instance}"
            f"row {gone.row}, {gone.field} (was {gone.value}; blank now)"
        )
    total = report.values.removed if report.values is not None else 0
    if total > len(removed):
        message(f"  {len(removed)} of {total} removed values listed")
