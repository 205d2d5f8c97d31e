"""`biobank user …`: accounts, roles and PINs."""

from __future__ import annotations

import typer

from biobank.cli.common import JsonOption, emit_json, emit_table, message, read_pin, work
from biobank.models import Role
from biobank.services import users

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
        ["username", "role", "name", "pin", "active"],
        [
            (u.username, u.role.value, u.display_name, "set" if u.has_pin else "-", u.active)
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
    """Set a user's PIN (admins for anyone, users for themselves)."""
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
