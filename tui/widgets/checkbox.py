"""A checkbox whose mark says on or off, not only its colour."""

from __future__ import annotations

from textual.widgets import Checkbox as TextualCheckbox


class Checkbox(TextualCheckbox):
    """Textual's checkbox draws the same X on and off, told apart by colour alone: here on
    is ✓ and off is blank, readable in any colour scheme."""

    @property
    def BUTTON_INNER(self) -> str:  # the name Textual's toggle button draws its mark from
        return "✓" if self.value else " "
