"""Users, PINs and sign-in. PINs are hashed with Argon2id, a memory-hard KDF."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, func, select

from biobank.db import flush
from biobank.errors import AlreadyExists, AuthenticationFailed, NotFound, ValidationError
from biobank.models import Role, User, UserRead
from biobank.permissions import SYSTEM, Actor, Permission, require
from biobank.services import audit

BOOTSTRAP_ADMIN = "admin"
USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
PIN = re.compile(r"^[0-9]{4,12}$")
_HIDDEN = frozenset({"pin_hash"})
_hasher = PasswordHasher()


def _read(user: User) -> UserRead:
    return UserRead(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        active=user.active,
        has_pin=user.pin_hash is not None,
        badge=user.badge,
        created_at=user.created_at,
    )


def _check_pin(pin: str) -> str:
    if not PIN.match(pin):
        raise ValidationError("a PIN is 4 to 12 digits", field="pin", value="(hidden)")
    return _hasher.hash(pin)


def _get(session: Session, username: str) -> User:
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None:
        raise NotFound(f"no user named {username!r}", field="username", value=username)
    return user


def add_user(
    session: Session,
    *,
    actor: Actor,
    username: str,
    role: Role | str,
    display_name: str = "",
    pin: str | None = None,
    badge: str | None = None,
) -> UserRead:
    require(actor, Permission.manage_users)
    if not USERNAME.match(username):
        raise ValidationError(
            "a username is 2-64 characters: lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter",
            field="username",
            value=username,
        )
    try:
        role = Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise ValidationError(
            f"unknown role {role!r} (allowed: {allowed})", field="role", value=role
        ) from None
    if session.exec(select(User.id).where(User.username == username)).first() is not None:
        raise AlreadyExists(f"user {username!r} already exists", field="username", value=username)
    user = User(
        username=username,
        display_name=display_name,
        role=role,
        pin_hash=_check_pin(pin) if pin is not None else None,
        badge=badge.strip().upper() if badge else None,
    )
    session.add(user)
    flush(session)
    audit.record(
        session,
        actor=actor,
        action="user.add",
        entity="user",
        entity_id=user.id,
        after=audit.snapshot(user, hide=_HIDDEN),
    )
    return _read(user)


def list_users(session: Session, *, actor: Actor, include_inactive: bool = True) -> list[UserRead]:
    require(actor, Permission.manage_users)
    query = select(User).order_by(User.username)
    if not include_inactive:
        query = query.where(User.active)
    return [_read(u) for u in session.exec(query)]


def set_pin(
    session: Session, *, actor: Actor, username: str, pin: str, reason: str | None = None
) -> UserRead:
    """Admins set anyone's PIN; every user may change their own."""
    if actor.username != username:
        require(actor, Permission.manage_users)
    user = _get(session, username)
    before = audit.snapshot(user, hide=_HIDDEN)
    user.pin_hash = _check_pin(pin)
    session.add(user)
    flush(session)
    audit.record(
        session,
        actor=actor,
        action="user.set_pin",
        entity="user",
        entity_id=user.id,
        before=before,
        after=audit.snapshot(user, hide=_HIDDEN),
        reason=reason,
    )
    return _read(user)


def deactivate_user(
    session: Session, *, actor: Actor, username: str, reason: str | None = None
) -> UserRead:
    """Users are deactivated, never deleted: the audit trail keeps naming them."""
    require(actor, Permission.manage_users)
    user = _get(session, username)
    if user.username == actor.username:
        raise ValidationError("you cannot deactivate yourself", field="username", value=username)
    if user.role == Role.admin and _active_admins(session) <= 1:
        raise ValidationError(
            "the last active admin cannot be deactivated", field="username", value=username
        )
    before = audit.snapshot(user, hide=_HIDDEN)
    user.active = False
    session.add(user)
    flush(session)
    audit.record(
        session,
        actor=actor,
        action="user.deactivate",
        entity="user",
        entity_id=user.id,
        before=before,
        after=audit.snapshot(user, hide=_HIDDEN),
        reason=reason,
    )
    return _read(user)


def _active_admins(session: Session) -> int:
    return session.exec(
        select(func.count()).select_from(User).where(User.role == Role.admin, User.active)
    ).one()


def _actor(user: User, workstation: str) -> Actor:
    return Actor(user_id=user.id, username=user.username, role=user.role, workstation=workstation)


def authenticate(session: Session, *, username: str, pin: str, workstation: str) -> Actor:
    """Sign in with username and PIN. The message never says which of the two was wrong."""
    user = session.exec(select(User).where(User.username == username.strip().lower())).first()
    if user is None or not user.active or user.pin_hash is None:
        raise AuthenticationFailed("unknown user, inactive user, or wrong PIN", field="username")
    try:
        _hasher.verify(user.pin_hash, pin)
    except (VerificationError, InvalidHashError):
        raise AuthenticationFailed(
            "unknown user, inactive user, or wrong PIN", field="username"
        ) from None
    return _actor(user, workstation)


def authenticate_badge(session: Session, *, badge: str, workstation: str) -> Actor:
    """Sign in by scanning a user badge (the badge is the credential)."""
    user = session.exec(select(User).where(User.badge == badge.strip().upper())).first()
    if user is None or not user.active:
        raise AuthenticationFailed("unknown or inactive badge", field="badge")
    return _actor(user, workstation)


def actor_for(session: Session, *, username: str | None, workstation: str) -> Actor:
    """The actor a trusted front end names (the CLI's `--user`). Without a name, the only
    active user of a single-user database; otherwise the caller must say who they are."""
    if username is None:
        users = session.exec(select(User).where(User.active).limit(2)).all()
        if len(users) != 1:
            raise AuthenticationFailed(
                "several users exist: say who you are with --user NAME or BIOBANK_USER",
                field="user",
            )
        return _actor(users[0], workstation)
    user = _get(session, username)
    if not user.active:
        raise AuthenticationFailed(
            f"user {username!r} is deactivated", field="user", value=username
        )
    return _actor(user, workstation)


def ensure_bootstrap_admin(session: Session) -> UserRead | None:
    """A new database starts with one admin, `admin`, without a PIN. Returns it if created."""
    if session.exec(select(User.id).limit(1)).first() is not None:
        return None
    return add_user(
        session,
        actor=SYSTEM,
        username=BOOTSTRAP_ADMIN,
        role=Role.admin,
        display_name="Administrator",
    )
