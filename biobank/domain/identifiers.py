"""Specimen IDs with an ISO 7064 MOD 37-2 check character (as in ISBT 128), and scanner input.

The check character turns a mistyped, misread or mangled ID into an error instead of another
specimen's ID. IDs stay within uppercase `[0-9A-Z-]` so QR codes use alphanumeric mode and no
keyboard layout changes them on the way in.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
"""MOD 37-2 characters by value; `*` (36) occurs only as a check character."""

SERIAL_DIGITS = 7
MAX_SERIAL = 10**SERIAL_DIGITS - 1

STUDY_PREFIX = re.compile(r"[A-Z][A-Z0-9]{0,5}")
SPECIMEN_ID = re.compile(
    rf"(?P<prefix>{STUDY_PREFIX.pattern})-(?P<serial>[0-9]{{{SERIAL_DIGITS}}})(?P<check>[0-9A-Z])"
)
"""`PREFIX-SERIAL` plus a check character, e.g. `SLE-00012349`; match with `fullmatch`.

The serial has exactly seven digits. The check ignores the hyphen, so only a fixed width makes a
moved hyphen (`SLE2-0001234…` read as `SLE-20001234…`) a malformed ID rather than another valid
one. Seven digits give ten million IDs per study and keep the longest ID at 15 characters, which
fits a version 1 QR code at error correction Q.
"""


def mod37_2(payload: str) -> str:
    """The ISO 7064 MOD 37-2 check character of `payload`, hyphens skipped as layout.

    It catches every single substitution and every transposition of adjacent characters.
    """
    p = 0
    for char in payload:
        if char == "-":
            continue
        value = ALPHABET.find(char)
        if not 0 <= value < 36:
            raise ValueError(f"{char!r} is not in 0-9A-Z: {payload!r}")
        p = (p + value) * 2 % 37
    return ALPHABET[(38 - p) % 37]


@dataclass(frozen=True)
class ParsedSpecimenId:
    prefix: str
    serial: int
    check: str


def format_specimen_id(prefix: str, serial: int) -> str | None:
    """The ID of `serial` in a study, or None when its check character would be `*`.

    `*` is outside `[0-9A-Z-]`, so those serials (one in 37) are never issued: the allocator
    skips them.
    """
    if not STUDY_PREFIX.fullmatch(prefix):
        raise ValueError(
            f"a specimen ID prefix is 1-6 of A-Z0-9, starting with a letter: {prefix!r}"
        )
    if not 0 <= serial <= MAX_SERIAL:
        raise ValueError(f"a specimen serial is 0-{MAX_SERIAL}: {serial}")
    body = f"{prefix}-{serial:0{SERIAL_DIGITS}d}"
    check = mod37_2(body)
    return None if check == "*" else body + check


def parse_specimen_id(text: str) -> ParsedSpecimenId:
    """Split an ID into its parts. Checks the shape only; `check_specimen_id` also checks the
    check character."""
    match = SPECIMEN_ID.fullmatch(text)
    if match is None:
        raise ValueError(f"not a specimen ID: {text!r}")
    return ParsedSpecimenId(match["prefix"], int(match["serial"]), match["check"])


def check_specimen_id(text: str) -> Literal["valid", "misread", "malformed"]:
    """Whether `text` is an ID we could have issued. A well-formed ID with the wrong check
    character is a "misread" (report it as such, not as "not found"); anything else that is not
    shaped like an ID is "malformed". Normalize scans first with `normalize_scan`."""
    try:
        parsed = parse_specimen_id(text)
    except ValueError:
        return "malformed"
    return "valid" if format_specimen_id(parsed.prefix, parsed.serial) == text else "misread"


def misread_message(code: str) -> str:
    """What a front end says of a code `check_specimen_id` calls a misread."""
    return f"MISREAD: {code} fails its check character; scan again or type the ID"


_EDGE_JUNK = re.compile(r"^[\s\x00-\x1f\x7f]+|[\s\x00-\x1f\x7f]+$")
_AIM_ID = re.compile(r"\][A-Z][0-9A-Z]")


SHOWN_CHARACTERS = 40  # of an unknown code quoted back in a message


def unknown_code(code: str) -> str:
    """An unknown code as a message quotes it: cut short when long, and a non-ASCII character
    named (a Cyrillic or Greek look-alike, a full-width digit: our codes are plain ASCII)."""
    shown = repr(code[:SHOWN_CHARACTERS])
    if len(code) > SHOWN_CHARACTERS:
        shown = f"{shown[:-1]}…' ({len(code):,} characters)"
    odd = next((c for c in code if not c.isascii()), None)
    if odd is None:
        return shown
    name = unicodedata.name(odd, "unnamed")
    return f"{shown} (it holds {odd!r}, U+{ord(odd):04X} {name}; IDs are plain ASCII)"


def strip_scan(raw: str) -> str:
    """A scan without the whitespace and control characters a scanner adds at either end."""
    return _EDGE_JUNK.sub("", raw)


def normalize_scan(raw: str, *, prefix: str = "") -> str:
    """The code a keyboard-wedge scanner typed: surrounding whitespace and control characters
    (CR, LF, TAB, NUL, GS, RS, EOT...) removed, then the configured scanner `prefix` if present,
    then an AIM symbology identifier (`]Q1` QR, `]d2` Data Matrix, `]C0` Code 128, `]E0` EAN).

    The result is uppercased: our codes are uppercase only, so nothing is lost, and with Caps
    Lock on a scanner's shifted letters arrive lowercase. For the same reason the prefix and the
    AIM identifier are matched regardless of case.
    """
    code = strip_scan(raw).upper()
    code = code.removeprefix(prefix.upper())
    if _AIM_ID.match(code):
        code = code[3:]
    return code
