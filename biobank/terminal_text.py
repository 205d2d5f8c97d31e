"""Text as a terminal shows it: control and bidirectional characters made visible.

A line break in a reason would print as a forged row of the audit log, an escape sequence in
a scanned cell would drive the terminal (clear it, plant a link), and a right-to-left override
would make a row read other than it is. What the CLI's output helpers (`biobank.cli.common`)
and the workstation (`tui.text`, its notices) show goes through `shown`, which writes those
characters as Python-style escapes (`\\n`, `\\x1b`, `\\u202e`): one line stays one line,
and what was there can still be read.

What is stored is left as typed: `biobank.stored_text` refuses control characters where a
short field cannot hold them and keeps tabs and line breaks in free text (notes, reasons);
bidirectional marks are kept everywhere, since Arabic and Hebrew text needs them. Escaping
where text is shown makes every front end safe, whatever a file or a database holds.

JSON is read by programs, but `--json` is read in terminals too: `shown_json` writes what
JSON leaves raw of the same characters as `\\uXXXX`, the same value to any parser.
"""

from __future__ import annotations

import re

# Unicode's control characters (category Cc) are exactly C0, DEL and C1.
_C0 = "\x00-\x1f"
_DEL_C1 = "\x7f-\x9f"
_BIDI_CONTROLS = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # Unicode's Bidi_Control
_LINE_SEPARATORS = "\u2028\u2029"  # line breaks to editors and to `str.splitlines`
# JSON escapes C0 in its strings, and its own line breaks (indentation) are meant.
_RAW_IN_JSON = f"{_DEL_C1}{_BIDI_CONTROLS}{_LINE_SEPARATORS}"

# Ranges of a character class: searched in C.
CONTROL = re.compile(f"[{_C0}{_DEL_C1}]")
UNSHOWN = re.compile(f"[{_C0}{_RAW_IN_JSON}]")
_UNSHOWN_IN_JSON = re.compile(f"[{_RAW_IN_JSON}]")


def _escaped(match: re.Match[str]) -> str:
    return match[0].encode("unicode_escape").decode("ascii")


def shown(text: str) -> str:
    """`text` with its control, bidirectional and line-separator characters escaped (none
    is printable: printable text, the common case, is checked at C speed and given back)."""
    return text if text.isprintable() else UNSHOWN.sub(_escaped, text)


def shown_json(text: str) -> str:
    """JSON text (as `json.dumps` writes it) with the characters `shown` escapes that JSON
    leaves raw (DEL, C1 controls, bidirectional marks, line separators) written as `\\uXXXX`."""
    return _UNSHOWN_IN_JSON.sub(lambda match: f"\\u{ord(match[0]):04x}", text)
