"""`biobank request …`: a PI's specimen requests, and their review (admins)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from biobank.cli.cohort_filters import Uses, cohort_filters
from biobank.cli.common import (
    JsonOption,
    emit_json,
    emit_record,
    emit_table,
    message,
    parse_date,
    state,
    work,
)
from biobank.domain.cohort import CohortQuery

if TYPE_CHECKING:
    from biobank.services.request_selection import Selection
    from biobank.services.requests import RequestRead

app = typer.Typer(
    help="Specimen requests: a PI asks for tubes, a reviewer approves or rejects them.",
    no_args_is_help=True,
)
Reason = typer.Option(..., "--reason", help="Why (kept with the request's history).")


@app.command()
@cohort_filters
def create(
    ctx: typer.Context,
    title: str = typer.Argument(..., help="What the specimens are for, in a line."),
    uses: Uses = [],  # noqa: B006 (typer reads the default)
    project: str = typer.Option(..., "--project", help="The project or grant."),
    irb: str = typer.Option(..., "--irb", help="The IRB approval's reference."),
    irb_expires: str = typer.Option(..., "--irb-expires", help="Its last day (YYYY-MM-DD)."),
    agreement: str | None = typer.Option(
        None, "--agreement", help="The data use or material transfer agreement's reference."
    ),
    agreement_expires: str | None = typer.Option(
        None, "--agreement-expires", help="Its last day (YYYY-MM-DD)."
    ),
    needed_by: str | None = typer.Option(None, "--needed-by", help="YYYY-MM-DD."),
    institution: str = typer.Option(..., "--to-institution", help="Where the tubes go."),
    address: str = typer.Option(..., "--to-address", help="The shipping address."),
    contact: str = typer.Option(..., "--to-contact", help="Who receives them (name, phone)."),
    query: CohortQuery | None = None,  # the filter options (see `cohort_filters`)
    saved: str | None = typer.Option(
        None, "--saved", help="A saved cohort query by name; other filters narrow it."
    ),
    tubes: list[str] = typer.Option(
        [], "--tube", help="A tube asked for by accession ID (repeatable), instead of a cohort."
    ),
    lines: list[str] = typer.Option(
        [],
        "--line",
        help="What to take: TYPE[>=QUANTITY][:N x VOLUME][/one|/all], e.g. SER>=0.5, "
        "PL1:3x0.25/all (repeatable; one per participant unless /all).",
    ),
    relabel: bool = typer.Option(
        False, "--relabel", help="Ship under the export's codes, never our accession IDs."
    ),
    reservation_days: int = typer.Option(
        30, "--reservation-days", help="How long approved tubes stay reserved unpicked."
    ),
    submit: bool = typer.Option(False, "--submit", help="Submit it for review at once."),
    json: JsonOption = False,
) -> None:
    """Ask for specimens: a draft of your own (or submitted, with --submit)."""
    from biobank.services import requests

    draft = requests.RequestDraft(
        title=title, uses=uses, project=project, irb_reference=irb,
        irb_expires_on=parse_date(irb_expires, "irb_expires"),
        agreement_reference=agreement,
        agreement_expires_on=parse_date(agreement_expires, "agreement_expires"),
        needed_by=parse_date(needed_by, "needed_by"), destination_institution=institution,
        destination_address=address, destination_contact=contact, saved_query=saved,
        cohort=query, accessions=tubes,
        lines=[requests.line_from_text(text, field="--line") for text in lines],
        relabel=relabel, reservation_days=reservation_days,
    )  # fmt: skip
    with work(ctx) as (session, actor):
        made = requests.create_request(session, actor=actor, draft=draft)
        if submit:
            made = requests.submit_request(session, actor=actor, code=made.code)
    _done(made, json)


def _done(made: RequestRead, json: bool) -> None:
    if json:
        emit_json(made)
        return
    print(made.code)
    message(f"request {made.code}: {made.status.value.replace('_', ' ')}")


@app.command()
def submit(ctx: typer.Context, code: str = typer.Argument(...), json: JsonOption = False) -> None:
    """Send a draft for review."""
    from biobank.services import requests

    with work(ctx) as (session, actor):
        made = requests.submit_request(session, actor=actor, code=code)
    _done(made, json)


@app.command()
def withdraw(
    ctx: typer.Context,
    code: str = typer.Argument(...),
    reason: str = Reason,
    json: JsonOption = False,
) -> None:
    """Cancel a request not yet fulfilled; the tubes approved for it go back."""
    from biobank.services import requests

    with work(ctx) as (session, actor):
        made = requests.withdraw_request(session, actor=actor, code=code, reason=reason)
    _done(made, json)


@app.command()
def show(ctx: typer.Context, code: str = typer.Argument(...), json: JsonOption = False) -> None:
    """A request: what it asks, its lines, decision and history."""
    from biobank.services import requests

    with work(ctx, readonly=True) as (session, actor):
        made = requests.show_request(session, actor=actor, code=code)
    if json:
        emit_json(made)
        return
    source = made.saved_query or ("listed tubes" if made.accessions else "cohort filters")
    emit_record(
        [
            ("request", made.code), ("title", made.title), ("requester", made.requester),
            ("status", made.status.value.replace("_", " ")), ("source", source),
            ("uses", ", ".join(made.uses)), ("project", made.project),
            ("IRB", f"{made.irb_reference} (to {made.irb_expires_on})"),
            ("agreement", f"{made.agreement_reference} (to {made.agreement_expires_on})"
             if made.agreement_reference else "none"),
            ("needed by", made.needed_by or ""),
            ("to", f"{made.destination_institution}; {made.destination_address}; "
                   f"{made.destination_contact}"),
            ("reserved tubes", made.reserved_tubes), ("age", f"{made.age_days} days"),
            ("decision", f"{made.decision_reason} ({made.reviewer})" if made.reviewer else ""),
        ]
    )  # fmt: skip
    from biobank.services.request_selection import wants

    emit_table(
        ["LINE", "WANTS", "STATUS", "TUBES", "WHY"],
        [
            [line.line_no, wants(line), line.status.value, line.approved_tubes,
             line.decision_reason or ""]
            for line in made.lines
        ],
    )  # fmt: skip
    emit_table(
        ["WHEN", "FROM", "TO", "WHO", "WHY"],
        [
            [f"{e.occurred_at:%Y-%m-%d %H:%M}", e.status_before or "", e.status_after,
             e.actor or "", e.reason or ""]
            for e in made.events
        ],
    )  # fmt: skip


@app.command("list")
def list_requests(
    ctx: typer.Context,
    status: str | None = typer.Option(None, "--status", help="Only requests in this state."),
    open_only: bool = typer.Option(False, "--open", help="Only requests not yet closed."),
    json: JsonOption = False,
) -> None:
    """Requests, oldest first, with their age: a PI's own, a reviewer's all."""
    from biobank.domain.vocabulary import RequestStatus
    from biobank.errors import ValidationError
    from biobank.services import requests

    try:
        wanted = RequestStatus(status.strip().lower()) if status else None
    except ValueError:
        allowed = ", ".join(RequestStatus)
        raise ValidationError(f"unknown status {status!r} (allowed: {allowed})",
                              field="status", value=status) from None  # fmt: skip
    with work(ctx, readonly=True) as (session, actor):
        rows = requests.list_requests(session, actor=actor, status=wanted, open_only=open_only)
    if json:
        emit_json(rows)
        return
    emit_table(
        ["REQUEST", "STATUS", "REQUESTER", "AGE (DAYS)", "NEEDED BY", "RESERVED", "TITLE"],
        [
            [r.code, r.status.value.replace("_", " "), r.requester, r.age_days,
             r.needed_by or "", r.reserved_tubes, r.title]
            for r in rows
        ],
    )  # fmt: skip


def _show_selection(selection: Selection, json: bool) -> None:
    if json:
        emit_json(selection)
        return
    for line in selection.lines:
        message(f"line {line.line_no}: {line.wants}")
        emit_table(
            ["", "TUBES", "PARTICIPANTS"],
            [
                ["would take", line.tubes, line.participants],
                *[[f"  {k}", v["tubes"], v["participants"]] for k, v in line.strata.items()],
                *[[f"left out: {k}", e.specimens, e.participants]
                  for k, e in line.excluded.items()],
            ],
        )  # fmt: skip
        message(
            f"  {line.candidates} tubes fit; {line.used_up} would be used up; the participants "
            f"giving keep {line.left_for_others} ({line.participants_left_without} keep none); "
            + ", ".join(f"{n} give {k}" for k, n in line.per_participant.items())
        )
    message(
        f"{selection.code}: {selection.tubes} tubes as of {selection.as_of}, each participant "
        f"keeping {selection.floor} of a type"
    )


@app.command()
def preview(ctx: typer.Context, code: str = typer.Argument(...), json: JsonOption = False) -> None:
    """What the request would take today, consent asked today; nothing changes."""
    from biobank.services import request_review

    floor = state(ctx).settings.request_floor
    with work(ctx, readonly=True) as (session, actor):
        selection = request_review.preview_request(session, actor=actor, code=code, floor=floor)
    _show_selection(selection, json)


@app.command()
def review(ctx: typer.Context, code: str = typer.Argument(...), json: JsonOption = False) -> None:
    """Take a submitted request up and see what it would take and leave (admins)."""
    from biobank.services import request_review

    floor = state(ctx).settings.request_floor
    with work(ctx) as (session, actor):
        selection = request_review.review_request(session, actor=actor, code=code, floor=floor)
    _show_selection(selection, json)


@app.command()
def approve(
    ctx: typer.Context,
    code: str = typer.Argument(...),
    reason: str = Reason,
    lines: list[int] = typer.Option(
        [], "--line", help="Approve only this line (repeatable); the others are rejected."
    ),
    reject_reason: str | None = typer.Option(
        None, "--reject-reason", help="Why the lines not approved are rejected."
    ),
    json: JsonOption = False,
) -> None:
    """Approve a request, whole or line by line (admins): its tubes are reserved for it."""
    from biobank.services import request_review

    floor = state(ctx).settings.request_floor
    with work(ctx) as (session, actor):
        decision = request_review.approve_request(
            session, actor=actor, code=code, reason=reason, lines=lines or None,
            reject_reason=reject_reason, floor=floor,
        )  # fmt: skip
    if json:
        emit_json(decision)
        return
    for number, count in decision.reserved.items():
        left = ", ".join(f"{n} {why}" for why, n in decision.left_out[number].items())
        message(f"line {number}: {count} tubes reserved" + (f" (left out: {left})" if left else ""))
    _done(decision.request, False)


@app.command()
def reject(
    ctx: typer.Context,
    code: str = typer.Argument(...),
    reason: str = Reason,
    json: JsonOption = False,
) -> None:
    """Reject a request whole (admins)."""
    from biobank.services import request_review

    with work(ctx) as (session, actor):
        made = request_review.reject_request(session, actor=actor, code=code, reason=reason)
    _done(made, json)


@app.command()
def expire(ctx: typer.Context, json: JsonOption = False) -> None:
    """Give back the tubes whose reservation expired unpicked (admins; safe to run daily)."""
    from biobank.services import request_review

    with work(ctx) as (session, actor):
        released = request_review.release_expired(session, actor=actor)
    if json:
        emit_json({"released": released})
        return
    for accession in released:
        print(accession)
    message(f"{len(released)} expired reservations released")


@app.command("pick-list")
def pick_list(
    ctx: typer.Context, code: str = typer.Argument(...), json: JsonOption = False
) -> None:
    """An approved request's tubes in freezer order, so each box is opened once; tubes consent
    no longer allows are flagged: leave them in their box."""
    from biobank.services import request_picks

    with work(ctx, readonly=True) as (session, actor):
        found = request_picks.pick_list(session, actor=actor, code=code)
    if json:
        emit_json(found.model_dump(mode="json") | {"to_pick": found.to_pick})
        return
    emit_table(
        ["TUBE", "LOCATION", "BOX", "POS", "LINE", "TYPE", "QUANTITY", "PICKED", "NOTE"],
        [
            [i.accession_id, i.location or "not placed", i.box_barcode or "", i.position or "",
             i.line_no or "", i.specimen_type, f"{i.quantity:g} {i.unit}",
             "yes" if i.picked else "", i.blocked or i.split or ""]
            for i in found.items
        ],
    )  # fmt: skip
    blocked = sum(1 for i in found.items if i.blocked)
    message(
        f"{found.code}: {found.to_pick} to pick, {sum(i.picked for i in found.items)} picked"
        + (f"; {blocked} NOT TO PICK (consent)" if blocked else "")
    )


@app.command()
def pick(
    ctx: typer.Context,
    code: str = typer.Argument(...),
    tubes: list[str] = typer.Argument(..., help="The tubes scanned in hand, in any order."),
    json: JsonOption = False,
) -> None:
    """Tick each tube of the request as it is scanned in hand (a tube of aliquots is split:
    the new IDs are printed, their labels to print). A wrong tube stops, naming it; those
    before it are picked."""
    from biobank.services import request_picks

    done = []
    for accession in tubes:
        with work(ctx) as (session, actor):
            outcome = request_picks.pick(session, actor=actor, code=code, accession=accession)
        done.append(outcome)
        if not json:
            made = ", ".join(a.accession_id for a in outcome.aliquots)
            message(f"{accession}: {outcome.outcome}" + (f" into {made}" if made else ""))
            for aliquot in outcome.aliquots:
                print(aliquot.accession_id)
    if json:
        emit_json(done)


@app.command()
def missing(
    ctx: typer.Context,
    code: str = typer.Argument(...),
    tube: str = typer.Argument(...),
    reason: str = typer.Option("", "--reason", help="What was found instead."),
    json: JsonOption = False,
) -> None:
    """A tube of the request not where the pick list says: marked missing, off the request."""
    from biobank.services import request_picks

    with work(ctx) as (session, actor):
        read = request_picks.mark_missing(
            session, actor=actor, code=code, accession=tube, reason=reason
        )
    if json:
        emit_json(read)
        return
    message(f"{read.accession_id}: {read.status}; `biobank request substitute {code} {tube}` "
            "finds a replacement")  # fmt: skip


@app.command()
def substitute(
    ctx: typer.Context,
    code: str = typer.Argument(...),
    tube: str = typer.Argument(..., help="The tube that cannot be picked."),
    json: JsonOption = False,
) -> None:
    """Replace a tube that cannot be picked with another of the same participant that meets
    the same line."""
    from biobank.services import request_picks

    with work(ctx) as (session, actor):
        item = request_picks.substitute(session, actor=actor, code=code, accession=tube)
    if json:
        emit_json(item)
        return
    print(item.accession_id)
    message(f"{tube} replaced by {item.accession_id} at {item.box_barcode} {item.position}")


@app.command()
def report(
    ctx: typer.Context,
    within_days: int = typer.Option(
        7, "--within-days", help="A reservation expiring this soon is listed."
    ),
    json: JsonOption = False,
) -> None:
    """Open requests and their ages, what each PI received, tubes out with whom, and
    reservations about to expire (admins)."""
    from biobank.services import request_reports

    with work(ctx, readonly=True) as (session, actor):
        found = request_reports.requests_report(session, actor=actor, within_days=within_days)
    if json:
        emit_json(found)
        return
    message("open requests")
    emit_table(
        ["REQUEST", "STATUS", "REQUESTER", "AGE (DAYS)", "NEEDED BY"],
        [
            [r.code, r.status.value.replace("_", " "), r.requester, r.age_days,
             f"{r.needed_by}{' OVERDUE' if r.overdue else ''}" if r.needed_by else ""]
            for r in found.open
        ],
    )  # fmt: skip
    message("received, by PI")
    emit_table(
        ["PI", "REQUESTS FULFILLED", "SHIPMENTS", "TUBES"],
        [[r.requester, r.requests_fulfilled, r.shipments, r.tubes] for r in found.received],
    )
    message("tubes out")
    emit_table(
        ["INSTITUTION", "SHIPMENTS", "TUBES"],
        [[o.institution, o.shipments, o.tubes] for o in found.out],
    )
    message(f"reservations expiring within {within_days} days")
    emit_table(
        ["REQUEST", "TUBES", "FIRST EXPIRY"],
        [[e.request, e.tubes, f"{e.first_expiry:%Y-%m-%d %H:%M}"] for e in found.expiring],
    )
