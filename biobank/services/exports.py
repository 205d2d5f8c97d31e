"""Linked phenotype exports for investigators: a cohort, the uses its consent must allow,
a de-identification mode, files in the formats asked for, and a manifest to audit and replay.

- `safe_harbor` (the default): participant and specimen codes made for this export alone
  (keyed hashes of internal ids under a random key kept with the run, so a replay gives the
  same codes and two exports never do), dates reduced to the year, ages over 89 as "90+", no
  free text and nothing from the identity table.
- `limited`: dates kept; needs a registered data use agreement covering the PI, the study and
  the uses (`services.agreements`).
- `identified`: admins only; real participant codes, accession IDs and the identity columns.

Every new export passes one guard (`_check`: permission, consent as of today, the agreement,
a saved query narrowed, never ignored) and is recorded as begun before anything is written.
The cohort is selected once, de-identified rows are spooled to a temporary file (flat memory)
and each format (`export.formats`) is written from it into a hidden folder, with the manifest
last; the folder is renamed into place whole once the completed run is committed. A replay
(`replay_export`) writes the same files again as recorded, into a folder thrown away.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, Field, computed_field
from sqlmodel import Session, select

from biobank import __version__
from biobank.db import after_commit, after_rollback, flush, one_of
from biobank.domain.cohort import CohortQuery, load_query
from biobank.domain.consent import statement_status
from biobank.domain.permissions import Actor, Permission, require
from biobank.errors import NotFound, ValidationError
from biobank.export import tabular
from biobank.export.columns import Column
from biobank.export.files import write_atomically
from biobank.export.formats import DEFAULT_FORMAT, FORMATS, known
from biobank.export.names import phenotype_column_names
from biobank.models import (
    ConsentStatement,
    DeidentificationMode,
    ExportRun,
    ExportRunSpecimen,
    Participant,
    ParticipantIdentity,
    PhenotypeScope,
    PhenotypeType,
    PhenotypeVariable,
    Specimen,
    User,
)
from biobank.services import audit
from biobank.services.agreements import covering_agreement
from biobank.services.cohorts import (
    Selected,
    Tally,
    count_candidates,
    resolve_query,
    select_cohort,
)
from biobank.services.consent_checks import consent_acts, judged_today, known_uses
from biobank.services.phenotypes import DEFAULT_WINDOW_DAYS
from biobank.services.reservations import ReservationSummary, reserve_specimens
from biobank.tabular import chunks, new_spool, spool_batch, unspool

FormatName = Annotated[str, AfterValidator(known)]
BATCH = 1000
PARTICIPANT_FILE = "participants.csv"  # with `per_participant`: one row per participant
OLDEST_SHOWN_AGE = 89  # Safe Harbor: older ages are one group, "90+"


class ExportRequest(BaseModel):
    """What a PI asks for. `saved` names a saved query, which `query`'s filters (those set)
    narrow; `as_of`, when given, must be today (consent is judged as of the day it runs)."""

    query: CohortQuery | None = None
    saved: str | None = None
    uses: list[str]
    mode: DeidentificationMode = DeidentificationMode.safe_harbor
    formats: list[FormatName] = Field(default_factory=lambda: [DEFAULT_FORMAT])
    per_participant: bool = False
    dua_reference: str | None = None
    reserve_request: str | None = None
    as_of: date | None = None
    window_days: int = Field(default=DEFAULT_WINDOW_DAYS, ge=0)


class ExportFile(BaseModel):
    name: str
    rows: int
    sha256: str
    bytes: int


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


class ReplayResult(BaseModel):
    run_code: str
    matches: bool
    differences: list[str]


# --- Columns ----------------------------------------------------------------------------------


# MIABIS names for coded values (the MIABIS file writes the label; the others the code).
MIABIS_SEX = (
    ("female", "Female"), ("male", "Male"), ("unknown", "Unknown"),
    ("undifferentiated", "Undifferentiated"),
)  # fmt: skip
MIABIS_MATERIAL = (
    ("SER", "Serum"), ("PL1", "Plasma"), ("PL2", "Plasma"), ("BLD", "Whole blood"),
    ("URN", "Urine"), ("SAL", "Saliva"), ("DNA", "DNA"), ("RNA", "RNA"),
    ("BUF", "Buffy coat"), ("CEL", "Peripheral blood cells"),
)  # fmt: skip


def _fixed_columns(mode: DeidentificationMode) -> list[Column]:
    dated = "year" if mode is DeidentificationMode.safe_harbor else "date"
    columns = [
        Column("participant_code", "Participant (code for this export)", role="participant",
               miabis="Donor ID"),
        Column("sex", "Sex", role="participant", miabis="Sex", choices=MIABIS_SEX),
        Column("specimen_code", "Specimen (code for this export)", role="specimen",
               miabis="Sample ID"),
        Column("parent_specimen_code", "Parent specimen", role="specimen"),
        Column("specimen_kind", "Primary, aliquot, derivative or pool", role="specimen"),
        Column("specimen_type", "SPREC specimen type", role="specimen", miabis="Material type",
               choices=MIABIS_MATERIAL),
        Column("container_type", "SPREC primary container", role="specimen"),
        Column("sprec_code", "SPREC code", role="specimen"),
        Column("collected", "Collected" + (" (year)" if dated == "year" else ""), kind=dated,
               role="specimen", miabis="Sample collection date"),
        Column("age_at_collection", "Age at collection (years; 90+ above 89)", role="specimen",
               miabis="Age at sampling"),
        Column("quantity", "Quantity left", kind="decimal", role="specimen"),
        Column("unit", "Unit of quantity", role="specimen"),
        Column("freeze_thaw_count", "Freeze-thaw cycles", kind="integer", role="specimen"),
    ]  # fmt: skip
    if mode is DeidentificationMode.identified:
        columns += [
            Column("mrn", "Medical record number", role="participant"),
            Column("family_name", "Family name", role="participant"),
            Column("given_name", "Given name", role="participant"),
            Column("date_of_birth", "Date of birth", kind="date", role="participant"),
        ]
    return columns


SCOPE_NOTE = {
    PhenotypeScope.participant: "per participant",
    PhenotypeScope.visit: "at collection (its visit, or the latest within the window)",
}
KINDS = {
    PhenotypeType.integer: "integer", PhenotypeType.decimal: "decimal",
    PhenotypeType.boolean: "boolean", PhenotypeType.choice: "string",
    PhenotypeType.multi_choice: "string", PhenotypeType.date: "date", PhenotypeType.text: "string",
}  # fmt: skip


def _phenotype_columns(
    variables: list[PhenotypeVariable], mode: DeidentificationMode
) -> list[tuple[str, Column]]:
    """One column per dictionary variable, (variable name, column): named from the variable,
    in a namespace of its own (`export.names`: a variable called `quantity` is the column
    `var_quantity`, so no name a REDCap project chose can block an export); free text only
    when identified."""
    named = phenotype_column_names([v.name for v in variables])
    columns = []
    for v in variables:
        if v.value_type is PhenotypeType.text and mode is not DeidentificationMode.identified:
            continue
        kind = KINDS[v.value_type]
        if kind == "date" and mode is DeidentificationMode.safe_harbor:
            kind = "year"
        source = None if named[v.name] == v.name else f"the variable {v.name}"
        description = "; ".join(filter(None, (SCOPE_NOTE[v.scope], v.description, source)))
        columns.append((v.name, Column(
            named[v.name], v.label, kind=kind, role="phenotype", unit=v.unit,
            code_system=v.code_system, code=v.code,
            choices=tuple((c["code"], c["label"]) for c in v.choices or ()),
            description=description,
        )))  # fmt: skip
    return columns


# --- Codes and de-identification ----------------------------------------------------------------


def export_code(key: str, prefix: str, internal_id: int) -> str:
    """A code for one export: a keyed hash of the internal id, so it says nothing about the
    person or the tube (HIPAA 164.514(c)) and only the biobank, holding the key, links it."""
    return ExportCodes(key).code(prefix, internal_id)


# Base32 (RFC 4648) ten bits at a time: a code's 40 bits are four of these pairs.
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_BASE32_PAIRS = tuple(first + second for first in _BASE32 for second in _BASE32)


class ExportCodes:
    """`export_code` for one export's key, made once (an export asks for a code per row)."""

    def __init__(self, key: str) -> None:
        self.keyed = hmac.new(bytes.fromhex(key), digestmod="sha256")  # copied, never keyed again

    def code(self, prefix: str, internal_id: int) -> str:
        """The prefix and the first 40 bits of the MAC in Base32, as `base64.b32encode`
        writes them (tested), a third of its time: an export makes one code per row."""
        mac = self.keyed.copy()
        mac.update(f"{prefix}{internal_id}".encode())
        bits = int.from_bytes(mac.digest()[:5])
        pairs = _BASE32_PAIRS
        return (
            f"{prefix}-{pairs[bits >> 30]}{pairs[bits >> 20 & 1023]}"
            f"{pairs[bits >> 10 & 1023]}{pairs[bits & 1023]}"
        )


def _year(value: Any) -> Any:
    return value.year if isinstance(value, date) else value


def _age(age: int | None, mode: DeidentificationMode) -> str | None:
    if age is None:
        return None
    if mode is DeidentificationMode.safe_harbor and age > OLDEST_SHOWN_AGE:
        return "90+"
    return str(age)


def _rows(
    session: Session,
    selected: Iterator[Selected],
    *,
    key: str,
    mode: DeidentificationMode,
    phenotype_columns: list[tuple[str, Column]],
    on_batch: Callable[[list[Selected]], None],
) -> Iterator[tuple]:
    """Each selected specimen as an export row, de-identified for the mode, its values in the
    order of `_fixed_columns(mode)` and the phenotype columns."""
    safe = mode is DeidentificationMode.safe_harbor
    identified = mode is DeidentificationMode.identified
    codes = ExportCodes(key)
    names = [name for name, _ in phenotype_columns]  # the values are the variables'
    to_year = [at for at, (_, c) in enumerate(phenotype_columns) if c.kind == "year"]
    listed = [at for at, (_, c) in enumerate(phenotype_columns) if c.kind == "string"]
    participant = (None, None)  # rows come participant by participant: (id, code)
    for batch in chunks(selected, BATCH):
        on_batch(batch)
        # specimens of one collection share their values (see `values_at_collection`): their
        # cells are made once a batch, while the batch keeps those values alive
        shown: dict[int, tuple] = {}
        people, parents = {}, {}
        if identified:
            people = _identities(session, {s.participant_id for s in batch})
            parents = _accession_ids(session, {s.specimen.parent_id for s in batch} - {None})
        for s in batch:
            r = s.specimen
            if participant[0] != s.participant_id:
                participant = (s.participant_id, r.participant_code if identified
                               else codes.code("P", s.participant_id))  # fmt: skip
            row = (
                participant[1],
                r.sex,
                r.accession_id if identified else codes.code("S", r.id),
                None if r.parent_id is None
                else parents[r.parent_id] if identified else codes.code("S", r.parent_id),
                r.kind,
                r.specimen_type,
                r.container_type,
                r.sprec_code,
                _year(s.collected_on) if safe else s.collected_on,
                _age(s.age_at_collection, mode),
                r.quantity,
                r.unit,
                r.freeze_thaw_count,
            )  # fmt: skip
            if identified:
                row += people.get(s.participant_id, IDENTITY_BLANK)
            cells = shown.get(id(s.phenotypes))
            if cells is None:
                cells = shown[id(s.phenotypes)] = _phenotype_cells(
                    s.phenotypes, names, to_year, listed
                )
            yield row + cells


def _phenotype_cells(
    values: dict[str, Any], names: list[str], to_year: list[int], listed: list[int]
) -> tuple:
    """A specimen's phenotype columns (`names`): years for dates at `to_year`, a multi-choice
    value's codes joined by "|" at `listed`."""
    cells = list(map(values.get, names))
    for at in to_year:
        cells[at] = _year(cells[at])
    for at in listed:
        if isinstance(cells[at], list):
            cells[at] = "|".join(cells[at])
    return tuple(cells)


IDENTITY_FIELDS = ("mrn", "family_name", "given_name", "date_of_birth")
IDENTITY_BLANK = (None,) * len(IDENTITY_FIELDS)


def _identities(session: Session, participant_ids: set[int]) -> dict[int, tuple]:
    """The identity columns of these participants (identified exports only)."""
    fields = [getattr(ParticipantIdentity, f) for f in IDENTITY_FIELDS]
    query = sa.select(ParticipantIdentity.participant_id, *fields).where(
        one_of(session, ParticipantIdentity.participant_id, participant_ids)
    )
    return {pid: tuple(values) for pid, *values in session.execute(query)}


def _accession_ids(session: Session, specimen_ids: set[int]) -> dict[int, str]:
    """The accession IDs of these specimens (the parents an identified export names)."""
    query = sa.select(Specimen.id, Specimen.accession_id).where(
        one_of(session, Specimen.id, specimen_ids)
    )
    return dict(session.execute(query).all())


# --- Running an export --------------------------------------------------------------------------


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


def _consents(
    session: Session, participant_ids: set[int], key: str, mode: DeidentificationMode, as_of: date
) -> dict[str, dict[str, str]]:
    """Each exported participant's consent per statement, for the FHIR Consent resources."""
    statements = session.exec(select(ConsentStatement.code)).all()
    found: dict[str, dict[str, str]] = {}
    for chunk in chunks(sorted(participant_ids), BATCH):
        answers, withdrawals = consent_acts(session, chunk)
        codes: dict[int, str] = {}
        if mode is DeidentificationMode.identified:
            query = sa.select(Participant.id, Participant.code).where(
                one_of(session, Participant.id, chunk)
            )
            codes = dict(session.execute(query).all())
        for pid in chunk:
            code = codes.get(pid) or export_code(key, "P", pid)
            found[code] = {
                s: statement_status(s, answers[pid], withdrawals[pid], as_of).state.value
                for s in statements
            }
    return found


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


def begin_export(session: Session, *, actor: Actor, request: ExportRequest, directory: Path) -> str:
    """Record a new export as started, before anything is written: the guard is passed and
    the run (who, query, uses, consent date, mode) is on record once the caller commits, so
    an export killed part-way is still listed (`export list`: incomplete) and audited. Returns
    its run code, for `run_export`."""
    today = date.today()
    uses, query, asked = _check(session, actor, request, today)
    run = ExportRun(
        run_code=_new_run_code(), actor_id=actor.user_id, query=query.model_dump(mode="json"),
        uses=uses, mode=request.mode, formats=list(dict.fromkeys(request.formats)),
        dua_reference=request.dua_reference if request.mode is DeidentificationMode.limited
        else None,
        reserve_request=request.reserve_request, software_version=__version__, counts={},
        exclusions={}, files={}, manifest_sha256="", code_key=secrets.token_hex(16),
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
               "formats": run.formats, "folder": str(target.resolve())},
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
) -> ExportResult:
    """Select as of today, de-identify and write the files, record what the run included
    (and, with `reserve_request`, reserve it for that request), then the manifest. `started`
    is the run `begin_export` recorded (the front ends commit it first); without it the run
    is begun here, in the caller's transaction. The folder appears once this is committed."""
    run_code = started or begin_export(session, actor=actor, request=request, directory=directory)
    run = _run_to_finish(session, actor, run_code)
    today = date.today()
    uses, query, asked = _check(session, actor, request, today)  # again: it is today's guard
    if query.model_dump(mode="json") != run.query or uses != run.uses or run.as_of != today:
        raise ValidationError(f"{run_code} was begun for another request or day",
                              field="run", value=run_code)  # fmt: skip
    target = Path(directory) / run_code
    staging = _staged(session, target)
    recipe = _Recipe(
        query=query, uses=uses, as_of=today, mode=request.mode, key=run.code_key,
        formats=request.formats, per_participant=request.per_participant,
        window_days=request.window_days,
    )  # fmt: skip
    written = _write_files(
        session, recipe, staging, progress=progress, on_batch=_recorder(session, run.id)
    )
    reservation = _reserve(session, actor=actor, request=request, run=run, uses=uses)
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


def _find_run(session: Session, run_code: str) -> ExportRun | None:
    return session.exec(select(ExportRun).where(ExportRun.run_code == run_code)).first()


def _run_to_finish(session: Session, actor: Actor, run_code: str) -> ExportRun:
    """The run `begin_export` recorded for this actor, not yet completed."""
    run = _find_run(session, run_code)
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
        chosen = sa.select(sa.literal(run_id), Specimen.id).where(
            one_of(session, Specimen.id, (s.specimen_id for s in batch))
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
        .order_by(ExportRunSpecimen.specimen_id)
        .limit(BATCH)
    ).all():
        after = ids[-1]
        yield from ids


def _reserve(
    session: Session, *, actor: Actor, request: ExportRequest, run: ExportRun, uses: list[str]
) -> ReservationSummary | None:
    """With `reserve_request`, the run's specimens reserved for that request."""
    if not request.reserve_request:
        return None
    return reserve_specimens(
        session, actor=actor, specimen_ids=_exported(session, run.id),
        request=request.reserve_request, uses=uses, export_run_id=run.id,
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
    written: _Written,
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

    def write_manifest(file) -> int:
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


# --- Writing the files (a new run and a replay) -------------------------------------------------


@dataclass(frozen=True)
class _Recipe:
    """What selects a run's specimens and writes its files: a new run's from its request, a
    replay's as the run recorded it."""

    query: CohortQuery
    uses: list[str]
    as_of: date
    mode: DeidentificationMode
    key: str  # of the run's codes
    formats: list[str]
    per_participant: bool
    window_days: int
    reserved_by_run: int | None = None  # a replay of a run that reserved what it exported

    @classmethod
    def recorded(cls, run: ExportRun) -> _Recipe:
        return cls(
            query=load_query(run.query), uses=run.uses, as_of=run.as_of, mode=run.mode,
            key=run.code_key, formats=run.formats, per_participant=PARTICIPANT_FILE in run.files,
            window_days=run.window_days, reserved_by_run=run.id if run.reserve_request else None,
        )  # fmt: skip


@dataclass
class _Written:
    files: list[ExportFile]
    tally: Tally

    def counts(self) -> dict[str, int]:
        return {
            "specimens": self.tally.specimens,
            "participants": self.tally.participants,
            "matched_before_consent": self.tally.matched_before_consent,
            "excluded_by_consent": sum(self.tally.excluded_specimens.values()),
        }


def _write_files(
    session: Session,
    recipe: _Recipe,
    target: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    on_batch: Callable[[list[Selected]], None] | None = None,
) -> _Written:
    """Select the cohort, de-identify it and write every file into `target` (the dictionary
    first): what a new export and a replay share."""
    variables = _variables(session)
    phenotype_columns = _phenotype_columns(variables, recipe.mode)
    columns = _fixed_columns(recipe.mode) + [column for _, column in phenotype_columns]
    formats = [FORMATS[name] for name in dict.fromkeys(recipe.formats)]
    consented = any(f.needs_consents for f in formats)
    tally = Tally()
    participants: set[int] = set()  # for the consents only: the rest streams

    def each_batch(batch: list[Selected]) -> None:
        if consented:
            participants.update(s.participant_id for s in batch)
        if on_batch is not None:
            on_batch(batch)

    rows = _rows(
        session, _selected(session, recipe, tally, progress), key=recipe.key, mode=recipe.mode,
        phenotype_columns=phenotype_columns, on_batch=each_batch,
    )  # fmt: skip
    # One file read once streams straight from the selection; more passes (several files,
    # the per-participant file, the consents of every participant first) read a spool.
    spool = None
    if len(formats) > 1 or consented or recipe.per_participant:
        spool = new_spool()
        for batch in chunks(rows, BATCH):
            spool_batch(spool, batch)
    written = [tabular.write_dictionary(target / "dictionary.csv", columns)]
    consents = (
        _consents(session, participants, recipe.key, recipe.mode, recipe.as_of)
        if consented else {}
    )  # fmt: skip
    for fmt in formats:
        each_pass = rows if spool is None else _read_spool(spool)
        written.append(fmt.write(target / fmt.file_name, columns, each_pass, consents))
    if recipe.per_participant:
        per_person = _per_participant_columns(variables, phenotype_columns)
        written.append(_participant_file(target, spool, columns, per_person))
    if spool is not None:
        spool.close()
    files = [
        ExportFile(name=w.path.name, rows=w.rows, sha256=w.sha256, bytes=w.bytes) for w in written
    ]
    return _Written(files=files, tally=tally)


def _variables(session: Session) -> list[PhenotypeVariable]:
    """The dictionary's variables in use, in the order they were added."""
    return list(
        session.exec(
            select(PhenotypeVariable)
            .where(PhenotypeVariable.retired_at.is_(None))
            .order_by(PhenotypeVariable.id)
        )
    )


def _selected(
    session: Session,
    recipe: _Recipe,
    tally: Tally,
    progress: Callable[[int, int], None] | None,
) -> Iterator[Selected]:
    # a progress bar's length costs a count of the candidates: only counted for a bar
    total = count_candidates(session, recipe.query, recipe.reserved_by_run) if progress else 0
    return select_cohort(
        session, query=recipe.query, uses=recipe.uses, as_of=recipe.as_of,
        window_days=recipe.window_days, tally=tally, reserved_by_run=recipe.reserved_by_run,
        progress=(lambda n: progress(n, total)) if progress else None,
    )  # fmt: skip


def _new_run_code() -> str:
    return f"EX-{date.today():%Y%m%d}-{secrets.token_hex(3).upper()}"


def _read_spool(spool) -> Iterator[tuple]:
    for batch in unspool(spool, close=False):
        yield from batch


def _per_participant_columns(
    variables: list[PhenotypeVariable], phenotype_columns: list[tuple[str, Column]]
) -> set[str]:
    """The phenotype columns with one value per participant (the per-participant file's)."""
    scopes = {v.name: v.scope for v in variables}
    return {c.name for name, c in phenotype_columns if scopes[name] is PhenotypeScope.participant}


def _participant_file(target: Path, spool, columns: list[Column], per_participant: set[str]):
    """One row per participant: participant-level columns and how many specimens."""
    places = [at for at, c in enumerate(columns)
              if c.role == "participant" or c.name in per_participant]  # fmt: skip
    code_at = next(at for at, c in enumerate(columns) if c.name == "participant_code")
    count = Column("specimens", "Specimens exported", kind="integer", role="participant")

    def people() -> Iterator[tuple]:
        current: list[Any] | None = None  # the participant's values, then its count
        for row in _read_spool(spool):
            if current is not None and current[0] == row[code_at]:
                current[-1] += 1
                continue
            if current is not None:
                yield tuple(current[1:])
            current = [row[code_at], *(row[at] for at in places), 1]
        if current is not None:
            yield tuple(current[1:])

    chosen = [columns[at] for at in places]
    return tabular.write_csv(target / PARTICIPANT_FILE, [*chosen, count], people())


# --- Replaying a run ----------------------------------------------------------------------------


def replay_export(session: Session, *, actor: Actor, run_code: str) -> ReplayResult:
    """Run an export again as recorded (its query, uses, mode and consent date, its codes) and
    say whether every file comes out the same, and if not, what differs. The one place a past
    consent date selects data: the files are compared and thrown away, never handed out."""
    run = _run_to_replay(session, actor, run_code)
    with tempfile.TemporaryDirectory(prefix="biobank-replay-") as folder:
        again = _write_files(session, _Recipe.recorded(run), Path(folder))
    differences = _differences(run, again)
    audit.record(
        session, actor=actor, action="export.replay", entity="export_run", entity_id=run.id,
        after={"matches": not differences, "differences": differences},
    )  # fmt: skip
    return ReplayResult(run_code=run.run_code, matches=not differences, differences=differences)


def _run_to_replay(session: Session, actor: Actor, run_code: str) -> ExportRun:
    """A completed run the actor may export again (identified runs: admins only)."""
    require(actor, Permission.export)  # before the lookup: a refusal says nothing of runs
    run = _find_run(session, run_code.strip())
    if run is None:
        raise NotFound(f"no export run {run_code!r}", field="run", value=run_code)
    if run.mode is DeidentificationMode.identified:
        require(actor, Permission.export_identified)
    if not run.manifest_sha256:
        raise ValidationError(f"{run.run_code} never completed: there is nothing to replay",
                              field="run", value=run_code)  # fmt: skip
    return run


def _differences(run: ExportRun, again: _Written) -> list[str]:
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

    @computed_field
    @property
    def completed(self) -> bool:
        """Begun and finished: a run killed or failed part-way keeps its record, no manifest."""
        return bool(self.manifest_sha256)


def list_runs(session: Session, *, actor: Actor, limit: int = 200) -> list[ExportRunRead]:
    """The export runs, newest first (never the key of their codes)."""
    require(actor, Permission.export)
    rows = session.execute(
        sa.select(ExportRun, User.username)
        .outerjoin(User, User.id == ExportRun.actor_id)
        .order_by(ExportRun.created_at.desc(), ExportRun.id.desc())
        .limit(limit)
    ).all()
    return [
        ExportRunRead.model_validate(run, from_attributes=True).model_copy(
            update={"created_by": username}
        )
        for run, username in rows
    ]
