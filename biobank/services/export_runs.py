"""The record of past exports: listed (never the key of their codes), and replayed to show
that a run's files come out the same, or what differs."""

from __future__ import annotations

import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, computed_field
from sqlmodel import Session, col, select

from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import DeidentificationMode
from biobank.errors import NotFound, ValidationError
from biobank.models import ExportRun, User
from biobank.services import audit
from biobank.services.export_files import ExportRecipe, WrittenExport, write_export_files


class ReplayResult(BaseModel):
    run_code: str
    matches: bool
    differences: list[str]


class ExportRunRead(BaseModel):
    run_code: str
    created_at: datetime
    created_by: str | None = None
    mode: DeidentificationMode
    uses: list[str]
    formats: list[str]
    as_of: date
    counts: dict[str, int]
    exclusions: dict[str, Any]
    files: dict[str, Any]
    dua_reference: str | None
    reserve_request: str | None
    manifest_sha256: str

    @computed_field  # type: ignore[prop-decorator]  # mypy takes no decorator over a property
    @property
    def completed(self) -> bool:
        """Begun and finished: a run killed or failed part-way keeps its record, no manifest."""
        return bool(self.manifest_sha256)


def find_run(session: Session, run_code: str) -> ExportRun | None:
    """The run of this code, begun or completed, if there is one."""
    return session.exec(select(ExportRun).where(ExportRun.run_code == run_code)).first()


def list_runs(session: Session, *, actor: Actor, limit: int = 200) -> list[ExportRunRead]:
    """The export runs, newest first (never the key of their codes)."""
    require(actor, Permission.export)
    rows = session.execute(
        sa.select(ExportRun, col(User.username))
        .outerjoin(User, col(User.id) == ExportRun.actor_id)
        .order_by(col(ExportRun.created_at).desc(), col(ExportRun.id).desc())
        .limit(limit)
    ).all()
    return [
        ExportRunRead.model_validate(run, from_attributes=True).model_copy(
            update={"created_by": username}
        )
        for run, username in rows
    ]


def replay_export(session: Session, *, actor: Actor, run_code: str) -> ReplayResult:
    """Run an export again as recorded (its query, uses, mode and consent date, its codes) and
    say whether every file comes out the same, and if not, what differs. The one place a past
    consent date selects data: the files are compared and thrown away, never handed out."""
    run = _run_to_replay(session, actor, run_code)
    with tempfile.TemporaryDirectory(prefix="biobank-replay-") as folder:
        again = write_export_files(session, ExportRecipe.recorded(run), Path(folder))
    differences = _differences(run, again)
    audit.record(
        session, actor=actor, action="export.replay", entity="export_run", entity_id=run.id,
        after={"matches": not differences, "differences": differences},
    )  # fmt: skip
    return ReplayResult(run_code=run.run_code, matches=not differences, differences=differences)


def _run_to_replay(session: Session, actor: Actor, run_code: str) -> ExportRun:
    """A completed run the actor may export again (identified runs: admins only)."""
    require(actor, Permission.export)  # before the lookup: a refusal says nothing of runs
    run = find_run(session, run_code.strip())
    if run is None:
        raise NotFound(f"no export run {run_code!r}", field="run", value=run_code)
    if run.mode is DeidentificationMode.identified:
        require(actor, Permission.export_identified)
    if not run.manifest_sha256:
        raise ValidationError(f"{run.run_code} never completed: there is nothing to replay",
                              field="run", value=run_code)  # fmt: skip
    return run


def _differences(run: ExportRun, again: WrittenExport) -> list[str]:
    """What a replay wrote differently from the run's record: files, then counts."""
    differences = []
    for name, before in run.files.items():
        now = next((f for f in again.files if f.name == name), None)
        if now is None:
            differences.append(f"{name}: not written again")
        elif now.sha256 != before["sha256"]:
            differences.append(
                f"{name}: {before['rows']} rows then, {now.rows} now; contents differ"
            )
    counts = again.counts()
    for key, value in run.counts.items():
        if key in counts and counts[key] != value:
            differences.append(f"{key}: {value} then, {counts[key]} now")
    return differences
