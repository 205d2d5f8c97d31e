"""Printing from the workstation: to its default printer, through the same service as the
CLI; each job is kept in the print queue the app shows."""

from __future__ import annotations

from datetime import datetime

import labels
from biobank.services import label_data


def _log(app, target: str, what: str) -> None:
    app.print_log.append((datetime.now().strftime("%H:%M:%S"), what, target))
    app.notify(f"Printed {what} → {target}")


def print_specimen_labels(app, accession_ids: list[str], reason: str | None = None) -> None:
    settings = app.settings

    def issue(session) -> str:
        return label_data.issue_specimen_labels(
            session,
            actor=app.actor,
            accession_ids=accession_ids,
            output=lambda made: labels.print_labels(settings.printer_profile(), made),
            reason=reason,
            show_participant=settings.labels_show_participant,
        )

    app.run_db(issue, lambda target: _log(app, target, ", ".join(accession_ids)))


def print_box_label(app, barcode: str) -> None:
    settings = app.settings

    def issue(session) -> str:
        made = label_data.box_labels(session, actor=app.actor, barcodes=[barcode])
        return labels.print_labels(settings.printer_profile(), made)

    app.run_db(issue, lambda target: _log(app, target, barcode))
