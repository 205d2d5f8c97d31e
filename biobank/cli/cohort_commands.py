"""`biobank cohort …`: select specimens by type, availability, participant and phenotype, see
the counts consent leaves, and keep queries by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from biobank.cli.cohort_filters import Uses, cohort_filters
from biobank.cli.common import JsonOption, emit_json, emit_table, message, parse_date, state, work
from biobank.domain.cohort import CohortQuery, describe
from biobank.terminal_text import shown

if TYPE_CHECKING:
    from biobank.services import cohort_counts

app = typer.Typer(help="Cohort queries: filters, counts before export, saved queries.")


@app.command()
@cohort_filters
def preview(
    ctx: typer.Context,
    query: CohortQuery | None = None,  # the filter options (see `cohort_filters`)
    saved: str | None = typer.Option(
        None, "--saved", help="A saved query by name; other filters narrow it."
    ),
    uses: Uses = [],  # noqa: B006 (typer reads the default)
    as_of: str | None = typer.Option(
        None, "--as-of", help="Consent as of: today only (earlier days: `cohort allowed-on`)."
    ),
    window_days: int | None = typer.Option(
        None, "--window-days", help="How far back a value at collection may reach."
    ),
    by: list[str] = typer.Option(
        [],
        "--by",
        help="Counts per stratum: sex, age-band, type, visit or a variable "
        "(repeatable); small cells suppressed unless --identified.",
    ),
    identified: bool = typer.Option(
        False, "--identified", help="Show every count, small cells too (admins)."
    ),
    json: JsonOption = False,
) -> None:
    """Counts before anything is written: specimens, participants, and who consent leaves out
    as of today; with --by, per stratum."""
    from biobank.domain.vocabulary import DeidentificationMode
    from biobank.services import cohort_counts

    settings = state(ctx).settings
    mode = DeidentificationMode.identified if identified else DeidentificationMode.safe_harbor
    with work(ctx, readonly=True) as (session, actor):
        result = cohort_counts.preview_cohort(
            session,
            actor=actor,
            query=query,
            saved=saved,
            uses=uses or ["FUTURE_RESEARCH"],
            as_of=parse_date(as_of, "as_of"),
            window_days=settings.phenotype_window_days if window_days is None else window_days,
            by=by, small_cell=settings.small_cell, mode=mode,
        )  # fmt: skip
    if json:
        emit_json(result)
        return
    for breakdown in result.breakdowns:
        emit_table(
            [breakdown.by.upper(), "SPECIMENS", "PARTICIPANTS"],
            [
                [s.value, s.specimens if s.specimens is not None else "suppressed",
                 s.participants if s.participants is not None else "suppressed"]
                for s in breakdown.strata
            ],
        )  # fmt: skip
    _show_counts(result)


def _show_counts(result: cohort_counts.CohortPreview) -> None:
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


@app.command("allowed-on")
@cohort_filters
def allowed_on(
    ctx: typer.Context,
    day: str = typer.Argument(..., help="The day consent is asked as of (YYYY-MM-DD)."),
    reason: str = typer.Option(..., "--reason", help="Why it is asked (kept in the audit)."),
    query: CohortQuery | None = None,  # the filter options (see `cohort_filters`)
    saved: str | None = typer.Option(
        None, "--saved", help="A saved query by name; other filters narrow it."
    ),
    uses: Uses = [],  # noqa: B006 (typer reads the default)
    listed: bool = typer.Option(
        False, "--list", help="Also the accession IDs and participant codes allowed."
    ),
    window_days: int | None = typer.Option(
        None, "--window-days", help="How far back a value at collection may reach."
    ),
    json: JsonOption = False,
) -> None:
    """What consent allowed on an earlier day (admins): counts, and with --list the internal
    IDs, but no data files; audited with its reason."""
    from biobank.services import cohort_counts

    settings = state(ctx).settings
    with work(ctx) as (session, actor):
        result = cohort_counts.allowed_on(
            session,
            actor=actor,
            as_of=parse_date(day, "day"),
            reason=reason,
            query=query,
            saved=saved,
            uses=uses or ["FUTURE_RESEARCH"],
            listed=listed,
            window_days=settings.phenotype_window_days if window_days is None else window_days,
        )
    if json:
        emit_json(result)
        return
    if result.specimens_listed is not None:
        emit_table(
            ["ACCESSION", "PARTICIPANT"],
            [[s["accession_id"], s["participant_code"]] for s in result.specimens_listed],
        )
    _show_counts(result)


@app.command()
@cohort_filters
def save(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The name to keep it under."),
    query: CohortQuery | None = None,  # the filter options (see `cohort_filters`)
    description: str | None = typer.Option(None, "--description", help="What it is for."),
    replace: bool = typer.Option(False, "--replace", help="Replace a query of that name."),
    json: JsonOption = False,
) -> None:
    """Keep a query by name (the filters as data, never SQL)."""
    from biobank.services import saved_queries

    with work(ctx) as (session, actor):
        kept = saved_queries.save_query(
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
    from biobank.services import saved_queries

    with work(ctx, readonly=True) as (session, actor):
        rows = saved_queries.list_saved_queries(session, actor=actor)
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
    from biobank.services import saved_queries

    with work(ctx, readonly=True) as (session, actor):
        row = saved_queries.get_saved_query(session, actor=actor, name=name)
    if json:
        emit_json(row)
        return
    fields = row.query.model_dump(exclude={"phenotypes"}, exclude_defaults=True)
    lines = [f"{row.name}: {row.description or ''}".rstrip(": ")]
    lines += [f"  {key}: {value}" for key, value in fields.items()]
    if row.query.phenotypes:
        lines.append(f"  where: {describe(row.query.phenotypes)}")
    typer.echo("\n".join(map(shown, lines)))
