"""`biobank export …`: linked phenotype exports for investigators, their manifests, replays."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from biobank.cli.cohort_filters import Uses, cohort_filters
from biobank.cli.common import JsonOption, emit_json, emit_table, message, parse_date, state, work
from biobank.domain.cohort import CohortQuery
from biobank.domain.vocabulary import DeidentificationMode
from biobank.export.formats import DEFAULT_FORMAT, NAMES, known
from biobank.export.shapes import Shape

if TYPE_CHECKING:
    from biobank.services import export_runs

app = typer.Typer(help="Consent-enforced, de-identified exports of specimens and phenotypes.")


@app.command()
@cohort_filters
def run(
    ctx: typer.Context,
    directory: Path = typer.Option(
        Path("."), "--to", file_okay=False, help="Folder the export's own folder goes in."
    ),
    uses: Uses = [],  # noqa: B006 (typer reads the default)
    mode: DeidentificationMode = typer.Option(
        DeidentificationMode.safe_harbor, "--mode", help="De-identification."
    ),
    formats: list[str] = typer.Option(
        [],
        "--format",
        help=f"One of {', '.join(NAMES)} (repeatable; default {DEFAULT_FORMAT}).",
    ),
    shape: Shape = typer.Option(
        Shape.wide,
        "--shape",
        help="Tables with a row per specimen (wide), or the specimens and a row per specimen "
        "and phenotype value (long).",
    ),
    per_participant: bool = typer.Option(
        False, "--per-participant", help="Also one row per participant."
    ),
    dua: str | None = typer.Option(None, "--dua", help="Data-use agreement (limited mode)."),
    reserve: str | None = typer.Option(
        None, "--reserve", help="Reserve the exported specimens for this request."
    ),
    as_of: str | None = typer.Option(
        None, "--as-of", help="Consent as of: today only (`export replay` reruns a past run)."
    ),
    window_days: int | None = typer.Option(None, "--window-days"),
    saved: str | None = typer.Option(
        None, "--saved", help="Export a saved query; other filters narrow it."
    ),
    query: CohortQuery | None = None,  # the filter options (see `cohort_filters`)
    json: JsonOption = False,
) -> None:
    """Select, leave out what consent does not allow, de-identify, write the files and the
    manifest last."""
    from biobank.services import exports
    from biobank.services.exports import ExportRequest

    for fmt in formats:
        try:
            known(fmt)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    settings = state(ctx).settings
    request = ExportRequest(
        query=query,
        saved=saved,
        uses=uses or ["FUTURE_RESEARCH"],
        mode=mode,
        formats=formats or [DEFAULT_FORMAT],
        shape=shape,
        per_participant=per_participant,
        dua_reference=dua,
        reserve_request=reserve,
        as_of=parse_date(as_of, "as_of"),
        window_days=settings.phenotype_window_days if window_days is None else window_days,
    )
    # Two units of work: the run is on record as begun before any file is written, so an
    # export killed part-way is still listed and audited.
    with work(ctx) as (session, actor):
        started = exports.begin_export(session, actor=actor, request=request, directory=directory)
    with work(ctx) as (session, actor), ExitStack() as bars:
        bar = None

        def advance(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = bars.enter_context(
                    typer.progressbar(length=total, label="exporting", file=sys.stderr)
                )
            bar.update(done)

        result = exports.run_export(
            session, actor=actor, request=request, directory=directory, started=started,
            progress=advance,
        )  # fmt: skip
    if json:
        emit_json(result)
        return
    emit_table(
        ["FILE", "ROWS", "SHA-256"], [[f.name, f.rows, f.sha256[:16] + "…"] for f in result.files]
    )
    left_out = ", ".join(f"{n['specimens']} ({reason})" for reason, n in result.exclusions.items())
    message(
        f"export {result.run_code}: {result.counts['specimens']} specimens of "
        f"{result.counts['participants']} participants in {result.directory}, consent as of "
        f"{result.as_of}" + (f"; left out by consent: {left_out}" if left_out else "")
    )
    if result.reservation is not None:
        held = ", ".join(f"{n} ({why})" for why, n in result.reservation.left_out.items())
        message(
            f"reserved {result.reservation.reserved} for {result.reservation.request}"
            + (f"; not reserved: {held}" if held else "")
        )


@app.command()
def replay(
    ctx: typer.Context,
    run_code: str = typer.Argument(..., help="The run, e.g. EX-20261123-1A2B3C."),
    json: JsonOption = False,
) -> None:
    """Run an export again as recorded and say whether it comes out the same (exit 0) or
    what differs (exit 1)."""
    from biobank.services import export_runs

    with work(ctx) as (session, actor):
        result = export_runs.replay_export(session, actor=actor, run_code=run_code)
    if json:
        emit_json(result)
    elif result.matches:
        message(f"{result.run_code}: the same files again")
    else:
        message(f"{result.run_code}: differs:")
        for difference in result.differences:
            message(f"  {difference}")
    if not result.matches:
        raise typer.Exit(1)


@app.command("list")
def list_runs(ctx: typer.Context, json: JsonOption = False) -> None:
    """The export runs, newest first."""
    from biobank.services import export_runs

    with work(ctx, readonly=True) as (session, actor):
        rows = export_runs.list_runs(session, actor=actor)
    if json:
        emit_json(rows)
        return
    emit_table(
        ["RUN", "WHEN", "BY", "MODE", "USES", "CONSENT AS OF", "SPECIMENS", "RESERVED"],
        [
            [r.run_code, f"{r.created_at:%Y-%m-%d %H:%M}", r.created_by or "", r.mode,
             ", ".join(r.uses), r.as_of,
             r.counts.get("specimens", 0) if r.completed else "incomplete", _reserved(r)]
            for r in rows
        ],
    )  # fmt: skip


def _reserved(run: export_runs.ExportRunRead) -> str:
    """How many tubes a run reserved and for what; runs recorded before the count was kept
    name their request with "?" rather than claim a number."""
    if not run.reserve_request:
        return ""
    return f"{run.counts.get('reserved', '?')} for {run.reserve_request}"
