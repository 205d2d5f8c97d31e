"""One line of a form: its label, its widgets, and where a refusal of its field is shown."""

from __future__ import annotations

from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Label, Static


def row(label: str, *widgets: Widget, field: str | None = None) -> Horizontal:
    """One line of the form: label, widgets, and where a refusal of `field` is shown."""
    errors = [Static("", id=f"{field}-error", classes="field-error", markup=False)] if field else []
    return Horizontal(Label(label, classes="field-label"), *widgets, *errors, classes="field-row")
