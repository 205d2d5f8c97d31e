"""Users and their PINs (hashed with Argon2id, a memory-hard KDF). Signing in is
`biobank.services.identity`; the codes that stand in for a missing or forgotten PIN are
`biobank.services.one_time_codes`."""

from __future__ import annotations

import re

import sqlalchemy as sa
from argon2 import PasswordHasher
from sqlmodel import Session, col, func, select

from biobank.db import flush
from biobank.domain.permissions import SYSTEM, Actor, Permission, require
from biobank.domain.vocabulary import Role
from biobank.errors import (
    AlreadyExists,
    DatabaseNotReady,
    NotFound,
    ValidationError,
    parse_choice,
)
from biobank.models import PinLockout, User, UserRead
from biobank.services import audit

BOOTSTRAP_ADMIN = "admin"
USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
PIN = re.compile(r"^[0-9]{4,12}$")
# audit entries say only whether a PIN or a code is set
HIDDEN = frozenset({"pin_hash", "enrolment_code_sha256", "recovery_code_sha256"})
_hasher = PasswordHasher()


def user_read(user: User) -> UserRead:
    """A user as returned to callers: whether a PIN is set, never its hash."""
    assert user.id is not None
    return UserRead(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        active=user.active,
        has_pin=user.pin_hash is not None,
        badge=user.badge,
        created_at=user.created_at,
        locked_until=user.locked_until,
        enrolment_expires_at=user.enrolment_expires_at,
    )


def hash_pin(pin: str) -> str:
    """A PIN's Argon2id hash, if it has the form of a PIN."""
    if not PIN.match(pin):
        raise ValidationError("a PIN is 4 to 12 digits", field="pin", value="(hidden)")
    return _hasher.hash(pin)


def find_user(session: Session, username: str, *, lock: bool = False) -> User | None:
    """The user named; `lock`ed to this unit of work where what is read decides what is
    written (a sign-in's count of wrong PINs): others doing the same wait their turn."""
    query = select(User).where(User.username == username)
    if lock:  # (and read afresh: a copy this session holds may be older than the lock)
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.exec(query).first()


def get_user(session: Session, username: str) -> User:
    """The user named, or NotFound."""
    user = find_user(session, username)
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
    """Create a user with a role; one made without a PIN sets it with an enrolment code
    (`issue_enrolment_code`)."""
    require(actor, Permission.manage_users)
    if not USERNAME.match(username):
        raise ValidationError(
            "a username is 2-64 characters: lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter",
            field="username",
            value=username,
        )
    role = parse_choice(Role, role, field="role")
    if session.exec(select(User.id).where(User.username == username)).first() is not None:
        raise AlreadyExists(f"user {username!r} already exists", field="username", value=username)
    user = User(
        username=username,
        display_name=display_name,
        role=role,
        pin_hash=hash_pin(pin) if pin is not None else None,
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
        after=audit.snapshot(user, hide=HIDDEN),
    )
    return user_read(user)


def list_users(session: Session, *, actor: Actor, include_inactive: bool = True) -> list[UserRead]:
    """Every user by name, deactivated ones too unless `include_inactive` is False."""
    require(actor, Permission.manage_users)
    query = select(User).order_by(User.username)
    if not include_inactive:
        query = query.where(User.active)
    return [user_read(u) for u in session.exec(query)]


def set_pin(
    session: Session, *, actor: Actor, username: str, pin: str, reason: str | None = None
) -> UserRead:
    """Admins set anyone's PIN; every user may change their own. A new PIN lifts every lock
    and voids an enrolment code."""
    if actor.username != username:
        require(actor, Permission.manage_users)
    user = get_user(session, username)
    with audit.audited(session, user, actor=actor, action="user.set_pin", entity="user",
                       reason=reason, hide=HIDDEN):  # fmt: skip
        user.pin_hash = hash_pin(pin)
        user.enrolment_code_sha256 = user.enrolment_expires_at = None
        lift_locks(session, user)
    return user_read(user)


def deactivate_user(
    session: Session, *, actor: Actor, username: str, reason: str | None = None
) -> UserRead:
    """Users are deactivated, never deleted: the audit trail keeps naming them."""
    require(actor, Permission.manage_users)
    user = get_user(session, username)
    if user.username == actor.username:
        raise ValidationError("you cannot deactivate yourself", field="username", value=username)
    if user.role == Role.admin and _active_admins(session) <= 1:
        raise ValidationError(
            "the last active admin cannot be deactivated", field="username", value=username
        )
    with audit.audited(session, user, actor=actor, action="user.deactivate", entity="user",
                       reason=reason, hide=HIDDEN):  # fmt: skip
        user.active = False
    return user_read(user)


def lift_locks(session: Session, user: User) -> None:
    """Forget a user's wrong PINs and locks, everywhere (the caller saves the user)."""
    user.failed_pins, user.lockouts, user.locked_until = 0, 0, None
    session.execute(sa.delete(PinLockout).where(col(PinLockout.user_id) == user.id))


def _active_admins(session: Session) -> int:
    return session.exec(
        select(func.count()).select_from(User).where(User.role == Role.admin, User.active)
    ).one()


def ensure_bootstrap_admin(
    session: Session, *, pin: str | None = None, pin_required: bool = False
) -> UserRead | None:
    """A new database starts with one admin, `admin`, with `pin`; without one only where
    that is no risk (not `pin_required`: on a server anyone could claim a PIN-less admin).
    Returns it if created."""
    if session.execute(sa.select(User.__table__.c.id).limit(1)).first() is not None:
        return None  # (a Core query: every start asks, and need not set up the ORM's mappers)
    if pin is None and pin_required:
        raise DatabaseNotReady(
            "the database has no users yet: its first admin is made, with a PIN, by "
            "`biobank db upgrade` in a terminal (or with --admin-pin-stdin)"
        )
    return add_user(
        session,
        actor=SYSTEM,
        username=BOOTSTRAP_ADMIN,
        role=Role.admin,
        display_name="Administrator",
        pin=pin,
    )
