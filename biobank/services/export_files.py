"""Writing an export's files: the cohort selected once, de-identified
(`services.deidentification`) and written in each format asked for, after the data dictionary
and, if asked, with one row per participant. What a new run (`services.exports`) and a replay
(`services.export_runs`) share: both write from an `ExportRecipe`.

De-identified rows are spooled to a temporary file when they are read more than once, so
memory stays flat however large the cohort.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from biobank.domain.cohort import CohortQuery, load_query
from biobank.domain.vocabulary import DeidentificationMode, PhenotypeScope
from biobank.export import tabular
from biobank.export.columns import Column, Kind
from biobank.export.files import Written
from biobank.export.formats import FORMATS
from biobank.export.loaders import write_loaders
from biobank.export.long import LONG_NAMES, VALUES_STEM, long_shape
from biobank.export.shapes import Shape
from biobank.models import ExportRun, PhenotypeVariable
from biobank.services.cohorts import Selected, Tally, count_candidates, select_cohort
from biobank.services.deidentification import (
    BATCH,
    deidentified_rows,
    fixed_columns,
    variable_columns,
    with_observations,
)
from biobank.services.fhir_records import ParticipantRecords
from biobank.tabular import chunks, new_spool, spool_batch, unspool

PARTICIPANT_FILE = "participants.csv"  # with `per_participant`: one row per participant
VALUE_LABELS_FILE = "value_labels.csv"  # with a table format: the codes of coded columns
TABLE_STEMS = ("specimens", VALUES_STEM)  # what the loading scripts read


class ExportFile(BaseModel):
    name: str
    rows: int
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ExportRecipe:
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
    shape: Shape = Shape.wide

    @classmethod
    def recorded(cls, run: ExportRun) -> ExportRecipe:
        """A run's recipe; its shape is what its files say (a long run wrote a values table)."""
        long = any(Path(name).stem == VALUES_STEM for name in run.files)
        return cls(
            query=load_query(run.query), uses=run.uses, as_of=run.as_of, mode=run.mode,
            key=run.code_key, formats=run.formats, per_participant=PARTICIPANT_FILE in run.files,
            window_days=run.window_days, reserved_by_run=run.id if run.reserve_request else None,
            shape=Shape.long if long else Shape.wide,
        )  # fmt: skip


@dataclass
class WrittenExport:
    files: list[ExportFile]
    tally: Tally

    def counts(self) -> dict[str, int]:
        return {
            "specimens": self.tally.specimens,
            "participants": self.tally.participants,
            "matched_before_consent": self.tally.matched_before_consent,
            "excluded_by_consent": sum(self.tally.excluded_specimens.values()),
        }


def write_export_files(
    session: Session,
    recipe: ExportRecipe,
    target: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    on_batch: Callable[[list[Selected]], None] | None = None,
) -> WrittenExport:
    """Select the cohort, de-identify it and write every file into `target` (the dictionary
    and the value labels first, the loading scripts last): what a new export and a replay
    share. A long shape writes each table format's two tables (`export.long`); the others
    take the wide rows as they are."""
    variables = _variables(session)
    phenotype_columns = variable_columns(variables, recipe.mode)
    columns = fixed_columns(recipe.mode) + with_observations(phenotype_columns, recipe.mode)
    described = columns
    long = None
    if recipe.shape is Shape.long:
        dated: Kind = "year" if recipe.mode is DeidentificationMode.safe_harbor else "date"
        long = long_shape(columns, dated)
        own = [c for c in long.value_columns if c.name in LONG_NAMES]  # the codes: above
        described = [*long.specimen_columns, *(c for _, c in phenotype_columns), *own]
    formats = [FORMATS[name] for name in dict.fromkeys(recipe.formats)]
    tables = any(f.table is not None for f in formats)
    consented = any(f.needs_records for f in formats)
    tally = Tally()
    participants: set[int] = set()  # for the FHIR records only: the rest streams

    def each_batch(batch: list[Selected]) -> None:
        if consented:
            participants.update(s.participant_id for s in batch)
        if on_batch is not None:
            on_batch(batch)

    rows = deidentified_rows(
        session, _selected(session, recipe, tally, progress), key=recipe.key, mode=recipe.mode,
        phenotype_columns=phenotype_columns, on_batch=each_batch,
    )  # fmt: skip
    # One format read once streams straight from the selection (FHIR too: it reads each
    # batch's participants' records as it goes); more passes (several formats, the
    # per-participant file, a long shape's two tables) read a spool.
    spool = None
    if len(formats) > 1 or recipe.per_participant or long is not None:
        spool = new_spool()
        for batch in chunks(rows, BATCH):
            spool_batch(spool, batch)
    written = [tabular.write_dictionary(target / "dictionary.csv", described)]
    if tables:
        written.append(tabular.write_value_labels(target / VALUE_LABELS_FILE, described))
    records = ParticipantRecords(
        session, participants, key=recipe.key, mode=recipe.mode, as_of=recipe.as_of,
        variables=variables,
    ) if consented else None  # fmt: skip
    for fmt in formats:
        if long is not None and fmt.table is not None:
            assert spool is not None  # two tables: two passes
            specimens = fmt.files[0]
            values = VALUES_STEM + Path(specimens).suffix
            written += [
                fmt.table(target / specimens, long.specimen_columns,
                          long.specimens(_read_spool(spool))),
                fmt.table(target / values, long.value_columns, long.values(_read_spool(spool))),
            ]  # fmt: skip
            continue
        each_pass = rows if spool is None else _read_spool(spool)
        written.extend(fmt.write(target, columns, each_pass, records))
    if recipe.per_participant:
        assert spool is not None  # the per-participant file is one more pass: spooled
        per_person = _per_participant_columns(variables, phenotype_columns)
        written.append(_participant_file(target, spool, columns, per_person))
    if spool is not None:
        spool.close()
    loadable = [
        w.path.name
        for w in written
        if w.path.stem in TABLE_STEMS and w.path.suffix in (".csv", ".parquet")
    ]
    if loadable:
        written += write_loaders(target, loadable)
    files = [
        ExportFile(name=w.path.name, rows=w.rows, sha256=w.sha256, bytes=w.bytes) for w in written
    ]
    return WrittenExport(files=files, tally=tally)


def _variables(session: Session) -> list[PhenotypeVariable]:
    """The dictionary's variables in use, in the order they were added."""
    return list(
        session.exec(
            select(PhenotypeVariable)
            .where(col(PhenotypeVariable.retired_at).is_(None))
            .order_by(col(PhenotypeVariable.id))
        )
    )


def _selected(
    session: Session,
    recipe: ExportRecipe,
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


def _read_spool(spool: IO[bytes]) -> Iterator[tuple[Any, ...]]:
    for batch in unspool(spool, close=False):
        yield from batch


def _per_participant_columns(
    variables: list[PhenotypeVariable], phenotype_columns: list[tuple[str, Column]]
) -> set[str]:
    """The phenotype columns with one value per participant (the per-participant file's)."""
    scopes = {v.name: v.scope for v in variables}
    return {c.name for name, c in phenotype_columns if scopes[name] is PhenotypeScope.participant}


def _participant_file(
    target: Path, spool: IO[bytes], columns: list[Column], per_participant: set[str]
) -> Written:
    """One row per participant: participant-level columns and how many specimens."""
    places = [at for at, c in enumerate(columns)
              if c.role == "participant" or c.name in per_participant]  # fmt: skip
    code_at = next(at for at, c in enumerate(columns) if c.name == "participant_code")
    count = Column("specimens", "Specimens exported", kind="integer", role="participant")

    def people() -> Iterator[tuple[Any, ...]]:
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
