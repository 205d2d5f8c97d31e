"""`biobank user …`: accounts, roles, PINs and the codes that stand in for one, lockouts,
personal tokens and the sign-in policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from biobank.cli.common import (
    JsonOption,
    emit_json,
    emit_table,
    message,
    read_code,
    read_pin,
    state,
    work,
)
from biobank.domain.vocabulary import Role

if TYPE_CHECKING:
    from biobank.models import UserRead

app = typer.Typer(help="Manage users, roles and PINs (admins).", no_args_is_help=True)


@app.command()
def add(
    ctx: typer.Context,
    username: str,
    role: Role = typer.Option(..., "--role", "-r", help="technician, pi or admin."),
    name: str = typer.Option("", "--name", help="Display name."),
    badge: str | None = typer.Option(None, "--badge", help="Badge barcode for scan sign-in."),
    with_pin: bool = typer.Option(False, "--with-pin", help="Prompt for the new user's PIN."),
    pin_stdin: bool = typer.Option(False, "--pin-stdin", help="Read the PIN from stdin."),
    json: JsonOption = False,
) -> None:
    """Add a user, with the PIN they chose, or else with an enrolment code (printed once, on
    stdout) to set their first PIN with."""
    from biobank.services import one_time_codes, users

    pin = read_pin(from_stdin=pin_stdin) if (with_pin or pin_stdin) else None
    code = None
    with work(ctx) as (session, actor):
        user = users.add_user(
            session,
            actor=actor,
            username=username,
            role=role,
            display_name=name,
            pin=pin,
            badge=badge,
        )
        if pin is None:
            user, code = one_time_codes.issue_enrolment_code(
                session, actor=actor, username=username
            )
    message(f"added {user.role.value} {user.username}")
    if code is not None:
        _show_enrolment_code(user, code, json=json)
    elif json:
        emit_json(user)


@app.command("enrolment-code")
def enrolment_code(ctx: typer.Context, username: str, json: JsonOption = False) -> None:
    """Give a user without a PIN a new enrolment code (admins); the one before stops working."""
    from biobank.services import one_time_codes

    with work(ctx) as (session, actor):
        user, code = one_time_codes.issue_enrolment_code(session, actor=actor, username=username)
    _show_enrolment_code(user, code, json=json)


def _show_enrolment_code(user: UserRead, code: str, *, json: bool) -> None:
    """The code on stdout, once, and how it is used on stderr."""
    if json:
        emit_json({**user.model_dump(mode="json"), "enrolment_code": code})
    else:
        typer.echo(code)
    until = user.enrolment_expires_at.strftime("%Y-%m-%d %H:%M UTC")
    message(
        f"give {user.username} this enrolment code, for their first PIN, once, before {until}: "
        f"biobank -u {user.username} user set-pin {user.username}"
    )


@app.command("list")
def list_(ctx: typer.Context, json: JsonOption = False) -> None:
    """List users."""
    from biobank.services import users

    with work(ctx, readonly=True) as (session, actor):
        rows = users.list_users(session, actor=actor)
    if json:
        emit_json(rows)
        return
    emit_table(
        ["username", "role", "name", "pin", "active", "locked until"],
        [
            (
                u.username,
                u.role.value,
                u.display_name,
                "set" if u.has_pin else "-",
                u.active,
                u.locked_until.strftime("%Y-%m-%d %H:%M UTC") if u.locked_until else "",
            )
            for u in rows
        ],
    )


@app.command("set-pin")
def set_pin(
    ctx: typer.Context,
    username: str,
    pin_stdin: bool = typer.Option(False, "--pin-stdin", help="Read the PIN from stdin."),
    code_stdin: bool = typer.Option(
        False, "--code-stdin", help="Read the enrolment code from stdin (before the PIN)."
    ),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the audit trail)."),
) -> None:
    """Set a user's PIN (admins for anyone, users for themselves; a user without a PIN yet,
    where sign-in is required, with the enrolment code an admin gave them). A new PIN lifts
    every lock."""
    from biobank.services import one_time_codes, users

    cli = state(ctx)
    if cli.enrolling(username):
        code = read_code("Enrolment code", from_stdin=code_stdin)
        pin = read_pin(from_stdin=pin_stdin)
        with cli.database().unit_of_work() as session:
            attempt = one_time_codes.enrol(
                session, username=username, code=code, pin=pin,
                workstation=cli.settings.workstation,
            )  # fmt: skip
        attempt.accepted()
    else:
        cli.actor()  # sign in before asking for the new PIN
        pin = read_pin(from_stdin=pin_stdin)
        with work(ctx) as (session, actor):
            users.set_pin(session, actor=actor, username=username, pin=pin, reason=reason)
    message(f"PIN set for {username}")


@app.command()
def recover(
    ctx: typer.Context,
    username: str,
    pin_stdin: bool = typer.Option(False, "--pin-stdin", help="Read the new PIN from stdin."),
    code_stdin: bool = typer.Option(
        False, "--code-stdin", help="Read the recovery code from stdin (before the PIN)."
    ),
) -> None:
    """Get back into an admin account, locked or its PIN forgotten, with its recovery code:
    a new PIN, every lock lifted, and the next recovery code printed once (on stdout)."""
    from biobank.services import one_time_codes

    cli = state(ctx)
    code = read_code("Recovery code", from_stdin=code_stdin)
    pin = read_pin(from_stdin=pin_stdin)
    with cli.database().unit_of_work() as session:
        attempt = one_time_codes.recover(
            session, username=username, code=code, pin=pin, workstation=cli.settings.workstation
        )
    actor = attempt.accepted()
    with cli.database().unit_of_work() as session:
        typer.echo(one_time_codes.issue_recovery_code(session, actor=actor))
    message(
        f"{username} is back in: new PIN set, every lock lifted. The code used is spent; above "
        "is the next, shown once: keep it where the last one was"
    )


@app.command("recovery-code")
def recovery_code(ctx: typer.Context) -> None:
    """Make yourself a new recovery code (admins), printed once on stdout; the one before
    stops working. Kept on paper, it lets you back in when locked out: biobank user recover."""
    from biobank.services import one_time_codes

    with work(ctx) as (session, actor):
        code = one_time_codes.issue_recovery_code(session, actor=actor)
    typer.echo(code)
    message(f"a new recovery code for {actor.username}: keep it on paper, away from workstations")


@app.command()
def deactivate(
    ctx: typer.Context,
    username: str,
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the audit trail)."),
) -> None:
    """Deactivate a user (users are never deleted; the audit trail keeps naming them)."""
    from biobank.services import users

    with work(ctx) as (session, actor):
        users.deactivate_user(session, actor=actor, username=username, reason=reason)
    message(f"deactivated {username}")


@app.command()
def unlock(
    ctx: typer.Context,
    username: str,
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the audit trail)."),
) -> None:
    """Lift a user's locks after wrong PINs, at every workstation, before they run out
    (admins)."""
    from biobank.services import identity

    with work(ctx) as (session, actor):
        identity.unlock_user(session, actor=actor, username=username, reason=reason)
    message(f"unlocked {username}")


@app.command("sign-in")
def sign_in_policy(
    ctx: typer.Context,
    # text, checked by the service against its choices (`identity.SignInPolicy`), so that
    # this group's help does not import the database layer
    policy: str | None = typer.Argument(
        None, help="required: the CLI needs a PIN or a token; trusted: naming the user is enough."
    ),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the audit trail)."),
    json: JsonOption = False,
) -> None:
    """Show or set (admins) whether the CLI must prove who runs it. The default is `required`
    on a PostgreSQL server and `trusted` on the embedded SQLite file."""
    from biobank.services import identity

    with work(ctx, readonly=policy is None) as (session, actor):
        if policy is not None:
            identity.set_sign_in_policy(session, actor=actor, policy=policy, reason=reason)
        current = identity.sign_in_policy(session)
    if json:
        emit_json({"sign_in": current.value})
    else:
        typer.echo(current.value)


tokens = typer.Typer(
    help="Personal tokens: how scripts prove who runs them (set BIOBANK_TOKEN).",
    no_args_is_help=True,
)
app.add_typer(tokens, name="token")


@tokens.command("create")
def token_create(
    ctx: typer.Context,
    label: str = typer.Option("", "--label", help="What the token is for (e.g. the script)."),
    days: int | None = typer.Option(None, "--days", min=1, help="Expire after this many days."),
    pin_stdin: bool = typer.Option(
        False, "--pin-stdin", help="Sign in with the PIN on stdin's first line (for scripts)."
    ),
    json: JsonOption = False,
) -> None:
    """Make a personal token for yourself; the secret is printed once, on stdout. Where
    sign-in is required, a provisioning script gives the PIN with --pin-stdin: a wrong one
    counts towards the lockout as a typed one does."""
    from biobank.services import identity

    state(ctx).actor(pin_stdin=pin_stdin)  # signed in before the unit of work
    with work(ctx) as (session, actor):
        token, secret = identity.create_token(session, actor=actor, label=label, days=days)
    if json:
        emit_json({**token.model_dump(mode="json"), "secret": secret})
    else:
        typer.echo(secret)
    message(f"token {token.id} for {token.username}: keep it secret; use it as BIOBANK_TOKEN")


@tokens.command("list")
def token_list(
    ctx: typer.Context,
    username: str | None = typer.Option(
        None, "--of", help="Another user's tokens (admins; default: yours, or everyone's)."
    ),
    json: JsonOption = False,
) -> None:
    """List personal tokens (never their secrets)."""
    from biobank.services import identity

    with work(ctx, readonly=True) as (session, actor):
        rows = identity.list_tokens(session, actor=actor, username=username)
    if json:
        emit_json(rows)
        return

    def when(moment) -> str:
        return moment.strftime("%Y-%m-%d %H:%M") if moment else ""

    emit_table(
        ["id", "user", "label", "created", "expires", "revoked"],
        [
            (t.id, t.username, t.label, when(t.created_at), when(t.expires_at), when(t.revoked_at))
            for t in rows
        ],
    )


@tokens.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: int = typer.Argument(..., metavar="ID"),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the audit trail)."),
) -> None:
    """Revoke a personal token (yours; admins: anyone's)."""
    from biobank.services import identity

    with work(ctx) as (session, actor):
        identity.revoke_token(session, actor=actor, token_id=token_id, reason=reason)
    message(f"revoked token {token_id}")
