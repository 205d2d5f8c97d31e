"""`biobank phenotype …`: the data dictionary (and admins' renames and retirements of its
variables), participants' values, and a specimen's phenotype at collection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from biobank.cli.common import (
    JsonOption,
    emit_json,
    emit_table,
    message,
    parse_date,
    state,
    work,
)

if TYPE_CHECKING:
    from biobank.services.phenotype_variables import VariableRead

app = typer.Typer(help="Phenotype data: the dictionary and each participant's values.")
variable_app = typer.Typer(help="Rename, retire or restore a dictionary variable (admins).")
app.add_typer(variable_app, name="variable")

Reason = typer.Option(..., "--reason", help="Why (kept in the audit trail).")

OUTCOME_WORDS = {"added": "added", "changed": "changed", "same": "unchanged"}


def _range(v: VariableRead) -> str:
    low, high = v.min_value, v.max_value
    if low is not None and high is not None:
        return f"{low:g}..{high:g}"
    if low is not None:
        return f">= {low:g}"
    return "" if high is None else f"<= {high:g}"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "|".join(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@app.command()
def dictionary(
    ctx: typer.Context,
    category: str | None = typer.Option(None, "--category", help="e.g. labs, activity."),
    everything: bool = typer.Option(
        False, "--all", help="Retired variables too, with the day each was retired."
    ),
    json: JsonOption = False,
) -> None:
    """The phenotype data dictionary."""
    from biobank.services import phenotype_variables

    with work(ctx, readonly=True) as (session, actor):
        rows = phenotype_variables.list_variables(
            session, actor=actor, category=category, include_retired=everything
        )
    if json:
        emit_json(rows)
        return
    emit_table(
        ["name", "label", "type", "scope", "unit", "range", "choices", "code"]
        + (["retired"] if everything else []),
        [
            (
                v.name,
                v.label,
                v.value_type.value,
                v.scope.value,
                v.unit,
                _range(v),
                ", ".join(c["code"] for c in v.choices or []),
                v.code,
            )
            + ((v.retired_at and v.retired_at.date(),) if everything else ())
            for v in rows
        ],
    )


@variable_app.command("rename")
def variable_rename(
    ctx: typer.Context, old: str, new: str, reason: str = Reason, json: JsonOption = False
) -> None:
    """Rename a variable: its values follow it, and its old name still finds it."""
    from biobank.services import phenotype_variables

    with work(ctx) as (session, actor):
        renamed = phenotype_variables.rename_variable(
            session, actor=actor, name=old, new_name=new, reason=reason
        )
    if json:
        emit_json(renamed)
        return
    message(f"renamed {renamed.former_names[-1]} to {renamed.name}")


@variable_app.command("retire")
def variable_retire(
    ctx: typer.Context, name: str, reason: str = Reason, json: JsonOption = False
) -> None:
    """Retire a variable: its values are kept, but it takes no new ones and is no longer
    queried or exported."""
    from biobank.services import phenotype_variables

    with work(ctx) as (session, actor):
        retired = phenotype_variables.retire_variable(
            session, actor=actor, name=name, reason=reason
        )
    if json:
        emit_json(retired)
        return
    message(f"retired {retired.name}; its values are kept")


@variable_app.command("restore")
def variable_restore(
    ctx: typer.Context, name: str, reason: str = Reason, json: JsonOption = False
) -> None:
    """Put a retired variable back in use, with the values it kept."""
    from biobank.services import phenotype_variables

    with work(ctx) as (session, actor):
        restored = phenotype_variables.restore_variable(
            session, actor=actor, name=name, reason=reason
        )
    if json:
        emit_json(restored)
        return
    message(f"restored {restored.name}")


@app.command("set")
def set_(
    ctx: typer.Context,
    participant: str,
    variable: str,
    value: str,
    visit: str | None = typer.Option(None, "--visit", "-v", help="Visit label, e.g. baseline."),
    observed: str | None = typer.Option(
        None, "--date", help="YYYY-MM-DD observed (a visit's value takes the visit's date)."
    ),
    json: JsonOption = False,
) -> None:
    """Record one value, checked against the dictionary (prints added, changed or unchanged)."""
    from biobank.services import phenotypes

    with work(ctx) as (session, actor):
        change = phenotypes.set_value(
            session,
            actor=actor,
            participant=participant,
            variable=variable,
            value=value,
            visit=visit,
            observed_on=parse_date(observed, "date"),
        )
    if json:
        emit_json(change)
        return
    typer.echo(OUTCOME_WORDS[change.outcome])
    where = f" at {change.value.visit}" if change.value.visit else ""
    message(f"{participant.upper()} {change.value.variable}{where}: {change.value.display}")


@app.command()
def show(ctx: typer.Context, participant: str, json: JsonOption = False) -> None:
    """A participant's values: participant-level first, then each visit's in date order (a
    form filled in several times within a visit: each filling as `visit [N]`, on its date)."""
    from biobank.services import phenotype_missing, phenotypes

    with work(ctx, readonly=True) as (session, actor):
        rows = phenotypes.participant_phenotypes(session, actor=actor, participant=participant)
        missing = phenotype_missing.participant_missing(
            session, actor=actor, participant=participant
        )
    if json:
        emit_json(rows)
        return
    emit_table(
        ["visit", "observed", "variable", "value", "source"],
        [
            (
                f"{r.visit} [{r.instance}]" if r.instance else r.visit,
                r.observed_on,
                r.variable,
                r.display,
                r.source,
            )
            for r in rows
        ],
    )
    if missing:
        message(
            f"{len(missing)} values missing with reason: biobank phenotype missing {participant}"
        )


@app.command()
def missing(ctx: typer.Context, participant: str, json: JsonOption = False) -> None:
    """Where a participant's values are missing with reason (a REDCap missing-data code such as
    NASK, not asked), in the timeline's order; cohorts and exports never take these for data."""
    from biobank.services import phenotype_missing

    with work(ctx, readonly=True) as (session, actor):
        rows = phenotype_missing.participant_missing(session, actor=actor, participant=participant)
    if json:
        emit_json(rows)
        return
    emit_table(
        ["visit", "variable", "code", "source"],
        [(r.visit, r.variable, r.code, r.source) for r in rows],
    )


@app.command()
def at(
    ctx: typer.Context,
    specimen: str,
    window_days: int | None = typer.Option(
        None, "--window-days", help="How far back a value may reach (default: the settings)."
    ),
    json: JsonOption = False,
) -> None:
    """A specimen's phenotype at its collection (aliquots share their parent's)."""
    from biobank.services import phenotype_at_collection

    if window_days is None:
        window_days = state(ctx).settings.phenotype_window_days
    with work(ctx, readonly=True) as (session, actor):
        values = phenotype_at_collection.specimen_phenotypes(
            session, actor=actor, accession=specimen, window_days=window_days
        )
    if json:
        emit_json(values)
        return
    emit_table(["variable", "value"], [(name, _text(v)) for name, v in values.items()])
