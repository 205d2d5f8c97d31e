"""Pulling a REDCap project straight from its server's API, through PyCap (the optional extra
`biobank[redcap]`), for the one import of a REDCap project (`checking`): the data dictionary and
the records are exported as the API writes them ("raw" CSV) into a private temporary folder and
checked as downloaded files are, so that a server and its downloads import alike. The project's
setup comes with them (`RedcapSetup`: its events, the forms each event holds, what repeats).

The API token is a password: it is never in a message, a report or an audit entry, and what the
server says is quoted with it masked. Plain HTTP, which would send it in clear, is for this
machine only, and a redirect is refused rather than followed (it could carry the token
elsewhere). `since` pulls only the records created or changed since then (REDCap's
`dateRangeBegin`, in the server's time, taken as this workstation's): a partial sync, which
leaves the records it does not pull as they are (an import never takes a record absent from
its records as removed).

The records come `BATCH_RECORDS` records at a time, as REDCap's own guidance has large
projects exported (one export of a whole registry times out on the server, and would be held
whole in memory here): first the record IDs, then each batch's rows appended to the file."""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

from pydantic import SecretStr

from biobank.domain.permissions import Actor, Permission, require
from biobank.errors import BiobankError, ValidationError
from biobank.redact import MASK, hide_secrets

TOKEN_SETTING = "the environment variable BIOBANK_REDCAP_TOKEN or the settings file's redcap_token"
BATCH_RECORDS = 500  # records per export call
TIMEOUT = (15, 900)  # seconds to connect, and to wait for an answer (a large export takes long)
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_TOKEN = re.compile(r"[0-9A-Za-z]{32}")  # a project's API token (REDCap's: hexadecimal)
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")  # the system's reason, in requests' message
T = TypeVar("T")


@dataclass(frozen=True)
class RedcapSetup:
    """What the server says of a project beside its data dictionary. A classic project has no
    events: its one event, "", holds every form; `repeating` pairs an event (blank in a classic
    project) with the form that repeats in it (blank where the whole event repeats)."""

    title: str
    longitudinal: bool
    events: tuple[str, ...]  # unique event names, in the server's order
    forms: dict[str, tuple[str, ...]]  # unique event name → the forms it holds
    repeating: tuple[tuple[str, str], ...]

    def held(self) -> dict[str, frozenset[str]]:
        """The forms each event's rows hold, but for the rows of a repeating instrument: a
        field of them left blank in such a row is blank in REDCap, even when the whole form
        is (its data deleted), which the records alone cannot tell from a form the event does
        not have."""
        repeats = set(self.repeating)
        return {
            event: frozenset(form for form in forms if (event, form) not in repeats)
            for event, forms in self.forms.items()
        }


@dataclass(frozen=True)
class PulledProject:
    """A project pulled from a server: its two files (in a private temporary folder, gone when
    the pull ends), what the report calls them, and the project's setup. `has_records` is
    False when the server gave none (none created or changed since `since`): REDCap answers
    no records with no header either, so there is nothing to check."""

    url: str  # as shown: without a password
    since: datetime | None
    dictionary: Path
    records: Path
    has_records: bool
    setup: RedcapSetup

    @property
    def names(self) -> tuple[str, str]:
        """The dictionary and the records, as the report names them."""
        return f"{self.url} data dictionary", f"{self.url} records"

    @property
    def summary(self) -> str:
        """What was pulled, in a line."""
        setup = self.setup
        events = f"{len(setup.events)} event{'s' * (len(setup.events) != 1)}"
        shape = f"longitudinal, {events}" if setup.longitudinal else "classic"
        repeats = dict.fromkeys(form or f"event {event}" for event, form in setup.repeating)
        if repeats:
            shape += f"; repeating: {', '.join(repeats)}"
        pulled = f'pulled the REDCap project "{setup.title}" ({shape}) from {self.url}'
        if self.since is None:
            return pulled
        return (
            f"{pulled}: only the records created or changed since {self.since:%Y-%m-%d %H:%M:%S}"
            " (the others are left as they are)"
        )


class _Refused(Exception):
    """The server's answer is no answer: an HTTP error, a redirect, or not what REDCap says."""


@contextmanager
def pull_redcap(
    *, actor: Actor, url: str, token: SecretStr | None, since: datetime | None = None
) -> Iterator[PulledProject]:
    """Pull a project from the REDCap server's API at `url` (its address ending in `/api/`)
    with the project's API `token`: its setup, data dictionary and records (with `since`, only
    those created or changed since then), written into a private temporary folder removed when
    the `with` ends. A server that cannot be reached or refuses is one error naming it and what
    was asked; nothing is written then."""
    require(actor, Permission.import_data)
    address = api_url(url)
    secret = _token(token)
    begin = _since(since)
    try:
        from redcap.project import Project
        from redcap.request import RedcapError
    except ImportError:
        raise BiobankError(
            "importing from a REDCap server needs the optional extra: install biobank[redcap] "
            "(PyCap)",
            field="api_url",
        ) from None
    project = Project(
        address, secret, timeout=TIMEOUT, allow_redirects=False, hooks={"response": _checked}
    )
    shown = hide_secrets(address)

    def ask(what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except (_Refused, RedcapError) as error:
            reason = _reason(error, RedcapError).replace(secret, MASK)
            raise BiobankError(
                f"the REDCap server at {shown}, asked for its {what}: {reason}", field="api_url"
            ) from None

    info = ask("project information", lambda: _one(project.export_project_info()))
    fields = ask("data dictionary", lambda: _rows(project.metadata, "field_name", "form_name"))
    setup = _setup(project, ask, info, tuple(dict.fromkeys(str(f["form_name"]) for f in fields)))
    dictionary = ask("data dictionary", lambda: project.export_metadata(format_type="csv"))
    with tempfile.TemporaryDirectory(prefix="biobank-redcap-") as folder:  # mode 0700
        paths = Path(folder, "metadata.csv"), Path(folder, "records.csv")
        paths[0].write_text(dictionary, encoding="utf-8", newline="")
        with paths[1].open("w", encoding="utf-8", newline="") as file:
            pulled = _write_records(project, ask, file, begin)
        yield PulledProject(shown, begin, *paths, pulled, setup)


def _write_records(
    project: Any, ask: Callable[[str, Callable[[], Any]], Any], file: IO[str], begin: Any
) -> bool:
    """The records created or changed since `begin` (all without it), written to `file` as one
    export a batch of records at a time; False when there are none."""
    raw = {"format_type": "csv", "raw_or_label": "raw", "event_name": "unique"}
    ids_export = ask(
        "record IDs",
        lambda: project.export_records(fields=[project.def_field], date_begin=begin, **raw),
    )
    ids = list(dict.fromkeys(row[0] for row in list(csv.reader(io.StringIO(ids_export)))[1:]))
    header = None
    for start in range(0, len(ids), BATCH_RECORDS):
        batch = ids[start : start + BATCH_RECORDS]
        text = ask(
            f"records {start + 1:,}–{start + len(batch):,} of {len(ids):,}",
            partial(project.export_records, records=batch, raw_or_label_headers="raw", **raw),
        )
        first, _, rows = text.partition("\n")
        if header is not None and first != header:
            raise BiobankError(
                "the REDCap project's fields changed during the pull: pull it again",
                field="api_url",
            )
        file.write(text if header is None else rows)
        header = first
    return bool(ids)


def api_url(url: str) -> str:
    """A REDCap server's API URL, ending in `/api/` as PyCap wants it; `https` unless the
    server is on this machine."""
    given = url.strip()
    given += "/" if given.endswith("/api") else ""
    try:
        parts = urlsplit(given)
        host, _ = parts.hostname, parts.port  # a port that is no number is refused here
    except ValueError:
        host = None
    shown = hide_secrets(url)
    example = "https://redcap.example.edu/api/"
    if host is None or parts.scheme not in ("http", "https") or not given.endswith("/api/"):
        raise ValidationError(
            f"{shown!r} is not a REDCap API URL, such as {example}", field="api_url", value=shown
        )
    if parts.scheme == "http" and host not in LOOPBACK and not host.startswith("127."):
        raise ValidationError(
            f"{shown} would send the API token in clear: use https", field="api_url", value=shown
        )
    return given


def _token(token: SecretStr | None) -> str:
    """The token, checked here so that PyCap's own check, which quotes it, never runs into one
    that is wrong."""
    secret = token.get_secret_value().strip() if token is not None else ""
    if not secret:
        raise ValidationError(f"no REDCap API token: set {TOKEN_SETTING}", field="redcap_token")
    if not _TOKEN.fullmatch(secret):
        raise ValidationError(
            f"the REDCap API token in {TOKEN_SETTING} is not one: REDCap's are 32 letters "
            "and digits",
            field="redcap_token",
        )
    return secret


def _since(since: datetime | None) -> datetime | None:
    """`since` as the server reads it (this workstation's time, to the second); one in the
    future would pull nothing, and is refused."""
    if since is None:
        return None
    local = since.astimezone().replace(tzinfo=None, microsecond=0)
    if local > datetime.now():
        raise ValidationError(
            f"since {local:%Y-%m-%d %H:%M:%S} is in the future: no record has changed since",
            field="since",
            value=f"{local:%Y-%m-%d %H:%M:%S}",
        )
    return local


def _setup(
    project: Any,
    ask: Callable[[str, Callable[[], Any]], Any],
    info: dict[str, Any],
    instruments: tuple[str, ...],
) -> RedcapSetup:
    """The project's setup by its information (`info`): where it has them, its events, their
    forms and its repeating instruments and events (a classic project's events are refused,
    not empty: its one event holds all its `instruments`)."""
    longitudinal = _flag(info.get("is_longitudinal"))
    events: tuple[str, ...] = ()
    forms: dict[str, tuple[str, ...]] = {"": instruments}
    if longitudinal:
        forms = {}
        listed = ask("events", lambda: _rows(project.export_events(), "unique_event_name"))
        events = tuple(str(e["unique_event_name"]) for e in listed)
        mapped = ask(
            "form-event mapping",
            lambda: _rows(project.export_instrument_event_mappings(), "unique_event_name", "form"),
        )
        for pair in mapped:
            event = str(pair["unique_event_name"])
            forms[event] = (*forms.get(event, ()), str(pair["form"]))
    repeating: tuple[tuple[str, str], ...] = ()
    if _flag(info.get("has_repeating_instruments_or_events")):
        rows = ask(
            "repeating instruments and events",
            lambda: _rows(project.export_repeating_instruments_events(), "form_name"),
        )
        repeating = tuple((str(r.get("event_name") or ""), str(r["form_name"])) for r in rows)
    title = str(info.get("project_title") or "")
    return RedcapSetup(title, longitudinal, events, forms, repeating)


def _checked(response: Any, *args: Any, **kwargs: Any) -> None:
    """requests' hook on each answer: an HTTP error or a redirect is refused, with what REDCap
    said; an answer that names no character set is REDCap's UTF-8 (requests would guess
    Latin-1 for text)."""
    if "charset" not in response.headers.get("Content-Type", "").lower():
        response.encoding = "utf-8"
    status = response.status_code
    if 300 <= status < 400:
        where = response.headers.get("Location")
        raise _Refused(
            f"HTTP {status}: the server sends the API elsewhere"
            + (f" ({where}): give that URL" if where else "")
        )
    if status >= 400:
        said = _said(response.text) or response.reason or "no reason given"
        hint = f" (check the API token in {TOKEN_SETTING})" if status in (401, 403) else ""
        raise _Refused(f"HTTP {status}: {said}{hint}")


def _said(text: str) -> str | None:
    """REDCap's error message in an answer (JSON, CSV or XML, as the request's format), if the
    answer is one."""
    text = text.strip()
    try:
        said = json.loads(text).get("error")
    except (ValueError, AttributeError):
        found = re.fullmatch(r"(?is)(?:error:\s*|.*<error>\s*)(.*?)\s*(?:</error>.*)?", text)
        said = found[1] if found else None
    return str(said)[:300] if said else None


def _reason(error: Exception, pycap_error: type[Exception]) -> str:
    """Why a request failed, in a line: the server's refusal, REDCap's error (PyCap raises its
    own type with the answer), an answer that is not REDCap's, or what stopped the connection."""
    if isinstance(error, _Refused):
        return str(error)
    if type(error) is pycap_error:  # PyCap found REDCap's error in a successful answer
        said = error.args[0] if error.args else ""
        found = said.get("error") if isinstance(said, dict) else _said(str(said))
        return str(found or said)[:300]
    if isinstance(error, ValueError):  # requests' JSONDecodeError: not REDCap's JSON
        return "the answer is not REDCap's (not JSON): is this a REDCap server's API URL?"
    name = type(error).__name__
    if name == "ConnectTimeout":
        return f"no connection within {TIMEOUT[0]} seconds"
    if name == "ReadTimeout":
        return f"no answer within {TIMEOUT[1]} seconds"
    if name == "SSLError":
        return "cannot connect securely (its TLS certificate or handshake failed verification)"
    found = _ERRNO.search(str(error))
    return f"cannot connect ({found[1].strip() if found else name})"


def _one(answer: Any) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise _Refused("the answer is not REDCap's project information")
    return answer


def _rows(answer: Any, *keys: str) -> list[dict[str, Any]]:
    """A list the API exports: rows, each with `keys`."""
    if not isinstance(answer, list) or not all(
        isinstance(row, dict) and all(k in row for k in keys) for row in answer
    ):
        raise _Refused(f"the answer is not REDCap's (rows of {', '.join(keys)})")
    return answer


def _flag(value: Any) -> bool:
    """A yes/no of the project information: 1 or 0."""
    return str(value).strip().lower() in {"1", "true"}
