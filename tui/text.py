"""Text from the database or a file, as the workstation shows it.

A table cell or a line given as a string is read as markup (`[red]`, or a `[/]` that stops the
app), and an escape sequence in it reaches the terminal; a `rich.text.Text` is never markup,
and `shown` escapes the control and bidirectional characters.
"""

from __future__ import annotations

from rich.text import Text

from biobank.terminal_text import shown


def plain(value: object, style: str = "") -> Text:
    """`value` (None: nothing) as plain text."""
    return Text("" if value is None else shown(str(value)), style=style)
