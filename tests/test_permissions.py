"""Every service against every role. The table below is the specification: technicians
register participants, accession, move, print and work the pull list; PIs view, query and
export de-identified data; admins do everything, including PHI, consent, phenotypes, imports,
users, studies, the storage layout, the audit trail and backups.

Each row names a service (and, where an argument changes who may call it, the variant) and the
roles allowed. An allowed role's call must succeed, so the arguments are real ones on a seeded
database; any other role must get PermissionDenied naming its role. Every call runs in a unit
of work that is rolled back, so one seeded database per engine serves the whole table, and the
audit trail is unchanged after each row (backup and restore, which commit their own work, run
on a second database). A service without a row fails `test_every_service_has_a_row`.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cohort_seed import seed_cohort
from conftest import ENGINES, _postgres_template, _sqlite_template
from fake_redcap import TOKEN, FakeRedcap
from inventory import accession_tube, participant_with_visit
from pydantic import SecretStr
from redcap_projects import classic
from sqlalchemy.engine import Engine

import biobank.services
from biobank.bootstrap import bootstrap
from biobank.db import make_engine, uow
from biobank.domain.cohort import CohortQuery
from biobank.domain.permissions import MATRIX, Actor, Permission
from biobank.domain.phenotypes import Stored
from biobank.domain.vocabulary import DeidentificationMode, PhenotypeScope, PhenotypeType, Role
from biobank.errors import PermissionDenied
from biobank.models import Specimen, UserRead
from biobank.services import (
    agreements,
    audit,
    audit_anchor,
    backups,
    cohort_counts,
    consent,
    consistency,
    custody,
    demo,
    events,
    export_runs,
    exports,
    external_ids,
    identity,
    kits,
    label_data,
    lineage,
    one_time_codes,
    overview,
    participants,
    phenotype_at_collection,
    phenotype_missing,
    phenotype_variables,
    phenotypes,
    pulls,
    reconcile,
    request_picks,
    request_reports,
    request_review,
    requests,
    reservations,
    saved_queries,
    scan,
    shipment_receipt,
    shipments,
    specimens,
    storage,
    studies,
    users,
    withdrawals,
)
from biobank.services.imports import legacy as legacy_import
from biobank.services.imports import redcap as redcap_import
from biobank.services.imports.redcap.api import pull_redcap

T, P, A = Role.technician, Role.pi, Role.admin
EVERYONE = frozenset({T, P, A})
INVENTORY_WORK = frozenset({T, A})  # accession, move, print labels, register participants
RESEARCH = frozenset({P, A})  # query and export de-identified data
ADMIN = frozenset({A})

# Called by other services after their own permission check, to record what they did: they
# check nothing themselves, by design.
EXEMPT = {
    audit.record: "appends the caller's audit entry after the caller's own check",
    audit.record_many: "appends the caller's audit entries after the caller's own check",
    events.record_event: "appends the caller's custody event after the caller's own check",
    events.custody_event: "makes the caller's custody event, after the caller's own check",
    specimens.record_new_specimen: "saves the tube its caller made, after the caller's check",
    audit.audited: "records the change its caller makes to a row, after the caller's own check",
    reservations.follow_status: "custody's status changes call it after their own check",
    reservations.end_reservation: "ends a reservation for a release or a status change, "
    "after the caller's check",
    agreements.covering_agreement: "the export's check of its agreement, after the export's "
    "permission check",
    external_ids.add_external_ids: "an import's record IDs, after the import's own check",
    external_ids.find_by_external_id: "`show_participant` finds by record ID after its check "
    "(the actor decides only whether a PHI ID finds anyone)",
    phenotypes.remove_at: "removes a value or a missing-data code for `remove_value` and "
    "`remove_missing`, after their check",
    requests.move: "moves a request for the request services, after their check",
    requests.refuse_others: "a check itself: a PI's own requests, after the permission check",
    reservations.release_reserved: "gives back a cancelled request's tubes, after its check",
    reservations.give_back: "gives a reserved tube back for a release, an expiry, a split or "
    "a substitution, after their check",
    reservations.set_aside: "reserves for `reserve_specimens` and a split at picking, after "
    "their check",
    reservations.release_expired: "gives back expired tubes for a review or an approval, "
    "after their check",
}

DATA = Path(__file__).parent / "data"
REDCAP = DATA / "redcap"
# The seeded inventory (see `_seed`): storage units and tubes are named by barcode and by
# legacy ID, which every service that finds a tube accepts.
BOX, OTHER_BOX, SPARE_RACK = "BOX-A", "BOX-B", "RACK-2"
TUBE = "T-STORED"  # P-0001's baseline serum, 1000 uL, available in BOX-A A1
SECOND_TUBE = "T-SECOND"  # the same visit's, 500 uL, in BOX-A A2
OUT_TUBE = "T-OUT"  # P-0002's, checked out of BOX-A A3 (its position held)
PULL_TUBE = "T-PULL"  # P-0006's, in BOX-A A4, on the pull list: P-0006 withdrew (destroy)
HELD_TUBE = "T-HELD"  # P-0001's, in BOX-A A5, reserved for REQ-HELD by "victim" (a PI)
QUERY = CohortQuery(specimen_types=["SER"])
USES = ["FUTURE_RESEARCH"]


@dataclass(frozen=True)
class World:
    """One engine's databases, built once for the module."""

    engine: Engine  # the seeded inventory
    empty: Engine  # migrated, with users only: the demo loads only into an empty database
    actors: dict[Role, Actor]  # on `engine`
    empty_actors: dict[Role, Actor]  # on `empty`
    legacy_sheet: Path  # three rows of tests/data/legacy_inventory.csv
    exports: Path  # a folder for export runs
    safe_harbor_run: str  # run codes of two exports
    identified_run: str
    pull_tube_id: int
    victim_token: int  # the id of a personal token of user "victim"
    backup: Path  # a backup of `empty`
    backup_target: Path  # where backups are written (replacing what is there)

    @property
    def admin(self) -> Actor:
        return self.actors[A]


@dataclass(frozen=True)
class Seeded:
    """An argument known once the database is seeded: that attribute of the World."""

    attribute: str


Call = Callable[[World, Any, Actor], object]  # (world, session or engine, actor)


@dataclass(frozen=True)
class Case:
    """A row of the table: a service, the roles allowed, and a call with valid arguments."""

    service: Callable
    allowed: frozenset[Role]
    call: Call
    variant: str = ""  # names a call whose arguments matter to who may make it
    # "seeded": a session on the seeded database; "empty": one on the empty database;
    # "engine": the empty database's engine, for a service that commits its own work
    on: str = "seeded"

    @property
    def id(self) -> str:
        return _name(self.service) + (f":{self.variant}" if self.variant else "")


def row(
    service: Callable,
    allowed: frozenset[Role],
    *,
    variant: str = "",
    on: str = "seeded",
    call: Call | None = None,
    **arguments: Any,
) -> Case:
    """`service(session, actor=…, **arguments)`, or `call` for what needs more than that."""

    def by_arguments(world: World, session: Any, actor: Actor) -> object:
        given = {
            name: getattr(world, value.attribute) if isinstance(value, Seeded) else value
            for name, value in arguments.items()
        }
        return service(session, actor=actor, **given)

    return Case(service, allowed, call or by_arguments, variant, on)


def _name(function: Callable) -> str:
    return f"{function.__module__.removeprefix('biobank.services.')}.{function.__name__}"


# --- Calls that need more than arguments -----------------------------------------------------


def _revoke_own_token(w, s, a):
    token, _ = identity.create_token(s, actor=a, label="my script")
    return identity.revoke_token(s, actor=a, token_id=token.id)


def _p0001(session) -> tuple[Any, Any]:
    person = participants.get_participant_row(session, "P-0001")
    return person, participants.find_visit(session, person, "baseline")


def _merge_visits(w, s, a):
    participants.add_visit(
        s, actor=w.admin, participant="P-0001", label="repeat", visit_date=date(2025, 3, 1)
    )
    return participants.merge_visits(
        s, actor=a, participant="P-0001", keep="baseline", merge="repeat", reason="one visit"
    )


def _store_value(w, s, a):
    person, visit = _p0001(s)
    return phenotypes.store_value(
        s, actor=a, participant=person, variable=phenotype_variables.get_variable(s, "c3"),
        visit=visit, stored=Stored(number=90.0), source="manual",
    )  # fmt: skip


def _add_values(w, s, a):
    person, visit = _p0001(s)
    values = [(visit, phenotype_variables.get_variable(s, "c3"), Stored(number=90.0))]
    return phenotypes.add_values(s, actor=a, participant=person, values=values, source="manual")


def _add_many_values(w, s, a):
    person, visit = _p0001(s)
    c3 = phenotype_variables.get_variable(s, "c3")
    values = [phenotypes.NewPhenotypeValue(person, visit, c3, Stored(number=90.0))]
    return phenotypes.add_many_values(s, actor=a, values=values, source="manual")


def _c3_at_p0001(s) -> dict[str, Any]:
    person, visit = _p0001(s)
    return {
        "participant": person,
        "variable": phenotype_variables.get_variable(s, "c3"),
        "visit": visit,
    }


def _record_missing(w, s, a):
    return phenotype_missing.record_missing(
        s, actor=a, **_c3_at_p0001(s), code="NASK", source="manual"
    )


def _remove_missing(w, s, a):
    _record_missing(w, s, w.admin)
    return phenotype_missing.remove_missing(s, actor=a, **_c3_at_p0001(s), reason="asked now")


def _add_missing(w, s, a):
    person, visit = _p0001(s)
    codes = [(visit, phenotype_variables.get_variable(s, "c3"), "NASK", 0)]
    return phenotype_missing.add_missing(s, actor=a, participant=person, codes=codes, source="x")


def _remove_value(w, s, a):
    _store_value(w, s, w.admin)
    return phenotypes.remove_value(s, actor=a, **_c3_at_p0001(s), reason="blank in REDCap")


def _pull_redcap(w, s, a):
    """A pull from a REDCap server on this machine: nothing is written."""
    with (
        FakeRedcap(classic()) as server,
        pull_redcap(actor=a, url=server.url, token=SecretStr(TOKEN)) as pulled,
    ):
        return pulled.summary


def _restore_variable(w, s, a):
    phenotype_variables.retire_variable(s, actor=w.admin, name="upcr", reason="not measured")
    return phenotype_variables.restore_variable(s, actor=a, name="upcr", reason="measured again")


def _legacy_plan(w, s, a):
    return legacy_import.check_inventory(s, actor=a, path=w.legacy_sheet, study="SLE")


def _write_inventory(w, s, a):
    plan = _legacy_plan(w, s, w.admin)
    assert plan.report.faults == [], plan.report.faults
    return legacy_import.write_inventory(s, actor=a, plan=plan)


REDCAP_FILES = {
    "dictionary": REDCAP / "extra_dictionary.csv",
    "records": REDCAP / "extra_records.csv",
    "study": "SLE",
    "mapping": redcap_import.redcap_mapping(REDCAP / "extra_mapping.toml"),
}


def _write_redcap(w, s, a):
    plan = redcap_import.check_redcap(s, actor=w.admin, **REDCAP_FILES)
    assert plan.report.faults == [], plan.report.faults
    return redcap_import.write_redcap(s, actor=a, plan=plan)


def _export(mode=DeidentificationMode.safe_harbor, **options) -> exports.ExportRequest:
    return exports.ExportRequest(query=QUERY, uses=USES, mode=mode, **options)


def _limited_export(w, s, a):
    """Under the agreement registered for the actor (see `_seed`)."""
    request = _export(DeidentificationMode.limited, dua_reference=f"DUA-{a.username}")
    return exports.run_export(s, actor=a, request=request, directory=w.exports)


def _release_own(w, s, a):
    held = reservations.reserve_specimens(
        s, actor=a, specimen_ids=[_tube_id(s, SECOND_TUBE)], request="REQ-OWN", uses=USES
    )
    assert held.reserved == 1, held
    return reservations.release_reservations(s, actor=a, request="REQ-OWN", reason="not needed")


def _draft() -> requests.RequestDraft:
    return requests.RequestDraft(
        title="Serum", uses=USES, project="P", irb_reference="IRB-1",
        irb_expires_on=date.today() + timedelta(days=30), destination_institution="Lab",
        destination_address="1 Way", destination_contact="Dr A", cohort=QUERY,
        lines=[requests.LineWant(specimen_type="SER")],
    )  # fmt: skip


def _request_of(w, s, a, *, submitted: bool = False) -> str:
    """A request of the actor's own (a technician, who may not ask, gets the admin's)."""
    owner = w.admin if a.role is Role.technician else a
    code = requests.create_request(s, actor=owner, draft=_draft()).code
    if submitted:
        requests.submit_request(s, actor=owner, code=code)
    return code


def _on_own_request(service: Callable, **arguments: Any) -> Call:
    return lambda w, s, a: service(s, actor=a, code=_request_of(w, s, a), **arguments)


def _on_submitted(service: Callable, **arguments: Any) -> Call:
    def call(w, s, a):
        code = requests.create_request(s, actor=w.admin, draft=_draft()).code
        requests.submit_request(s, actor=w.admin, code=code)
        return service(s, actor=a, code=code, **arguments)

    return call


def _approved(w, s, owner: Actor | None = None) -> tuple[str, str]:
    """A request of the `owner`'s (the admin's unless given), approved: its code and the first
    tube of its pick list."""
    code = _request_of(w, s, owner or w.admin, submitted=True)
    request_review.approve_request(s, actor=w.admin, code=code, reason="ok", floor=0)
    first = request_picks.pick_list(s, actor=w.admin, code=code).items[0].accession_id
    return code, first


def _packed(w, s, owner: Actor | None = None) -> tuple[str, str]:
    """An approved request's first tube picked and packed: the shipment and the tube."""
    code, tube = _approved(w, s, owner)
    request_picks.pick(s, actor=w.admin, code=code, accession=tube)
    shipment = shipments.create_shipment(
        s, actor=w.admin, request=code, courier="C", condition="dry_ice"
    ).code
    shipments.pack(s, actor=w.admin, code=shipment, accessions=[tube])
    return shipment, tube


def _sent(w, s, owner: Actor | None = None) -> tuple[str, str]:
    shipment, tube = _packed(w, s, owner)
    shipments.dispatch(s, actor=w.admin, code=shipment, part=True)
    return shipment, tube


def _received(w, s) -> tuple[str, str]:
    """A sent shipment's manifest received back here (as another site would): its code and
    tube."""
    shipment, tube = _sent(w, s)
    document = shipments.sent_manifest(s, actor=w.admin, code=shipment).document
    shipment_receipt.receive_manifest(s, actor=w.admin, document=document, study="SLE")
    return shipment, tube


def _shipment_labels(w, s, a):
    code = requests.create_request(
        s, actor=w.admin, draft=_draft().model_copy(update={"relabel": True})
    ).code
    requests.submit_request(s, actor=w.admin, code=code)
    request_review.approve_request(s, actor=w.admin, code=code, reason="ok", floor=0)
    tube = request_picks.pick_list(s, actor=w.admin, code=code).items[0].accession_id
    request_picks.pick(s, actor=w.admin, code=code, accession=tube)
    shipment = shipments.create_shipment(
        s, actor=w.admin, request=code, courier="C", condition="dry_ice"
    ).code
    shipments.pack(s, actor=w.admin, code=shipment, accessions=[tube])
    return label_data.shipment_labels(s, actor=a, code=shipment)


def _substitute(w, s, a):
    code, tube = _approved(w, s)
    request_picks.mark_missing(s, actor=w.admin, code=code, accession=tube, reason="gone")
    return request_picks.substitute(s, actor=a, code=code, accession=tube)


def _tube_id(session, legacy_id: str) -> int:
    return session.execute(sa.select(Specimen.id).where(Specimen.legacy_id == legacy_id)).scalar()


# --- The table ---------------------------------------------------------------------------------

IDENTIFIED = DeidentificationMode.identified
# BOX-A's first two tubes swapped and A3, A4 empty: committed, two moves and T-PULL missing
# (T-OUT is checked out, its position held).
RACK_SCAN = f"Position,Tube ID\nA1,{SECOND_TUBE}\nA2,{TUBE}\nA3,\nA4,\n"
NEW_VARIABLE = phenotype_variables.VariableRead(
    name="new_score", label="New score", value_type=PhenotypeType.integer,
    scope=PhenotypeScope.visit,
)  # fmt: skip
ALL_THREE = {"FUTURE_RESEARCH": True, "GENETIC": True, "COMMERCIAL": True}

# fmt: off
CASES = [
    # users: admins manage them; everyone changes their own PIN
    row(users.add_user, ADMIN, username="newbie", role="pi"),
    row(users.list_users, ADMIN),
    row(users.deactivate_user, ADMIN, username="victim"),
    row(users.set_pin, ADMIN, variant="of_another_user", username="victim", pin="5555"),
    row(
        users.set_pin, EVERYONE, variant="own",
        call=lambda w, s, a: users.set_pin(s, actor=a, username=a.username, pin="5555"),
    ),
    # sign-in: admins set the policy and unlock users; everyone keeps their own tokens
    row(identity.set_sign_in_policy, ADMIN, policy="trusted"),
    row(identity.unlock_user, ADMIN, username="victim"),
    row(identity.create_token, EVERYONE, label="my script"),
    row(identity.list_tokens, EVERYONE),
    row(identity.list_tokens, ADMIN, variant="of_another_user", username="victim"),
    row(identity.revoke_token, EVERYONE, variant="own", call=_revoke_own_token),
    row(identity.revoke_token, ADMIN, variant="of_another_user", token_id=Seeded("victim_token")),
    # one-time codes: admins give a user without a PIN (here admin) an enrolment code, and
    # make their own recovery codes
    row(one_time_codes.issue_enrolment_code, ADMIN, username="admin"),
    row(one_time_codes.issue_recovery_code, ADMIN),
    # studies
    row(studies.add_study, ADMIN, code="NEW", title="New"),
    row(studies.list_studies, EVERYONE),
    # participants and visits: identity (PHI) is admins' only
    row(participants.add_participant, INVENTORY_WORK, study="SLE"),
    row(participants.add_participant, ADMIN, variant="with_phi", study="SLE", mrn="MRN77"),
    row(participants.show_participant, EVERYONE, code="P-0001"),
    row(
        participants.show_participant, ADMIN, variant="with_identity", code="P-0001",
        with_identity=True,
    ),
    row(participants.list_participants, EVERYONE),
    row(
        participants.add_visit, INVENTORY_WORK, participant="P-0001", label="flare",
        visit_date=date(2025, 3, 1),
    ),
    row(participants.merge_visits, ADMIN, call=_merge_visits),
    # consent: everyone reads it, admins record it, technicians work the pull list
    row(consent.add_statement, ADMIN, code="NEW_USE", text="A new use"),
    row(consent.list_statements, EVERYONE),
    row(
        consent.add_document, ADMIN, code="MAIN", version="2", title="Consent v2",
        effective_on=date(2024, 1, 1), statements=USES,
    ),
    row(consent.list_documents, EVERYONE),
    row(
        consent.record_consent, ADMIN, participant="P-0002", document="MAIN", version="1",
        signed_on=date(2024, 1, 1), answers=ALL_THREE,
    ),
    row(consent.check_uses, EVERYONE, participant="P-0001", uses=USES, as_of=None),
    row(consent.consent_status, EVERYONE, participant="P-0001"),
    row(withdrawals.withdrawal_impact, EVERYONE, participant="P-0001"),
    row(
        withdrawals.review_withdrawal, ADMIN, participant="P-0001", withdrawn_on=date.today(),
        requested_by="participant", disposition="keep_no_use",
    ),
    row(
        withdrawals.withdraw, ADMIN, participant="P-0001", withdrawn_on=date.today(),
        requested_by="participant", disposition="keep_no_use",
    ),
    row(pulls.pull_list, EVERYONE),
    row(pulls.pull_item, EVERYONE, specimen_id=Seeded("pull_tube_id")),
    row(pulls.pull, INVENTORY_WORK, accession=PULL_TUBE),
    # specimens
    row(
        specimens.accession, INVENTORY_WORK, participant="P-0001", visit="baseline",
        specimen_type="SER", quantity=500, unit="uL", destination=OTHER_BOX,
    ),
    row(lineage.aliquot, INVENTORY_WORK, parent=TUBE, count=2, volume=100, destination=OTHER_BOX),
    row(
        lineage.derive, INVENTORY_WORK, parent=TUBE, specimen_type="DNA", quantity=10,
        unit="ug", used=100,
    ),
    row(lineage.pool, INVENTORY_WORK, sources=[(TUBE, 100), (SECOND_TUBE, 100)]),
    row(lineage.trace, EVERYONE, accession=TUBE),
    row(specimens.show_specimen, EVERYONE, accession=TUBE),
    row(specimens.list_specimens, EVERYONE, participant="P-0001"),
    row(
        kits.reserve_kit, INVENTORY_WORK, participant="P-0001", visit="baseline", count=2,
        specimen_type="SER",
    ),
    row(scan.resolve_scan, EVERYONE, scanned=TUBE),
    row(scan.specimen_view, EVERYONE, accession=TUBE),
    # custody: technicians' work
    row(custody.move, INVENTORY_WORK, accession=TUBE, destination=OTHER_BOX),
    row(custody.check_out, INVENTORY_WORK, accession=TUBE),
    row(custody.check_in, INVENTORY_WORK, accession=OUT_TUBE),
    row(custody.record_thaw, INVENTORY_WORK, accession=TUBE),
    row(custody.deplete, INVENTORY_WORK, accession=TUBE),
    row(custody.dispose, INVENTORY_WORK, accession=TUBE, reason="cracked"),
    row(custody.distribute, INVENTORY_WORK, accession=TUBE, recipient="Core lab", uses=USES),
    row(custody.mark_missing, INVENTORY_WORK, accession=TUBE),
    row(custody.release_position, INVENTORY_WORK, accession=OUT_TUBE),
    row(custody.rearrange, INVENTORY_WORK, box=BOX, placements={TUBE: "B1", SECOND_TUBE: "A1"}),
    row(reconcile.reconcile_box, EVERYONE, box=BOX, scan=RACK_SCAN),
    row(reconcile.reconcile_box, INVENTORY_WORK, variant="commit", box=BOX, scan=RACK_SCAN,
        commit=True),
    # labels
    row(label_data.specimen_labels, INVENTORY_WORK, accession_ids=[TUBE]),
    row(label_data.box_labels, INVENTORY_WORK, barcodes=[BOX]),
    row(label_data.kit_labels, INVENTORY_WORK, participant="P-0001", visit="baseline", count=2),
    row(label_data.check_reprints, INVENTORY_WORK, accession_ids=[TUBE], reason=None),
    row(label_data.printed_before, INVENTORY_WORK, accession_ids=[TUBE]),
    row(label_data.record_printed, INVENTORY_WORK, accession_ids=[TUBE], target="test"),
    row(
        label_data.issue_specimen_labels, INVENTORY_WORK, accession_ids=[TUBE],
        output=lambda labels: "test",
    ),
    # storage: everyone browses it, admins lay it out
    row(storage.add_unit, ADMIN, kind="box", name="New box", parent=SPARE_RACK, grid=(9, 9)),
    row(
        storage.add_freezer, ADMIN, name="-80 #2", shelves=1, racks_per_shelf=1,
        boxes_per_rack=1,
    ),
    row(storage.move_unit, ADMIN, unit=OTHER_BOX, destination=SPARE_RACK),
    row(storage.box_view, EVERYONE, barcode=BOX),
    row(storage.fill_positions, EVERYONE, barcode=BOX),
    row(storage.storage_children, EVERYONE),
    row(storage.storage_path, EVERYONE, barcode=BOX),
    row(storage.storage_tree, EVERYONE),
    row(overview.inventory_overview, EVERYONE),
    # phenotypes: everyone reads them, admins record them
    row(phenotype_variables.list_variables, EVERYONE),
    row(phenotype_variables.add_variable, ADMIN, definition=NEW_VARIABLE),
    row(
        phenotypes.set_value, ADMIN, participant="P-0001", variable="upcr", value="0.4",
        visit="baseline",
    ),
    row(phenotypes.store_value, ADMIN, call=_store_value),
    row(phenotypes.add_values, ADMIN, call=_add_values),
    row(phenotypes.add_many_values, ADMIN, call=_add_many_values),
    row(phenotypes.remove_value, ADMIN, call=_remove_value),
    row(phenotype_missing.record_missing, ADMIN, call=_record_missing),
    row(phenotype_missing.remove_missing, ADMIN, call=_remove_missing),
    row(phenotype_missing.add_missing, ADMIN, call=_add_missing),
    row(phenotype_variables.rename_variable, ADMIN, name="upcr", new_name="upcr_ratio",
        reason="clearer"),
    row(phenotype_variables.retire_variable, ADMIN, name="upcr", reason="not measured"),
    row(phenotype_variables.restore_variable, ADMIN, call=_restore_variable),
    row(phenotypes.participant_phenotypes, EVERYONE, participant="P-0001"),
    row(phenotype_missing.participant_missing, EVERYONE, participant="P-0001"),
    row(phenotype_at_collection.specimen_phenotypes, EVERYONE, accession=TUBE),
    # cohorts and exports: PIs query and export de-identified data; identified data is admins'
    row(cohort_counts.preview_cohort, RESEARCH, query=QUERY, uses=USES),
    row(saved_queries.save_query, RESEARCH, name="new query", query=QUERY),
    row(saved_queries.get_saved_query, RESEARCH, name="serum"),
    row(saved_queries.list_saved_queries, RESEARCH),
    row(saved_queries.resolve_query, RESEARCH, query=QUERY, saved="serum"),
    row(
        cohort_counts.allowed_on, ADMIN, as_of=date(2024, 1, 1), uses=USES, query=QUERY,
        reason="the IRB asked", listed=True,
    ),
    # reservations: PIs reserve through exports and release their own; admins release any
    row(reservations.reserve_specimens, RESEARCH, call=lambda w, s, a: (
        reservations.reserve_specimens(s, actor=a, specimen_ids=[_tube_id(s, TUBE)],
                                       request="REQ-2", uses=USES))),
    row(reservations.release_reservations, RESEARCH, variant="own", call=_release_own),
    row(reservations.release_reservations, ADMIN, variant="of_another_user", request="REQ-HELD",
        reason="request withdrawn"),
    row(reservations.list_reservations, EVERYONE),
    # specimen requests: PIs ask and see their own; reviewers (admins) decide on any
    row(requests.create_request, RESEARCH, call=lambda w, s, a: requests.create_request(
        s, actor=a, draft=_draft())),
    row(requests.show_request, RESEARCH, variant="own",
        call=_on_own_request(requests.show_request)),
    row(requests.show_request, ADMIN, variant="of_another_user",
        call=_on_submitted(requests.show_request)),
    row(requests.list_requests, RESEARCH),
    row(requests.submit_request, RESEARCH, call=_on_own_request(requests.submit_request)),
    row(requests.withdraw_request, RESEARCH,
        call=_on_own_request(requests.withdraw_request, reason="grant ended")),
    row(request_review.preview_request, RESEARCH,
        call=_on_own_request(request_review.preview_request)),
    row(request_review.review_request, ADMIN, call=_on_submitted(request_review.review_request)),
    row(request_review.approve_request, ADMIN,
        call=_on_submitted(request_review.approve_request, reason="ok")),
    row(request_review.reject_request, ADMIN,
        call=_on_submitted(request_review.reject_request, reason="no")),
    row(request_review.release_expired, ADMIN),
    row(request_reports.requests_report, ADMIN),
    # picking and shipping: technicians pick, pack, ship and receive; everyone sees
    row(request_picks.pick_list, EVERYONE, call=lambda w, s, a: request_picks.pick_list(
        s, actor=a, code=_approved(w, s)[0])),
    row(request_picks.pick, INVENTORY_WORK, call=lambda w, s, a: request_picks.pick(
        s, actor=a, code=(found := _approved(w, s))[0], accession=found[1])),
    row(request_picks.mark_missing, INVENTORY_WORK, call=lambda w, s, a: request_picks.mark_missing(
        s, actor=a, code=(found := _approved(w, s))[0], accession=found[1], reason="gone")),
    row(request_picks.substitute, INVENTORY_WORK, call=_substitute),
    row(shipments.create_shipment, INVENTORY_WORK, call=lambda w, s, a: shipments.create_shipment(
        s, actor=a, request=_approved(w, s)[0], courier="C", condition="ambient")),
    row(shipments.pack, INVENTORY_WORK, call=lambda w, s, a: shipments.pack(
        s, actor=a, code=_packed(w, s)[0], accessions=[])),
    row(shipments.dispatch, INVENTORY_WORK, call=lambda w, s, a: shipments.dispatch(
        s, actor=a, code=_packed(w, s)[0], part=True)),
    row(shipments.confirm_delivery, INVENTORY_WORK, call=lambda w, s, a: (
        shipments.confirm_delivery(s, actor=a, code=_sent(w, s)[0], note="all received"))),
    row(shipments.receive_return, INVENTORY_WORK, call=lambda w, s, a: shipments.receive_return(
        s, actor=a, code=(found := _sent(w, s))[0], accession=found[1], quantity=10,
        destination=BOX)),
    row(shipments.show_shipment, EVERYONE, call=lambda w, s, a: shipments.show_shipment(
        s, actor=a, code=_sent(w, s)[0])),
    row(shipments.list_shipments, EVERYONE),
    row(shipments.linked_export, RESEARCH, call=lambda w, s, a: shipments.linked_export(
        s, actor=a, code=_sent(w, s, a)[0], directory=w.exports)),
    row(label_data.shipment_labels, INVENTORY_WORK, call=_shipment_labels),
    row(shipments.sent_manifest, EVERYONE, call=lambda w, s, a: shipments.sent_manifest(
        s, actor=a, code=_sent(w, s)[0])),
    row(shipment_receipt.receive_manifest, INVENTORY_WORK, call=lambda w, s, a: (
        shipment_receipt.receive_manifest(s, actor=a, study="SLE", document=shipments.sent_manifest(
            s, actor=w.admin, code=_sent(w, s)[0]).document))),
    row(shipment_receipt.check_in, INVENTORY_WORK, call=lambda w, s, a: shipment_receipt.check_in(
        s, actor=a, shipment=(found := _received(w, s))[0], tube=found[1])),
    row(shipment_receipt.close_receipt, INVENTORY_WORK, call=lambda w, s, a: (
        shipment_receipt.close_receipt(s, actor=a, shipment=_received(w, s)[0]))),
    row(shipment_receipt.show_receipt, EVERYONE, call=lambda w, s, a: (
        shipment_receipt.show_receipt(s, actor=a, shipment=_received(w, s)[0]))),
    # data use agreements: admins register them; PIs see their own
    row(
        agreements.register_agreement, ADMIN, reference="DUA-NEW", pi="pi1", study="SLE",
        uses=USES, starts_on=date(2026, 1, 1), expires_on=date(2030, 1, 1),
    ),
    row(agreements.revoke_agreement, ADMIN, reference="DUA-pi1", reason="terminated"),
    row(agreements.list_agreements, RESEARCH),
    row(exports.begin_export, RESEARCH, request=_export(), directory=Seeded("exports")),
    row(exports.begin_export, ADMIN, variant="identified", directory=Seeded("exports"),
        request=_export(IDENTIFIED)),
    row(exports.run_export, RESEARCH, request=_export(), directory=Seeded("exports")),
    row(exports.run_export, RESEARCH, variant="limited", call=_limited_export),
    row(
        exports.run_export, RESEARCH, variant="reserving", directory=Seeded("exports"),
        request=_export(reserve_request="REQ-1"),
    ),
    row(
        exports.run_export, ADMIN, variant="identified", directory=Seeded("exports"),
        request=_export(IDENTIFIED),
    ),
    row(export_runs.replay_export, RESEARCH, run_code=Seeded("safe_harbor_run")),
    row(export_runs.replay_export, ADMIN, variant="identified", run_code=Seeded("identified_run")),
    row(export_runs.list_runs, RESEARCH),
    # imports, the audit trail, the demo and backups: admins only
    row(legacy_import.check_inventory, ADMIN, call=_legacy_plan),
    row(legacy_import.write_inventory, ADMIN, call=_write_inventory),
    row(redcap_import.check_redcap, ADMIN, **REDCAP_FILES),
    row(redcap_import.write_redcap, ADMIN, call=_write_redcap),
    row(pull_redcap, ADMIN, call=_pull_redcap),
    row(audit.audit_log, ADMIN),
    row(audit.verify_chain, ADMIN),
    row(audit.record_verified, ADMIN, call=lambda w, s, a: audit.record_verified(
        s, actor=a, report=audit.ChainReport(entries=0, last_hash=audit.GENESIS_HASH))),
    row(consistency.check_consistency, ADMIN),
    row(audit_anchor.add_checkpoint, ADMIN, call=lambda w, s, a: audit_anchor.add_checkpoint(
        s, actor=a, key=bytes(32), path=w.exports / f"checkpoints-{a.username}.jsonl")),
    row(audit_anchor.check_checkpoints, ADMIN, call=lambda w, s, a: (
        audit_anchor.check_checkpoints(s, actor=a, key=None, path=w.exports / "none.jsonl"))),
    row(demo.seed_demo, ADMIN, on="empty", participants=1),
    row(backups.backup, ADMIN, on="engine", path=Seeded("backup_target"), replace=True),
    row(backups.restore, ADMIN, on="engine", path=Seeded("backup")),
]
# fmt: on


def service_functions() -> set[Callable]:
    """Every service: a public function of a `biobank.services` module (or a module of its
    packages), defined there, that acts for an `actor`."""
    found = set()
    for info in pkgutil.walk_packages(biobank.services.__path__, "biobank.services."):
        module = importlib.import_module(info.name)
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if (
                function.__module__ == module.__name__
                and not name.startswith("_")
                and "actor" in inspect.signature(function).parameters
            ):
                found.add(function)
    return found


def test_every_service_has_a_row():
    services = service_functions()
    covered = {case.service for case in CASES}
    missing = sorted(_name(f) for f in services - covered - EXEMPT.keys())
    assert not missing, f"services without a row in CASES: {', '.join(missing)}"
    assert EXEMPT.keys() <= services, "an exemption names no service"
    assert covered == services - EXEMPT.keys(), "a row or an exemption names no service"
    assert len({case.id for case in CASES}) == len(CASES), "two rows share a service and variant"


# --- The seeded databases ----------------------------------------------------------------------


def _database(request, path: Path) -> str:
    """A migrated database: a copy of the template (`path` for SQLite's)."""
    if request.param == "sqlite":
        shutil.copy(_sqlite_template(request), path)
        return f"sqlite:///{path}"
    databases = request.getfixturevalue("postgres_databases")
    return databases.create(template=_postgres_template(request, databases))


def _sign_in(engine: Engine) -> tuple[dict[Role, Actor], int]:
    """The bootstrap admin and one user of each other role (as conftest's `actors`); and
    "victim", whose PIN, lockout and personal token (its id returned) others may change."""

    def actor(user: UserRead) -> Actor:
        return Actor(user.id, user.username, user.role, workstation="test-bench")

    admin = actor(bootstrap(engine).user)
    with uow(engine) as session:
        add = partial(users.add_user, session, actor=admin, pin="4444")
        actors = {A: admin, T: actor(add(username="technician1", role=T))}
        actors[P] = actor(add(username="pi1", role=P))
        victim = actor(add(username="victim", role=P))
        token, _ = identity.create_token(session, actor=victim, label="victim's script")
    return actors, token.id


def _seed(engine: Engine, admin: Actor, exported_to: Path) -> tuple[str, str, int]:
    """The cohort (tests/cohort_seed.py) and, for the table: a freezer of two boxes and a spare
    rack, the four tubes named above, a saved query, and two export runs."""
    seed_cohort(engine, admin)
    drawn = datetime(2020, 3, 1, 9, 0).astimezone()
    with uow(engine) as session:
        add_unit = storage.add_unit
        add_unit(session, actor=admin, kind="freezer", name="-80 #1", barcode="FRZ-1", grid=(1, 2))
        for barcode in (BOX, OTHER_BOX):
            add_unit(session, actor=admin, kind="box", name=barcode, barcode=barcode,
                     parent="FRZ-1", grid=(9, 9))  # fmt: skip
        add_unit(session, actor=admin, kind="rack", name="Spare", barcode=SPARE_RACK, grid=(2, 1))
        participant_with_visit(session, admin, "P-0006", visit_date=drawn.date())
        tubes = {}
        for legacy_id, code, quantity, position in (
            (TUBE, "P-0001", 1000, "A1"),
            (SECOND_TUBE, "P-0001", 500, "A2"),
            (OUT_TUBE, "P-0002", 500, "A3"),
            (PULL_TUBE, "P-0006", 500, "A4"),
        ):
            tubes[legacy_id] = accession_tube(
                session, admin, code, visit="baseline", quantity=quantity, collected_at=drawn,
                legacy_id=legacy_id, destination=BOX, position=position,
            )  # fmt: skip
        custody.check_out(session, actor=admin, accession=OUT_TUBE)
        withdrawals.withdraw(
            session, actor=admin, participant="P-0006", withdrawn_on=date(2021, 1, 1),
            requested_by="participant", disposition="destroy",
        )  # fmt: skip
        saved_queries.save_query(session, actor=admin, name="serum", query=QUERY)
        held = accession_tube(
            session, admin, "P-0001", visit="baseline", collected_at=drawn, legacy_id=HELD_TUBE,
            destination=BOX, position="A5",
        )  # fmt: skip
        victim = users.find_user(session, "victim")
        reservations.reserve_specimens(
            session, actor=Actor(victim.id, "victim", P, "test-bench"), specimen_ids=[held.id],
            request="REQ-HELD", uses=USES,
        )  # fmt: skip
        for pi in ("pi1", "admin"):
            agreements.register_agreement(
                session, actor=admin, reference=f"DUA-{pi}", pi=pi, study="SLE", uses=USES,
                starts_on=date(2020, 1, 1), expires_on=date(2099, 1, 1),
            )  # fmt: skip
    runs = []
    for request in (_export(), _export(IDENTIFIED)):
        with uow(engine) as session:
            run = exports.run_export(session, actor=admin, request=request, directory=exported_to)
            runs.append(run.run_code)
    return runs[0], runs[1], tubes[PULL_TUBE].id


@pytest.fixture(scope="module", params=ENGINES)
def world(request, tmp_path_factory) -> Iterator[World]:
    """One seeded database per engine for the whole table: every call is rolled back."""
    files = tmp_path_factory.mktemp("permissions")
    engine = make_engine(_database(request, files / "seeded.sqlite"))
    empty = make_engine(_database(request, files / "empty.sqlite"))
    (actors, victim_token), (empty_actors, _) = _sign_in(engine), _sign_in(empty)
    safe_harbor_run, identified_run, pull_tube_id = _seed(engine, actors[A], files / "exports")
    backup = backups.backup(empty, actor=empty_actors[A], path=files / "empty.backup").path
    sheet = (DATA / "legacy_inventory.csv").read_text(encoding="utf-8").splitlines()[:4]
    (files / "legacy.csv").write_text("\n".join(sheet) + "\n", encoding="utf-8")
    yield World(
        engine=engine, empty=empty, actors=actors, empty_actors=empty_actors,
        legacy_sheet=files / "legacy.csv", exports=files / "exports",
        safe_harbor_run=safe_harbor_run, identified_run=identified_run,
        pull_tube_id=pull_tube_id, victim_token=victim_token, backup=backup,
        backup_target=files / "again.backup",
    )  # fmt: skip
    engine.dispose()
    empty.dispose()


# --- The test ------------------------------------------------------------------------------------


def _audit_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT count(*) FROM audit_entry")).scalar_one()


class _Undo(Exception):
    """Raised after a call so its unit of work rolls back for the next role."""


def _attempt(world: World, case: Case, actor: Actor) -> Exception | None:
    """What the call raised, or None. A session's work is always rolled back, even a call
    that should have been refused; a service that takes the engine commits its own work."""
    try:
        if case.on == "engine":
            case.call(world, world.empty, actor)
            return None
        with uow(world.empty if case.on == "empty" else world.engine) as session:
            case.call(world, session, actor)
            raise _Undo
    except _Undo:
        return None
    except Exception as error:
        return error


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_service_against_every_role(world, case):
    engine = world.engine if case.on == "seeded" else world.empty
    actors = world.actors if case.on == "seeded" else world.empty_actors
    before = _audit_count(engine)
    for role in (T, P, A):
        refused_before = _audit_count(engine)
        outcome = _attempt(world, case, actors[role])
        if role in case.allowed:
            if outcome is not None:
                raise AssertionError(f"{case.id} failed for a {role.value}") from outcome
        else:
            assert isinstance(outcome, PermissionDenied), (
                f"{case.id} let a {role.value} through"
                if outcome is None
                else f"{case.id} refused a {role.value} with {outcome!r}, not PermissionDenied"
            )
            assert f"({role.value})" in outcome.message
            assert _audit_count(engine) == refused_before
    if case.on != "engine":  # a backup or a restore writes its own entry, on the empty database
        assert _audit_count(engine) == before


def test_matrix_rules_that_matter():
    assert Permission.read_phi not in MATRIX[T]
    assert Permission.export_identified not in MATRIX[T] | MATRIX[P]
    for inventory_change in (Permission.accession, Permission.move, Permission.manage_storage):
        assert inventory_change not in MATRIX[P]
    assert MATRIX[A] == frozenset(Permission)
