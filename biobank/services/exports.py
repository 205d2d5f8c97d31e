"""Linked phenotype exports for investigators: a cohort, the uses its consent must allow, a
de-identification mode (`services.deidentification`), files in the formats asked for
(`services.export_files`), and a manifest to audit and replay (`services.export_runs`).

Every new export passes one guard (`_check`: permission, consent as of today, the agreement a
limited data set needs, a saved query narrowed, never ignored) and is recorded as begun before
anything is written. The files are written into a hidden folder, with the manifest last; the
folder is renamed into place whole once the completed run is committed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import IO, Annotated, Any

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, Field
from sqlmodel import Session, col, select

from biobank import __version__
from biobank.db import after_commit, after_rollback, flush, one_of
from biobank.domain.cohort import CohortQuery
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import DeidentificationMode
from biobank.errors import ValidationError
from biobank.export.files import write_atomically
from biobank.export.formats import DEFAULT_FORMAT, known
from biobank.export.shapes import Shape
from biobank.models import ExportRun, ExportRunSpecimen, Specimen
from biobank.services import audit
from biobank.services.agreements import covering_agreement
from biobank.services.cohorts import Selected
from biobank.services.consent_checks import judged_today, known_uses
from biobank.services.deidentification import BATCH
from biobank.services.export_files import (
    ExportFile,
    ExportRecipe,
    WrittenExport,
    write_export_files,
)
from biobank.services.export_runs import find_run
from biobank.services.phenotype_at_collection import DEFAULT_WINDOW_DAYS
from biobank.services.reservations import ReservationSummary, reserve_specimens
from biobank.services.saved_queries import resolve_query

FormatName = Annotated[str, AfterValidator(known)]


class ExportRequest(BaseModel):
    """What a PI asks for. `saved` names a saved query, which `query`'s filters (those set)
    narrow; `as_of`, when given, must be today (consent is judged as of the day it runs)."""

    query: CohortQuery | None = None
    saved: str | None = None
    uses: list[str]
    mode: DeidentificationMode = DeidentificationMode.safe_harbor
    formats: list[FormatName] = Field(default_factory=lambda: [DEFAULT_FORMAT])
    shape: Shape = Shape.wide  # of the tables: a row per specimen, or per specimen and value
    per_participant: bool = False
    dua_reference: str | None = None
    reserve_request: str | None = None
    as_of: date | None = None
    window_days: int = Field(default=DEFAULT_WINDOW_DAYS, ge=0)


class ExportResult(BaseModel):
    run_code: str
    directory: Path
    mode: DeidentificationMode
    uses: list[str]
    as_of: date
    counts: dict[str, int]
    exclusions: dict[str, dict[str, int]]
    files: list[ExportFile]
    manifest: Path
    reservation: ReservationSummary | None = None


def _check(
    session: Session, actor: Actor, request: ExportRequest, today: date
) -> tuple[list[str], CohortQuery, dict[str, Any]]:
    """The guard every new export passes: permission, consent as of today, the agreement a
    limited set needs, a saved query narrowed and never ignored. Returns the uses, the
    query to run and what the manifest records of how it was asked."""
    require(actor, Permission.export)
    if request.mode is DeidentificationMode.identified:
        require(actor, Permission.export_identified)
    judged_today(request.as_of, what="a new export")
    if not request.formats:
        raise ValidationError("name at least one format", field="formats")
    if request.reserve_request is not None and not request.reserve_request.strip():
        raise ValidationError("a reservation names its request", field="reserve_request")
    uses = known_uses(session, request.uses)
    query, saved = resolve_query(session, actor=actor, query=request.query, saved=request.saved)
    asked: dict[str, Any] = {}
    if saved is not None:
        asked["saved_query"] = {"name": saved.name, "query": saved.query.model_dump(mode="json")}
        if request.query is not None:
            asked["filters"] = request.query.model_dump(
                mode="json", include=request.query.model_fields_set
            )
    if request.mode is DeidentificationMode.limited:
        agreement = covering_agreement(
            session, actor=actor, reference=request.dua_reference, uses=uses, today=today
        )
        if query.study and query.study.upper() != agreement.study:
            raise ValidationError(
                f"data use agreement {agreement.reference} covers study {agreement.study}, "
                f"not {query.study}",
                field="study",
                value=query.study,
            )
        query = query.model_copy(update={"study": agreement.study})
        asked["data_use_agreement"] = agreement.model_dump(
            mode="json", include={"reference", "pi", "study", "uses", "starts_on", "expires_on"}
        )
    return uses, query, asked


def _new_folder(path: Path) -> Path:
    try:
        path.mkdir(parents=True)
    except OSError as error:
        raise ValidationError(
            f"cannot make the export folder {path}: {error.strerror}",
            field="directory",
            value=str(path),
        ) from None
    return path


def begin_export(
    session: Session,
    *,
    actor: Actor,
    request: ExportRequest,
    directory: Path,
    code_key: str | None = None,
) -> str:
    """Record a new export as started, before anything is written: the guard is passed and
    the run (who, query, uses, consent date, mode) is on record once the caller commits, so
    an export killed part-way is still listed (`export list`: incomplete) and audited. Returns
    its run code, for `run_export`. `code_key`: the secret its codes are made with, when they
    must be a specimen request's (its shipments' labels); else a new one."""
    today = date.today()
    uses, query, asked = _check(session, actor, request, today)
    assert actor.user_id is not None  # the front ends run exports for a signed-in user
    run = ExportRun(
        run_code=_new_run_code(), actor_id=actor.user_id, query=query.model_dump(mode="json"),
        uses=uses, mode=request.mode, formats=list(dict.fromkeys(request.formats)),
        dua_reference=request.dua_reference if request.mode is DeidentificationMode.limited
        else None,
        reserve_request=request.reserve_request, software_version=__version__, counts={},
        exclusions={}, files={}, manifest_sha256="", code_key=code_key or secrets.token_hex(16),
        as_of=today, window_days=request.window_days,
    )  # fmt: skip
    target = Path(directory) / run.run_code
    if target.exists() or _staging(target).exists():
        raise ValidationError(f"{target} exists", field="directory", value=str(target))
    session.add(run)
    flush(session)
    audit.record(
        session, actor=actor, action="export.start", entity="export_run", entity_id=run.id,
        after={"run": run.run_code, "query": run.query, **asked, "uses": uses,
               "consent_as_of": today.isoformat(), "mode": run.mode.value,
               "formats": run.formats, "shape": request.shape.value,
               "folder": str(target.resolve())},
        reason=run.dua_reference,
    )  # fmt: skip
    return run.run_code


def _staging(target: Path) -> Path:
    """Where a run's files are written: hidden beside the folder it becomes once the run is
    committed, complete (renamed as a whole), so no file of an unrecorded or unfinished run
    ever sits where a finished export's do."""
    return target.with_name(f".{target.name}.part")


def run_export(
    session: Session,
    *,
    actor: Actor,
    request: ExportRequest,
    directory: Path,
    started: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    code_key: str | None = None,
) -> ExportResult:
    """Select as of today, de-identify and write the files, record what the run included
    (and, with `reserve_request`, reserve it for that request), then the manifest. `started`
    is the run `begin_export` recorded (the front ends commit it first); without it the run
    is begun here, in the caller's transaction. The folder appears once this is committed."""
    run_code = started or begin_export(
        session, actor=actor, request=request, directory=directory, code_key=code_key
    )
    run = _run_to_finish(session, actor, run_code)
    assert run.id is not None  # a stored row
    today = date.today()
    uses, query, asked = _check(session, actor, request, today)  # again: it is today's guard
    if query.model_dump(mode="json") != run.query or uses != run.uses or run.as_of != today:
        raise ValidationError(f"{run_code} was begun for another request or day",
                              field="run", value=run_code)  # fmt: skip
    target = Path(directory) / run_code
    staging = _staged(session, target)
    recipe = ExportRecipe(
        query=query, uses=uses, as_of=today, mode=request.mode, key=run.code_key,
        formats=request.formats, per_participant=request.per_participant,
        window_days=request.window_days, shape=request.shape,
    )  # fmt: skip
    written = write_export_files(
        session, recipe, staging, progress=progress, on_batch=_recorder(session, run.id)
    )
    reservation = _reserve(session, actor=actor, request=request, run_id=run.id, uses=uses)
    counts = written.counts() | ({"reserved": reservation.reserved} if reservation else {})
    manifest = _manifest(
        run, actor=actor, request=request, query=query, asked=asked, uses=uses,
        counts=counts, written=written, reservation=reservation,
    )  # fmt: skip
    _complete(session, actor=actor, run=run, manifest=manifest, staging=staging)
    return ExportResult(
        run_code=run_code, directory=target, mode=request.mode, uses=uses, as_of=today,
        counts=counts, exclusions=written.tally.exclusions(), files=written.files,
        manifest=target / "manifest.json", reservation=reservation,
    )  # fmt: skip


def _run_to_finish(session: Session, actor: Actor, run_code: str) -> ExportRun:
    """The run `begin_export` recorded for this actor, not yet completed."""
    run = find_run(session, run_code)
    if run is None or run.actor_id != actor.user_id or run.manifest_sha256:
        raise ValidationError(f"{run_code} is not an export of yours still to run",
                              field="run", value=run_code)  # fmt: skip
    return run


def _staged(session: Session, target: Path) -> Path:
    """The run's hidden folder (`_staging`), renamed to `target` once the run is committed and
    removed if it rolls back."""
    staging = _new_folder(_staging(target))
    after_commit(session, lambda: _publish(staging, target))
    after_rollback(session, lambda _connection: shutil.rmtree(staging, ignore_errors=True))
    return staging


def _publish(staging: Path, target: Path) -> None:
    """The committed run's folder, renamed into place whole."""
    try:
        os.replace(staging, target)
    except OSError as error:
        raise ValidationError(
            f"the export is recorded but its folder could not be put in place: {error.strerror}"
            f" (its files are in {staging})",
            field="directory",
            value=str(target),
        ) from None


def _recorder(session: Session, run_id: int) -> Callable[[list[Selected]], None]:
    """Records each batch written as the run's specimens."""

    def record(batch: list[Selected]) -> None:
        # one INSERT … SELECT a batch: an executemany is a message per row on PostgreSQL
        chosen = sa.select(sa.literal(run_id), col(Specimen.id)).where(
            one_of(session, col(Specimen.id), (s.specimen_id for s in batch))
        )
        session.connection().execute(
            sa.insert(ExportRunSpecimen).from_select(["export_run_id", "specimen_id"], chosen)
        )

    return record


def _exported(session: Session, run_id: int) -> Iterator[int]:
    """The specimens a run recorded, a batch at a time in id order."""
    after = 0
    while ids := session.exec(
        select(ExportRunSpecimen.specimen_id)
        .where(ExportRunSpecimen.export_run_id == run_id, ExportRunSpecimen.specimen_id > after)
        .order_by(col(ExportRunSpecimen.specimen_id))
        .limit(BATCH)
    ).all():
        after = ids[-1]
        yield from ids


def _reserve(
    session: Session, *, actor: Actor, request: ExportRequest, run_id: int, uses: list[str]
) -> ReservationSummary | None:
    """With `reserve_request`, the run's specimens reserved for that request."""
    if not request.reserve_request:
        return None
    return reserve_specimens(
        session, actor=actor, specimen_ids=_exported(session, run_id),
        request=request.reserve_request, uses=uses, export_run_id=run_id,
    )  # fmt: skip


def _manifest(
    run: ExportRun,
    *,
    actor: Actor,
    request: ExportRequest,
    query: CohortQuery,
    asked: dict[str, Any],
    uses: list[str],
    counts: dict[str, int],
    written: WrittenExport,
    reservation: ReservationSummary | None,
) -> dict[str, Any]:
    """What the run asked for and what came out, each file with its checksum: enough to
    audit the run or replay it."""
    return {
        "run": run.run_code,
        "created_at": run.created_at.isoformat(),
        "created_by": actor.username,
        "software": {"name": "biobank", "version": __version__},
        "query": query.model_dump(mode="json"),
        **asked,
        "uses": uses,
        "consent_as_of": run.as_of.isoformat(),
        "phenotype_window_days": request.window_days,
        "mode": request.mode.value,
        "shape": request.shape.value,
        "dua_reference": run.dua_reference,
        "reserve_request": request.reserve_request,
        "reservation": reservation.model_dump(mode="json") if reservation else None,
        "counts": counts,
        "exclusions": written.tally.exclusions(),
        "files": {f.name: {"sha256": f.sha256, "rows": f.rows, "bytes": f.bytes}
                  for f in written.files},
    }  # fmt: skip


def _complete(
    session: Session, *, actor: Actor, run: ExportRun, manifest: dict[str, Any], staging: Path
) -> None:
    """The manifest written last, and the run recorded complete with its checksum."""
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"

    def write_manifest(file: IO[Any]) -> int:
        file.write(text)
        return 0

    written = write_atomically(staging / "manifest.json", write_manifest, text=True)
    run.counts, run.exclusions = manifest["counts"], manifest["exclusions"]
    run.files = manifest["files"]
    run.manifest_sha256 = written.sha256
    session.add(run)
    flush(session)
    audit.record(
        session,
        actor=actor,
        action="export.identified" if manifest["mode"] == DeidentificationMode.identified
        else "export.run",
        entity="export_run",
        entity_id=run.id,
        after={k: v for k, v in manifest.items() if k != "files"}
        | {"manifest": run.manifest_sha256},
        reason=run.dua_reference,
    )  # fmt: skip


def _new_run_code() -> str:
    return f"EX-{date.today():%Y%m%d}-{secrets.token_hex(3).upper()}"
