"""Writing a checked legacy sheet in bulk, a batch at a time, into the caller's transaction: the
participants, visits and storage units it names that are missing, then its specimens, their
custody events and their audit entries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from biobank.db import insert_many, one_of, prepare_bulk_writing
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.specimen_values import sprec_code_for
from biobank.domain.vocabulary import PositionLabels, SpecimenKind
from biobank.models import Participant, Specimen, SpecimenEvent, StorageUnit, Visit
from biobank.services import audit
from biobank.services.imports.common import (
    ImportReport,
    batches,
    refuse_a_faulty_plan,
    stored_id,
)
from biobank.services.imports.legacy.planning import STORAGE_KINDS, ImportPlan, Unit
from biobank.services.imports.legacy.reading import Tube
from biobank.services.slots import adjust_free_slots
from biobank.services.specimen_ids import allocate_accession_ids
from biobank.services.storage import place_in_tree
from biobank.tabular import unspool


def write_inventory(
    session: Session,
    *,
    actor: Actor,
    plan: ImportPlan,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Write a checked file into the caller's transaction; `progress` is told how many more
    rows were written after each batch."""
    require(actor, Permission.import_data)
    report = plan.report
    writer = _Writer(session, actor, plan)
    imported = 0
    try:
        refuse_a_faulty_plan(report)
        prepare_bulk_writing(session)
        writer.create_participants()
        writer.create_visits()
        writer.create_units()
        for batch in unspool(plan.spool):
            writer.write_tubes(batch)
            imported += len(batch)
            if progress:
                progress(len(batch))
    finally:  # a plan is written once: its temporary files go, whatever happens
        plan.close()
    for unit in plan.units.values():
        if unit.existing is not None and unit.arriving:
            adjust_free_slots(session, stored_id(unit.existing.id), -unit.arriving)
    return report.model_copy(update={"imported": imported})


@lru_cache(maxsize=4096)
def _sprec(specimen_type: str, delay: timedelta | None, temperature: str | None) -> str | None:
    """`sprec_code_for` of what a legacy row tells (cached: types and delays repeat)."""
    start = datetime(2000, 1, 1, tzinfo=UTC)
    return sprec_code_for(
        given=None,
        specimen_type=specimen_type,
        container=None,
        collected_at=start if delay is not None else None,
        processed_at=start + delay if delay is not None else None,
        frozen_at=None,
        precentrifugation_temperature=temperature,
        postcentrifugation_temperature=None,
        centrifugation=None,
        second_centrifugation=None,
        storage=None,
    )


def _default(column: sa.Column[Any]) -> Any:
    default = column.default
    if not isinstance(default, sa.ColumnDefault):
        return None
    return default.arg if default.is_scalar else default.arg(None)  # `utcnow`: the import's time


class _Writer:
    def __init__(self, session: Session, actor: Actor, plan: ImportPlan):
        self.session = session
        self.actor = actor
        self.plan = plan
        self.reason = f"legacy import of {plan.report.file}"
        self.defaults: dict[str, dict[str, Any]] = {}

    def row(self, table: sa.Table, **values: Any) -> dict[str, Any]:
        """Every column but the key: the values given, else the column's default, so an audit
        entry shows the whole row as `audit.snapshot` of an ORM object would."""
        if table.name not in self.defaults:
            self.defaults[table.name] = {
                column.key: _default(column) for column in table.columns if not column.primary_key
            }
        return self.defaults[table.name] | values

    def insert(self, table: sa.Table, rows: list[dict[str, Any]], *key: str) -> list[int]:
        """One bulk insert, then the new ids read back by a unique key (PostgreSQL's COPY
        returns nothing; on SQLite, RETURNING in the rows' order costs a statement per row)."""
        if not rows:
            return []
        insert_many(self.session, table, rows)
        wanted = [tuple(row[k] for k in key) for row in rows]
        found: dict[tuple[Any, ...], int] = {}
        first = table.c[key[0]]
        for chunk in batches(sorted({w[0] for w in wanted})):
            columns = (table.c.id, *(table.c[k] for k in key))
            query = sa.select(*columns).where(one_of(self.session, first, chunk))
            found |= {tuple(r[1:]): r[0] for r in self.session.execute(query)}
        return [found[w] for w in wanted]

    def audit(
        self,
        action: str,
        table: sa.Table,
        rows: Sequence[dict[str, Any]],
        ids: Sequence[int],
        reasons: Sequence[str] = (),
    ) -> None:
        """The audit entries of rows written: each with its own reason, if given, else the
        import's."""
        audit.record_many(
            self.session,
            actor=self.actor,
            entries=(
                {
                    "action": action,
                    "entity": table.name,
                    "entity_id": row_id,
                    "after": row | {"id": row_id},
                    "reason": reason,
                }
                for row, row_id, reason in zip(
                    rows, ids, reasons or [self.reason] * len(ids), strict=True
                )
            ),
        )

    def create_participants(self) -> None:
        table, scratch = Participant.__table__, self.plan.scratch
        for new in scratch.to_create("person"):
            rows = [self.row(table, study_id=self.plan.study.id, code=code) for _, code in new]
            ids = self.insert(table, rows, "code")
            self.audit("participant.add", table, rows, ids)
            scratch.created("person", [rowid for rowid, _ in new], ids)

    def create_visits(self) -> None:
        table, scratch = Visit.__table__, self.plan.scratch
        for new in scratch.to_create("visit"):
            rows = [
                self.row(
                    table,
                    participant_id=participant_id,
                    label=label,
                    visit_date=date.fromisoformat(day),
                )
                for _, _, label, day, participant_id in new
            ]
            ids = self.insert(table, rows, "participant_id", "label")
            self.audit("visit.add", table, rows, ids)
            scratch.created("visit", [rowid for rowid, *_ in new], ids)

    def create_units(self) -> None:
        """Freezers, then their racks, then the racks' boxes, placed in the tree as `storage`
        places units (sort key and path); a box is created with the slots its tubes leave."""
        table = StorageUnit.__table__
        for kind in STORAGE_KINDS:
            units = (u for u in self.plan.units.values() if u.kind == kind and u.existing is None)
            for new in batches(units):
                parents = [self.plan.units[u.parent].stored if u.parent else None for u in new]
                made = [self.unit(u, parent) for u, parent in zip(new, parents, strict=True)]
                ids = self.insert(table, [_values(m) for m in made], "barcode")
                for unit, made_unit, parent, unit_id in zip(new, made, parents, ids, strict=True):
                    unit.id = made_unit.id = unit_id
                    place_in_tree(made_unit, parent)
                    if kind != "box":  # what the next kind is placed in; a box is left
                        unit.created = made_unit
                self.session.execute(
                    sa.update(table)
                    .where(table.c.id == sa.bindparam("unit_id"))
                    .values(sort_key=sa.bindparam("new_sort_key"), path=sa.bindparam("new_path")),
                    [
                        {"unit_id": m.id, "new_sort_key": m.sort_key, "new_path": m.path}
                        for m in made
                    ],
                )
                self.audit("storage.add", table, [_values(m) for m in made], ids)

    def unit(self, unit: Unit, parent: StorageUnit | None) -> StorageUnit:
        rows, cols, labels = unit.grid or (None, None, PositionLabels.letter_number)
        return StorageUnit(
            **self.row(
                StorageUnit.__table__,
                parent_id=parent.id if parent else None,
                kind=unit.kind,
                name=unit.name,
                barcode=unit.barcode,
                grid_rows=rows,
                grid_cols=cols,
                position_labels=labels,
                holds_specimens=unit.kind == "box",
                free_slots=rows * cols - unit.arriving if rows and cols else None,
            )
        )

    def write_tubes(self, batch: list[tuple[int, Tube, tuple[int, int]]]) -> None:
        """Specimens, their `accessioned` events and audit entries."""
        table = Specimen.__table__
        accession_ids = allocate_accession_ids(
            self.session, prefix=self.plan.study.id_prefix, count=len(batch)
        )
        people, visits = self.plan.scratch.ids({tube.subject for _, tube, _ in batch})
        specimens = [
            self.specimen(tube, place, accession_id, people, visits)
            for (_, tube, place), accession_id in zip(batch, accession_ids, strict=True)
        ]
        ids = self.insert(table, specimens, "accession_id")
        reasons = [f"{self.reason}, row {row}" for row, _, _ in batch]
        events = SpecimenEvent.__table__
        insert_many(
            self.session,
            events,
            [
                self.row(
                    events,
                    specimen_id=specimen_id,
                    event_type="accessioned",
                    actor_id=self.actor.user_id,
                    workstation=self.actor.workstation,
                    to_box_id=specimen["box_id"],
                    to_row=specimen["position_row"],
                    to_col=specimen["position_col"],
                    quantity_change=specimen["quantity"],
                    status_after=specimen["status"].value,
                    reason=reason,
                )
                for specimen, specimen_id, reason in zip(specimens, ids, reasons, strict=True)
            ],
        )
        self.audit("specimen.accessioned", table, specimens, ids, reasons)

    def specimen(
        self,
        tube: Tube,
        place: tuple[int, int],
        accession_id: str,
        people: dict[str, int],
        visits: dict[tuple[str, str], int],
    ) -> dict[str, Any]:
        plan = self.plan
        delay = (
            tube.processed_at - tube.collected_at
            if tube.collected_at and tube.processed_at
            else None
        )
        temperature = plan.sheet.precentrifugation_temperature
        return self.row(
            Specimen.__table__,
            accession_id=accession_id,
            legacy_id=tube.legacy_id,
            participant_id=people[tube.subject],
            visit_id=visits[tube.subject, tube.visit] if tube.visit else None,
            kind=SpecimenKind.primary,
            specimen_type=tube.specimen_type,
            sprec_code=_sprec(tube.specimen_type, delay, temperature),
            collected_at=tube.collected_at,
            processed_at=tube.processed_at,
            precentrifugation_temperature=temperature,
            initial_quantity=tube.quantity,
            quantity=tube.quantity,
            unit=plan.unit,
            freeze_thaw_count=tube.thaws,
            box_id=plan.units[tube.box.upper()].id,
            position_row=place[0],
            position_col=place[1],
            notes=tube.notes,
        )


def _values(unit: StorageUnit) -> dict[str, Any]:
    return {k: v for k, v in audit.snapshot(unit).items() if k != "id"}
