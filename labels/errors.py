"""Errors of label rendering and printing: domain errors, so every front end already maps them
(the CLI to a line on stderr and an exit code)."""

from __future__ import annotations

from biobank.errors import BiobankError, ValidationError


class LabelError(ValidationError):
    """Label data or a template that cannot make a readable label: a code outside QR
    alphanumeric mode, an unknown template, text that would not fit even at the smallest size."""


class PrinterError(BiobankError):
    """A printer profile that cannot be used, or a printer that did not take the job."""

    exit_code = 10
