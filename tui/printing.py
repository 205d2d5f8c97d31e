"""Printing from the workstation: to its default printer, through the same service as the
CLI; each job is kept in the print queue the app shows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import labels
from biobank.services import label_data

# The tube screen's key for a reprint, which asks why: what printing a printed tube points to.
REPRINT_KEY = "P"


def _log(app, target: str, what: str) -> None:
    app.print_log.append((datetime.now().strftime("%H:%M:%S"), what, target))
    app.notify(f"Printed {what} → {target}")


def print_specimen_labels(
    app,
    accession_ids: list[str],
    reason: str | None = None,
    *,
    then: Callable[[], None] | None = None,
) -> None:
    """Print the tubes' labels, then run `then` (a screen showing their history reloads it).
    Without a reason, a tube printed before is not printed: the technician is told which key
    reprints it, rather than the service's refusal, which names the CLI's option."""
    settings = app.settings

    def issue(session) -> tuple[str | None, list[str]]:
        if reason is None:
            printed = label_data.printed_before(
                session, actor=app.actor, accession_ids=accession_ids
            )
            if printed:
                return None, printed
        target = label_data.issue_specimen_labels(
            session,
            actor=app.actor,
            accession_ids=accession_ids,
            output=lambda made: labels.print_labels(settings.printer_profile(), made),
            reason=reason,
            show_participant=settings.labels_show_participant,
        )
        return target, []

    def done(result: tuple[str | None, list[str]]) -> None:
        target, printed = result
        if printed:
            app.bell()
            app.notify(
                f"The label of {', '.join(printed)} was printed before: "
                f"press {REPRINT_KEY} to reprint it (it asks why)",
                title="Not printed",
                severity="warning",
                timeout=10,
            )
            return
        _log(app, target, ", ".join(accession_ids))
        if then is not None:
            then()

    app.run_db(issue, done)


def print_box_label(app, barcode: str) -> None:
    settings = app.settings

    def issue(session) -> str:
        made = label_data.box_labels(session, actor=app.actor, barcodes=[barcode])
        return labels.print_labels(settings.printer_profile(), made)

    app.run_db(issue, lambda target: _log(app, target, barcode))
