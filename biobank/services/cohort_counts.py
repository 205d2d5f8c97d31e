"""What a cohort counts before anything is written: a PI's preview as of today, and the
admins' report of what consent allowed on an earlier day. Neither hands out data."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel
from sqlmodel import Session

from biobank.domain.cohort import CohortQuery
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import DeidentificationMode
from biobank.errors import ValidationError
from biobank.services import audit
from biobank.services.cohort_strata import Breakdown, StrataCounter, check_strata
from biobank.services.cohorts import Tally, select_cohort
from biobank.services.consent_checks import judged_today, known_uses
from biobank.services.phenotype_at_collection import DEFAULT_WINDOW_DAYS
from biobank.services.phenotype_variables import variables_by_name
from biobank.services.saved_queries import resolve_query

SMALL_CELL = 5  # the settings' `small_cell` unless set


class CohortPreview(BaseModel):
    specimens: int
    participants: int
    matched_before_consent: int
    excluded_by_consent: int
    exclusions: dict[str, dict[str, int]]
    uses: list[str]
    as_of: date
    query: CohortQuery
    breakdowns: list[Breakdown] = []  # counts per stratum, asked with `by`


def _count(
    session: Session, query: CohortQuery, uses: list[str], as_of: date, window_days: int,
    listed: list[tuple[str, str]] | None = None, strata: StrataCounter | None = None,
) -> CohortPreview:  # fmt: skip
    tally = Tally()
    for selected in select_cohort(
        session, query=query, uses=uses, as_of=as_of, window_days=window_days, tally=tally,
        values_of=strata.variables() if strata is not None else (),
    ):  # fmt: skip
        if listed is not None:
            listed.append((selected.specimen.accession_id, selected.specimen.participant_code))
        if strata is not None:
            strata.add(selected)
    return CohortPreview(
        specimens=tally.specimens,
        participants=tally.participants,
        matched_before_consent=tally.matched_before_consent,
        excluded_by_consent=sum(tally.excluded_specimens.values()),
        exclusions=tally.exclusions(),
        uses=known_uses(session, uses),
        as_of=as_of,
        query=query,
    )


def preview_cohort(
    session: Session,
    *,
    actor: Actor,
    query: CohortQuery | None = None,
    saved: str | None = None,
    uses: list[str],
    as_of: date | None = None,
    window_days: int = DEFAULT_WINDOW_DAYS,
    by: list[str] | None = None,
    small_cell: int = SMALL_CELL,
    mode: DeidentificationMode = DeidentificationMode.safe_harbor,
) -> CohortPreview:
    """The counts a PI sees before exporting: specimens, participants, and who consent left
    out, by reason, as of today; with `by`, per stratum too (`cohort_strata`: small cells
    suppressed unless `mode` is identified, an admin's). Nothing is written."""
    require(actor, Permission.query)
    if mode is DeidentificationMode.identified:
        require(actor, Permission.export_identified)
    if small_cell < 1:
        raise ValidationError("the small-cell threshold is 1 or more", field="small_cell")
    as_of = judged_today(as_of, what="a cohort preview")
    query, _ = resolve_query(session, actor=actor, query=query, saved=saved)
    strata = StrataCounter(check_strata(by, variables_by_name(session))) if by else None
    preview = _count(session, query, uses, as_of, window_days, strata=strata)
    if strata is not None:
        preview.breakdowns = strata.breakdowns(
            session, small_cell=small_cell, suppress=mode is not DeidentificationMode.identified
        )
    return preview


class ConsentReport(CohortPreview):
    """What consent allowed on an earlier day: counts, and the internal IDs when listed."""

    reason: str
    specimens_listed: list[dict[str, str]] | None = None


def allowed_on(
    session: Session,
    *,
    actor: Actor,
    as_of: date,
    uses: list[str],
    reason: str,
    query: CohortQuery | None = None,
    saved: str | None = None,
    listed: bool = False,
    window_days: int = DEFAULT_WINDOW_DAYS,
) -> ConsentReport:
    """The admins' answer to "what did consent allow on that day?" (an audit, a complaint, a
    regulator's question): counts, and with `listed` the accession IDs and participant codes,
    but never data files; audited with its reason."""
    require(actor, Permission.view_audit)
    if not reason or not reason.strip():
        raise ValidationError("a report of what consent allowed names its reason", field="reason")
    if as_of > date.today():
        raise ValidationError(
            f"{as_of} is in the future: consent is known up to today", field="as_of",
            value=as_of.isoformat(),
        )  # fmt: skip
    query, _ = resolve_query(session, actor=actor, query=query, saved=saved)
    found: list[tuple[str, str]] | None = [] if listed else None
    counts = _count(session, query, uses, as_of, window_days, found)
    audit.record(
        session, actor=actor, action="consent.allowed_on", entity="cohort", entity_id="-",
        after=counts.model_dump(mode="json") | {"listed": listed}, reason=reason.strip(),
    )  # fmt: skip
    return ConsentReport(
        **counts.model_dump(),
        reason=reason.strip(),
        specimens_listed=None if found is None
        else [{"accession_id": a, "participant_code": p} for a, p in found],
    )  # fmt: skip
