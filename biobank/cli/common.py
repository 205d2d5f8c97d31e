"""What every CLI command shares: settings, the database, the acting user, and output.

Data goes to stdout (a table, or JSON with `--json`); messages and errors go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel

from biobank.domain.dates import parse_day
from biobank.errors import AuthenticationFailed, ValidationError
from biobank.terminal_text import shown, shown_json

if TYPE_CHECKING:  # the database layer, and the settings, are imported when a command first
    # needs them: the terminal UI shows its sign-in screen before (see `tui.app`), and help
    # is shown without them
    from sqlmodel import Session

    from biobank.bootstrap import OpenDatabase
    from biobank.domain.permissions import Actor
    from biobank.services.identity import Identified
    from biobank.settings import Settings

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


@dataclass
class CliState:
    user: str | None = None
    _settings: Settings | None = None
    _database: OpenDatabase | None = field(default=None, repr=False)
    _actor: Actor | None = None

    @property
    def settings(self) -> Settings:
        from biobank.settings import load_settings

        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    def database(self, *, announce: bool = True) -> OpenDatabase:
        """The database, opened on first use (what refuses it, in one line: `db.opening`); a
        first admin made then is `announce`d on stderr (the terminal UI shows it itself)."""
        from biobank.bootstrap import FIRST_ADMIN_HINT, open_database
        from biobank.db import opening

        if self._database is None:
            with opening(self.settings.database_url):
                self._database = open_database(self.settings)
            if self._database.created_admin is not None and announce:
                message(FIRST_ADMIN_HINT)
        return self._database

    def actor(self, *, pin_stdin: bool = False) -> Actor:
        """Who runs this command, signed in once per command (see `sign_in`)."""
        if self._actor is None:
            self._actor = sign_in(self, pin_stdin=pin_stdin)
        return self._actor

    def enrolling(self, username: str) -> bool:
        """Whether `username` runs this command without a PIN yet, where sign-in is required:
        they show their enrolment code as they set one (`one_time_codes.enrol`)."""
        return identified(self, claiming_pin_of=username).needs_enrolment_code

    def close(self) -> None:
        if self._database is not None:
            self._database.engine.dispose()


def state(ctx: typer.Context) -> CliState:
    return ctx.find_root().obj


def can_prompt() -> bool:
    return sys.stdin.isatty()


def identified(cli: CliState, *, claiming_pin_of: str | None = None) -> Identified:
    """Who the command says runs it, and what they must still show (`identity.identify`)."""
    from biobank.services import identity

    token = cli.settings.token.get_secret_value() if cli.settings.token else None
    with cli.database().unit_of_work(readonly=True) as session:
        return identity.identify(
            session, username=cli.user or cli.settings.user, token=token,
            workstation=cli.settings.workstation, claiming_pin_of=claiming_pin_of,
        )  # fmt: skip


def sign_in(cli: CliState, *, pin_stdin: bool = False) -> Actor:
    """The acting user (`identified`), asked for their PIN where the database requires it (in
    a terminal, or on stdin's first line where a script says `pin_stdin`): outside any
    transaction (a SQLite writer would hold the lock while the user types), and a wrong PIN,
    typed or read, committed so that it counts towards the lockout."""
    from biobank.services import identity

    found = identified(cli)
    if not found.needs_pin:
        return found.actor
    username = found.actor.username
    if pin_stdin:
        pin = stdin_line(f"PIN for {username}")
    elif can_prompt():
        pin = typer.prompt(f"PIN for {username}", hide_input=True, err=True)
    else:
        raise AuthenticationFailed(
            "this database requires sign-in: set BIOBANK_TOKEN to a personal token (a script "
            f"makes its first with `biobank -u {username} user token create --pin-stdin`, the "
            f"PIN on stdin), or run in a terminal to type {username}'s PIN",
            field="user",
            value=username,
        )
    with cli.database().unit_of_work() as session:
        attempt = identity.sign_in(
            session, username=username, pin=pin, workstation=cli.settings.workstation
        )
    return attempt.accepted()


@contextmanager
def work(
    ctx: typer.Context, *, readonly: bool = False, lookup: bool = False
) -> Iterator[tuple[Session, Actor]]:
    """One use case: a unit of work (see `biobank.db.uow`) and the actor it runs as."""
    cli = state(ctx)
    actor = cli.actor()
    with cli.database().unit_of_work(readonly=readonly, lookup=lookup) as session:
        yield session, actor


def message(text: str) -> None:
    """One line on stderr: a line break in `text` is shown escaped (`biobank.terminal_text`),
    so a message of several lines is several calls."""
    typer.echo(shown(text), err=True)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def emit_json(data: Any) -> None:
    """JSON keeps non-ASCII text as it is; what could drive a terminal is escaped."""
    typer.echo(shown_json(json.dumps(_plain(data), indent=2, ensure_ascii=False, default=str)))


def emit_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain aligned table on stdout (readable in a terminal, easy to grep), one line per
    row whatever its cells hold."""
    text_rows = [["" if v is None else shown(str(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text_rows]) for i, c in enumerate(columns)]
    line = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
    typer.echo(line.rstrip())
    for row in text_rows:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def emit_record(pairs: Sequence[tuple[str, Any]]) -> None:
    """One line per field, the names aligned."""
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        typer.echo(f"{key.ljust(width)}  {'' if value is None else shown(str(value))}")


def parse_date(value: str | None, field_name: str) -> date | None:
    return None if value is None else parse_day(value, field_name)


def parse_datetime(value: str | None, field_name: str) -> datetime | None:
    """ISO 8601 (`2025-03-01T09:30`, `2025-03-01 09:30+01:00`); without an offset the time is
    taken as this workstation's local time."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(
            f"{field_name} must be a date and time as YYYY-MM-DDTHH:MM",
            field=field_name,
            value=value,
        ) from None
    return parsed if parsed.tzinfo else parsed.astimezone()


STDIN_LINE_LIMIT = 256  # characters: a PIN or a one-time code, with room to spare


def stdin_line(what: str) -> str:
    """One line of stdin, for scripts (a PIN, a one-time code): a bounded read, so that a
    stream without a line break is not read for ever; an empty or longer line is refused
    before it is used."""
    try:
        line = sys.stdin.readline(STDIN_LINE_LIMIT + 1)
    except UnicodeDecodeError:
        raise ValidationError(f"the {what} on stdin is not text", field="stdin") from None
    text = line.strip()
    if len(line.rstrip("\r\n")) > STDIN_LINE_LIMIT:
        raise ValidationError(
            f"the {what} on stdin is longer than {STDIN_LINE_LIMIT} characters", field="stdin"
        )
    if not text:
        raise ValidationError(f"no {what} on stdin (one line is read)", field="stdin")
    return text


def read_pin(*, from_stdin: bool, label: str = "New PIN") -> str:
    """A PIN from a hidden prompt (twice), or one line of stdin for scripts."""
    if from_stdin:
        return stdin_line("PIN")
    return typer.prompt(label, hide_input=True, confirmation_prompt=True, err=True)


def read_code(label: str, *, from_stdin: bool) -> str:
    """A one-time code (enrolment, recovery) from a hidden prompt in a terminal, or one line
    of stdin (`--code-stdin`, before a PIN's line); without either, refused."""
    if from_stdin:
        return stdin_line(label.lower())
    if not can_prompt():
        raise AuthenticationFailed(
            f"the {label.lower()} is needed: type it in a terminal, or give it on stdin with "
            "--code-stdin",
            field="code",
        )
    return typer.prompt(label, hide_input=True, err=True)
