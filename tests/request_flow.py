"""A lupus cohort whose serum is placed in two boxes, and a request of it approved: what the
picking and shipping tests start from."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa
from inventory import one_shelf_freezer

from biobank.bootstrap import bootstrap
from biobank.db import make_engine, uow
from biobank.domain.cohort import CohortQuery
from biobank.domain.vocabulary import Role
from biobank.services import (
    custody,
    request_picks,
    request_review,
    requests,
    shipments,
    storage,
    studies,
)
from biobank.services.identity import actor_for
from biobank.services.requests import LineWant, RequestDraft

USES = ["FUTURE_RESEARCH"]


def tubes_of(engine) -> dict[str, tuple[str, str]]:
    """Accession → (participant, visit)."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT s.accession_id, p.code, v.label FROM specimen s "
                "JOIN participant p ON p.id = s.participant_id JOIN visit v ON v.id = s.visit_id"
            )
        ).all()
    return {a: (p, v) for a, p, v in rows}


def place_in_boxes(cohort_db, actors) -> list[str]:
    """The cohort's tubes in two boxes, placed against accession order: box 2 first."""
    admin = actors[Role.admin]
    tubes = sorted(tubes_of(cohort_db), reverse=True)
    with uow(cohort_db) as session:
        freezer = one_shelf_freezer(session, admin, "-80 #1", racks=1, boxes_per_rack=2)
        barcodes = [
            n.unit.barcode
            for n in storage.storage_tree(session, actor=admin, root=freezer.barcode)
            if n.unit.holds_specimens
        ]
        for number, accession in enumerate(tubes):
            custody.move(session, actor=admin, accession=accession,
                         destination=barcodes[number % 2])  # fmt: skip
    return barcodes


def approved(engine, actors, *lines: LineWant, relabel: bool = False) -> str:
    pi, admin = actors[Role.pi], actors[Role.admin]
    draft = RequestDraft(
        title="Serum", uses=USES, project="P", irb_reference="IRB-1",
        irb_expires_on=date.today() + timedelta(days=90), destination_institution="Lab",
        destination_address="1 Way", destination_contact="Dr A",
        cohort=CohortQuery(study="SLE"), lines=list(lines) or [LineWant(specimen_type="SER")],
        relabel=relabel,
    )  # fmt: skip
    with uow(engine) as session:
        code = requests.create_request(session, actor=pi, draft=draft).code
        requests.submit_request(session, actor=pi, code=code)
    with uow(engine) as session:
        request_review.approve_request(session, actor=admin, code=code, reason="ok", floor=0)
    return code


def written_state(engine) -> tuple:
    with engine.connect() as connection:
        return (
            connection.execute(sa.text("SELECT count(*) FROM specimen_event")).scalar(),
            connection.execute(sa.text("SELECT max(id) FROM audit_entry")).scalar(),
        )


def send(cohort_db, actors, tmp_path, *, relabel: bool = False) -> tuple[str, Path, list[str]]:
    """A request of the cohort picked, packed and sent (`relabel`: under the request's codes):
    its shipment, manifest, tubes."""
    tech = actors[Role.technician]
    code = approved(cohort_db, actors, relabel=relabel)
    with uow(cohort_db, readonly=True) as session:
        tubes = [
            i.accession_id for i in request_picks.pick_list(session, actor=tech, code=code).items
        ]
    for tube in tubes:
        with uow(cohort_db) as session:
            request_picks.pick(session, actor=tech, code=code, accession=tube)
    with uow(cohort_db) as session:
        shipment = shipments.create_shipment(
            session, actor=tech, request=code, courier="World Courier", condition="dry_ice"
        ).code
        shipments.pack(session, actor=tech, code=shipment, accessions=tubes)
    with uow(cohort_db) as session:
        done = shipments.dispatch(session, actor=tech, code=shipment)
    done.manifest.write(tmp_path / "out" / shipment)
    return shipment, tmp_path / "out" / shipment / "manifest.json", tubes


def receiving_site(url: str):
    """The receiving biobank: a database of its own (at `url`, migrated), with study EXT and
    a box; its engine, admin and box."""
    engine = make_engine(url)
    bootstrap(engine)
    with uow(engine) as session:
        admin = actor_for(session, username="admin", workstation="receiving-bench")
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="EXT", title="Received serum")
        freezer = one_shelf_freezer(session, admin, "-80 receiving")
        box = next(
            n.unit.barcode
            for n in storage.storage_tree(session, actor=admin, root=freezer.barcode)
            if n.unit.holds_specimens
        )
    return engine, admin, box
