"""`biobank cohort …`: select specimens by type, availability, participant and phenotype, see
the counts consent leaves, and keep queries by name."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from biobank.cli.common import JsonOption, emit_json, emit_table, message, parse_date, state, work
from biobank.cohort import CohortQuery, describe, load_query, parse_conditions
from biobank.services import cohorts

app = typer.Typer(help="Cohort queries: filters, counts before export, saved queries.")

Where = Annotated[
    str | None,
    typer.Option("--where", help='Phenotype conditions: "ln_class in (III, IV) and upcr >= 0.25".'),
]
Types = Annotated[list[str], typer.Option("--type", help="SPREC type, e.g. SER (repeatable).")]
Statuses = Annotated[
    list[str], typer.Option("--status", help="Specimen status (repeatable; default available).")
]
MinQuantity = Annotated[
    float | None, typer.Option("--min-quantity", help="At least this much left (its unit).")
]
CollectedFrom = Annotated[str | None, typer.Option("--collected-from", help="YYYY-MM-DD.")]
CollectedTo = Annotated[str | None, typer.Option("--collected-to", help="YYYY-MM-DD.")]
MaxThaws = Annotated[int | None, typer.Option("--max-thaws", help="At most this many thaws.")]
Storage = Annotated[str | None, typer.Option("--storage", help="Only under this unit (barcode).")]
Sexes = Annotated[list[str], typer.Option("--sex", help="female, male, … (repeatable).")]
MinAge = Annotated[int | None, typer.Option("--min-age", help="Age at collection, years.")]
MaxAge = Annotated[int | None, typer.Option("--max-age", help="Age at collection, years.")]
Uses = Annotated[
    list[str],
    typer.Option("--use", help="Use the consent must allow (repeatable; default FUTURE_RESEARCH)."),
]


def build_query(**given: object) -> CohortQuery:
    where = given.pop("where")
    return load_query(
        given
        | {
            "statuses": given["statuses"] or ["available"],
            "collected_from": parse_date(given["collected_from"], "collected_from"),
            "collected_to": parse_date(given["collected_to"], "collected_to"),
            "phenotypes": parse_conditions(where).model_dump(mode="json") if where else None,
        }
    )


@app.command()
def preview(
    ctx: typer.Context,
    where: Where = None,
    specimen_types: Types = [],  # noqa: B006 (typer reads the default)
    statuses: Statuses = [],  # noqa: B006
    min_quantity: MinQuantity = None,
    collected_from: CollectedFrom = None,
    collected_to: CollectedTo = None,
    max_freeze_thaws: MaxThaws = None,
    storage: Storage = None,
    sex: Sexes = [],  # noqa: B006
    min_age: MinAge = None,
    max_age: MaxAge = None,
    saved: str | None = typer.Option(None, "--saved", help="Run a saved query by name."),
    uses: Uses = [],  # noqa: B006
    as_of: str | None = typer.Option(None, "--as-of", help="Consent as of (default today)."),
    window_days: int | None = typer.Option(
        None, "--window-days", help="How far back a value at collection may reach."
    ),
    json: JsonOption = False,
) -> None:
    """Counts before anything is written: specimens, participants, and who consent leaves out."""
    query = build_query(
        where=where, specimen_types=specimen_types, statuses=statuses,
        min_quantity=min_quantity, collected_from=collected_from, collected_to=collected_to,
        max_freeze_thaws=max_freeze_thaws, storage=storage, sex=sex, min_age=min_age,
        max_age=max_age,
    )  # fmt: skip
    settings = state(ctx).settings
    with work(ctx, readonly=True) as (session, actor):
        if saved:
            query = cohorts.get_saved_query(session, actor=actor, name=saved).query
        result = cohorts.preview_cohort(
            session,
            actor=actor,
            query=query,
            uses=uses or ["FUTURE_RESEARCH"],
            as_of=parse_date(as_of, "as_of") or date.today(),
            window_days=settings.phenotype_window_days if window_days is None else window_days,
        )
    if json:
        emit_json(result)
        return
    emit_table(
        ["", "SPECIMENS", "PARTICIPANTS"],
        [
            ["selected", result.specimens, result.participants],
            *[
                [f"left out: {reason}", n["specimens"], n["participants"]]
                for reason, n in result.exclusions.items()
            ],
        ],
    )
    message(
        f"{result.matched_before_consent} specimens match the filters; consent for "
        f"{', '.join(result.uses)} as of {result.as_of} leaves {result.specimens}"
    )


@app.command()
def save(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The name to keep it under."),
    where: Where = None,
    specimen_types: Types = [],  # noqa: B006
    statuses: Statuses = [],  # noqa: B006
    min_quantity: MinQuantity = None,
    collected_from: CollectedFrom = None,
    collected_to: CollectedTo = None,
    max_freeze_thaws: MaxThaws = None,
    storage: Storage = None,
    sex: Sexes = [],  # noqa: B006
    min_age: MinAge = None,
    max_age: MaxAge = None,
    description: str | None = typer.Option(None, "--description", help="What it is for."),
    replace: bool = typer.Option(False, "--replace", help="Replace a query of that name."),
    json: JsonOption = False,
) -> None:
    """Keep a query by name (the filters as data, never SQL)."""
    query = build_query(
        where=where, specimen_types=specimen_types, statuses=statuses,
        min_quantity=min_quantity, collected_from=collected_from, collected_to=collected_to,
        max_freeze_thaws=max_freeze_thaws, storage=storage, sex=sex, min_age=min_age,
        max_age=max_age,
    )  # fmt: skip
    with work(ctx) as (session, actor):
        kept = cohorts.save_query(
            session, actor=actor, name=name, query=query, description=description,
            replace=replace,
        )  # fmt: skip
    if json:
        emit_json(kept)
        return
    message(f"saved query {kept.name!r}")


@app.command("list")
def list_queries(ctx: typer.Context, json: JsonOption = False) -> None:
    """The saved queries."""
    with work(ctx, readonly=True) as (session, actor):
        rows = cohorts.list_saved_queries(session, actor=actor)
    if json:
        emit_json(rows)
        return
    emit_table(
        ["NAME", "CONDITIONS", "BY", "DESCRIPTION"],
        [
            [
                r.name,
                describe(r.query.phenotypes) if r.query.phenotypes else "",
                r.created_by or "",
                r.description or "",
            ]
            for r in rows
        ],
    )


@app.command()
def show(ctx: typer.Context, name: str = typer.Argument(...), json: JsonOption = False) -> None:
    """One saved query in full."""
    with work(ctx, readonly=True) as (session, actor):
        row = cohorts.get_saved_query(session, actor=actor, name=name)
    if json:
        emit_json(row)
        return
    fields = row.query.model_dump(exclude={"phenotypes"}, exclude_defaults=True)
    lines = [f"{row.name}: {row.description or ''}".rstrip(": ")]
    lines += [f"  {key}: {value}" for key, value in fields.items()]
    if row.query.phenotypes:
        lines.append(f"  where: {describe(row.query.phenotypes)}")
    typer.echo("\n".join(lines))
