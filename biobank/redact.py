"""Secrets kept out of what is shown: settings, messages and errors may quote a database URL or
a driver's connection string, and a password read over a shoulder or kept in a log is spent.

Plain text rules, so that a URL SQLAlchemy cannot parse is hidden too, and so that the terminal
UI's sign-in screen, which shows errors, need not import SQLAlchemy.
"""

from __future__ import annotations

import re
from typing import Any

_SECRET = "password|passwd|secret|token"
MASK = "**********"  # a secret setting, as pydantic shows a `SecretStr`

# `scheme://user:password@`: everything up to the word's last `@` (a password may hold any
# character; hiding too much leaks nothing), shown `***` as SQLAlchemy shows it.
_IN_URL = re.compile(r"\b([a-z][\w+.-]*://[^\s:/?#@]*:)\S*(?=@)", re.IGNORECASE)
# `password=…` in a URL's query or a libpq connection string (`sslpassword`, `PGPASSWORD` too).
_AS_KEYWORD = re.compile(
    rf"\b(\w*(?:{_SECRET})\w*\s*=\s*)('[^']*'|\"[^\"]*\"|[^\s&]+)", re.IGNORECASE
)


def hide_secrets(text: str) -> str:
    """`text` (a database URL, or a message quoting one) with every password as `***`."""
    return _AS_KEYWORD.sub(r"\1***", _IN_URL.sub(r"\1***", text))


def redacted(data: Any, name: str = "") -> Any:
    """Settings (as JSON data) as they may be shown: what is named like a secret as asterisks
    (a personal token, a printer's password), passwords in any text as `hide_secrets` does."""
    if isinstance(data, dict):
        return {key: redacted(value, key) for key, value in data.items()}
    if data is None:
        return None
    if re.search(_SECRET, name, re.IGNORECASE):
        return MASK
    return hide_secrets(data) if isinstance(data, str) else data
