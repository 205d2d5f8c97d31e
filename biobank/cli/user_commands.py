"""`biobank user …`: accounts, roles, PINs, lockouts, personal tokens and the sign-in policy."""

from __future__ import annotations

import typer

from biobank.cli.common import (
    JsonOption,
    emit_json,
    emit_table,
    message,
    read_pin,
    state,
    work,
)
from biobank.models import Role
from biobank.services import identity, users

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
    """Add a user."""
    pin = read_pin(from_stdin=pin_stdin) if (with_pin or pin_stdin) else None
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
    if json:
        emit_json(user)
    else:
        message(f"added {user.role.value} {user.username}")
        if not user.has_pin:
            message(f"set a PIN with: biobank user set-pin {user.username}")


@app.command("list")
def list_(ctx: typer.Context, json: JsonOption = False) -> None:
    """List users."""
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
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the audit trail)."),
) -> None:
    """Set a user's PIN (admins for anyone, users for themselves). A new PIN lifts a lockout."""
    state(ctx).actor(claiming_pin_of=username)  # sign in before asking for the new PIN
    pin = read_pin(from_stdin=pin_stdin)
    with work(ctx) as (session, actor):
        users.set_pin(session, actor=actor, username=username, pin=pin, reason=reason)
    message(f"PIN set for {username}")


@app.command()
def deactivate(
    ctx: typer.Context,
    username: str,
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the audit trail)."),
) -> None:
    """Deactivate a user (users are never deleted; the audit trail keeps naming them)."""
    with work(ctx) as (session, actor):
        users.deactivate_user(session, actor=actor, username=username, reason=reason)
    message(f"deactivated {username}")


@app.command()
def unlock(
    ctx: typer.Context,
    username: str,
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the audit trail)."),
) -> None:
    """Lift a lockout after repeated wrong PINs, before it runs out (admins)."""
    with work(ctx) as (session, actor):
        identity.unlock_user(session, actor=actor, username=username, reason=reason)
    message(f"unlocked {username}")


@app.command("sign-in")
def sign_in_policy(
    ctx: typer.Context,
    policy: identity.SignInPolicy | None = typer.Argument(
        None, help="required: the CLI needs a PIN or a token; trusted: naming the user is enough."
    ),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the audit trail)."),
    json: JsonOption = False,
) -> None:
    """Show or set (admins) whether the CLI must prove who runs it. The default is `required`
    on a PostgreSQL server and `trusted` on the embedded SQLite file."""
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
    json: JsonOption = False,
) -> None:
    """Make a personal token for yourself; the secret is printed once, on stdout."""
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
    with work(ctx) as (session, actor):
        identity.revoke_token(session, actor=actor, token_id=token_id, reason=reason)
    message(f"revoked token {token_id}")
