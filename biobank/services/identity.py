"""Who is acting: PIN sign-in (with a lockout after repeated wrong PINs), badges, personal
tokens for scripts, and the sign-in policy that says whether the CLI may be told a name.

On a shared PostgreSQL server anyone with the connection settings could type `--user admin`,
so there the CLI asks for proof (a PIN, or a personal token) by default; on the embedded SQLite
file the operating system's account is the boundary and naming oneself is enough, unless an
admin requires sign-in there too. The policy lives in the database, so no workstation can
choose its own.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, select

from biobank.db import flush
from biobank.errors import AuthenticationFailed, NotFound, ValidationError, parse_choice
from biobank.models import PersonalToken, PersonalTokenRead, SiteSetting, User, utcnow
from biobank.permissions import SYSTEM, Actor, Permission, require
from biobank.services import audit
from biobank.services.users import HIDDEN, find_user, save_user

MAX_WRONG_PINS = 5  # in a row; the next wrong one locks PIN sign-in…
LOCKOUT = timedelta(minutes=15)  # …for this long (an admin can unlock it sooner)
TOKEN_PREFIX = "bbk_"
_POLICY_KEY = "cli_sign_in"
_REFUSED = "unknown user, inactive user, or wrong PIN"
_hasher = PasswordHasher()


class SignInPolicy(enum.StrEnum):
    trusted = "trusted"  # the CLI acts as the user it is told (--user, BIOBANK_USER)
    required = "required"  # the CLI needs a PIN or a personal token


def actor_of(user: User, workstation: str) -> Actor:
    return Actor(user_id=user.id, username=user.username, role=user.role, workstation=workstation)


# --- the policy ----------------------------------------------------------------------------


def sign_in_policy(session: Session) -> SignInPolicy:
    """The admins' choice, or the default for the engine: required on a server."""
    value = session.exec(select(SiteSetting.value).where(SiteSetting.key == _POLICY_KEY)).first()
    if value is not None:
        return SignInPolicy(value)
    embedded = session.get_bind().dialect.name == "sqlite"
    return SignInPolicy.trusted if embedded else SignInPolicy.required


def set_sign_in_policy(
    session: Session, *, actor: Actor, policy: SignInPolicy | str, reason: str | None = None
) -> SignInPolicy:
    require(actor, Permission.manage_users)
    policy = parse_choice(SignInPolicy, policy, field="policy")
    row = session.exec(select(SiteSetting).where(SiteSetting.key == _POLICY_KEY)).first()
    before = audit.snapshot(row) if row is not None else None
    row = row or SiteSetting(key=_POLICY_KEY, value=policy.value)
    row.value = policy.value
    session.add(row)
    flush(session)
    audit.record(
        session,
        actor=actor,
        action="site.set_sign_in_policy",
        entity="site_setting",
        entity_id=row.id,
        before=before,
        after=audit.snapshot(row),
        reason=reason,
    )
    return policy


# --- PINs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignInAttempt:
    """The outcome of a PIN sign-in. A refusal is returned, not raised, so that the caller's
    unit of work commits the count of wrong PINs; `accepted()` then raises it."""

    actor: Actor | None
    refusal: str | None = None

    def accepted(self) -> Actor:
        if self.actor is None:
            raise AuthenticationFailed(self.refusal or _REFUSED, field="pin")
        return self.actor


def sign_in(
    session: Session, *, username: str, pin: str, workstation: str, now: datetime | None = None
) -> SignInAttempt:
    """Check a PIN. The refusal never says whether the name or the PIN was wrong; after
    `MAX_WRONG_PINS` wrong PINs in a row the account is locked for `LOCKOUT`, and says so."""
    now = now or utcnow()
    user = find_user(session, username.strip().lower())
    if user is None or not user.active or user.pin_hash is None:
        return SignInAttempt(None, _REFUSED)
    if user.locked_until is not None and user.locked_until > now:
        return SignInAttempt(None, _locked_message(user))
    before = audit.snapshot(user, hide=HIDDEN)
    try:
        _hasher.verify(user.pin_hash, pin)
    except (VerificationError, InvalidHashError):
        user.failed_pins += 1
        locks = user.failed_pins >= MAX_WRONG_PINS
        if locks:
            user.failed_pins, user.locked_until = 0, now + LOCKOUT
        action = "user.locked" if locks else "user.wrong_pin"
        save_user(session, user, actor=_nobody_yet(workstation), action=action, before=before)
        return SignInAttempt(None, _locked_message(user) if locks else _REFUSED)
    if user.failed_pins or user.locked_until is not None:
        user.failed_pins, user.locked_until = 0, None
        save_user(
            session, user, actor=_nobody_yet(workstation), action="user.pin_accepted", before=before
        )
    return SignInAttempt(actor_of(user, workstation))


def unlock_user(
    session: Session, *, actor: Actor, username: str, reason: str | None = None
) -> None:
    """An admin lifts a lockout before it runs out (after checking who is asking)."""
    require(actor, Permission.manage_users)
    user = _existing(session, username)
    before = audit.snapshot(user, hide=HIDDEN)
    user.failed_pins, user.locked_until = 0, None
    save_user(session, user, actor=actor, action="user.unlock", before=before, reason=reason)


def _locked_message(user: User) -> str:
    until = user.locked_until.strftime("%H:%M UTC") if user.locked_until else "later"
    return (
        f"{user.username} is locked after {MAX_WRONG_PINS} wrong PINs; try again after {until}, "
        f"or ask an admin: biobank user unlock {user.username}"
    )


def _nobody_yet(workstation: str) -> Actor:
    """Who records a sign-in attempt: the system, at the workstation it came from."""
    return Actor(SYSTEM.user_id, SYSTEM.username, SYSTEM.role, workstation)


def _existing(session: Session, username: str) -> User:
    user = find_user(session, username)
    if user is None:
        raise NotFound(f"no user named {username!r}", field="username", value=username)
    return user


# --- badges and names ------------------------------------------------------------------------


def authenticate_badge(session: Session, *, badge: str, workstation: str) -> Actor:
    """Sign in by scanning a user badge (the badge is the credential)."""
    user = session.exec(select(User).where(User.badge == badge.strip().upper())).first()
    if user is None or not user.active:
        raise AuthenticationFailed("unknown or inactive badge", field="badge")
    return actor_of(user, workstation)


def actor_for(session: Session, *, username: str | None, workstation: str) -> Actor:
    """The actor a trusted front end names (the CLI's `--user` under the `trusted` policy).
    Without a name, the only active user of a single-user database; otherwise the caller must
    say who they are."""
    if username is None:
        users = session.exec(select(User).where(User.active).limit(2)).all()
        if len(users) != 1:
            raise AuthenticationFailed(
                "several users exist: say who you are with --user NAME or BIOBANK_USER",
                field="user",
            )
        return actor_of(users[0], workstation)
    user = _existing(session, username)
    if not user.active:
        raise AuthenticationFailed(
            f"user {username!r} is deactivated", field="user", value=username
        )
    return actor_of(user, workstation)


@dataclass(frozen=True)
class Identified:
    """Who a front end says is acting, and whether they still have to type their PIN."""

    actor: Actor
    needs_pin: bool


def identify(
    session: Session,
    *,
    username: str | None,
    token: str | None,
    workstation: str,
    claiming_pin_of: str | None = None,
) -> Identified:
    """The CLI's acting user under the database's policy: the owner of a personal token if
    one is given; else the user named (or the only user), who must also type their PIN where
    sign-in is required. A user without a PIN yet may act only to set their own
    (`claiming_pin_of`): nobody takes over another account that way."""
    if token is not None:
        actor = authenticate_token(session, secret=token, workstation=workstation)
        if username is not None and username != actor.username:
            raise AuthenticationFailed(
                f"the personal token belongs to {actor.username}, not {username}",
                field="user",
                value=username,
            )
        return Identified(actor, needs_pin=False)
    actor = actor_for(session, username=username, workstation=workstation)
    if sign_in_policy(session) is SignInPolicy.trusted:
        return Identified(actor, needs_pin=False)
    if find_user(session, actor.username).pin_hash is not None:
        return Identified(actor, needs_pin=True)
    if claiming_pin_of == actor.username:
        return Identified(actor, needs_pin=False)
    raise AuthenticationFailed(
        f"{actor.username} has no PIN yet and this database requires sign-in; "
        f"set one first: biobank user set-pin {actor.username}",
        field="user",
        value=actor.username,
    )


# --- personal tokens -----------------------------------------------------------------------


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.strip().encode()).hexdigest()


def _token_read(token: PersonalToken, username: str) -> PersonalTokenRead:
    return PersonalTokenRead(
        id=token.id,
        username=username,
        label=token.label,
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
    )


def create_token(
    session: Session, *, actor: Actor, label: str = "", days: int | None = None
) -> tuple[PersonalTokenRead, str]:
    """A new personal token for the acting user; the secret is returned once, never stored."""
    if days is not None and days < 1:
        raise ValidationError("a token lasts at least 1 day", field="days", value=days)
    user = _existing(session, actor.username)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = PersonalToken(
        user_id=user.id,
        label=label.strip(),
        secret_sha256=_digest(secret),
        expires_at=utcnow() + timedelta(days=days) if days else None,
    )
    session.add(token)
    flush(session)
    audit.record(
        session,
        actor=actor,
        action="token.create",
        entity="personal_token",
        entity_id=token.id,
        after=audit.snapshot(token, hide=frozenset({"secret_sha256"})),
    )
    return _token_read(token, user.username), secret


def list_tokens(
    session: Session, *, actor: Actor, username: str | None = None
) -> list[PersonalTokenRead]:
    """One's own tokens; admins may list anyone's (`username=None` for an admin: everyone's)."""
    query = select(PersonalToken, User.username).join(User, User.id == PersonalToken.user_id)
    if username is None and not actor.can(Permission.manage_users):
        username = actor.username
    if username is not None:
        if username != actor.username:
            require(actor, Permission.manage_users)
        query = query.where(User.username == username)
    rows = session.exec(query.order_by(PersonalToken.id)).all()
    return [_token_read(token, name) for token, name in rows]


def revoke_token(
    session: Session, *, actor: Actor, token_id: int, reason: str | None = None
) -> PersonalTokenRead:
    """Revoke one's own token, or (admins) anyone's. Revoked tokens stay listed."""
    row = session.exec(
        select(PersonalToken, User.username)
        .join(User, User.id == PersonalToken.user_id)
        .where(PersonalToken.id == token_id)
    ).first()
    if row is None:
        raise NotFound(f"no personal token {token_id}", field="token", value=token_id)
    token, username = row
    if username != actor.username:
        require(actor, Permission.manage_users)
    if token.revoked_at is None:
        before = audit.snapshot(token, hide=frozenset({"secret_sha256"}))
        token.revoked_at = utcnow()
        session.add(token)
        flush(session)
        audit.record(
            session,
            actor=actor,
            action="token.revoke",
            entity="personal_token",
            entity_id=token.id,
            before=before,
            after=audit.snapshot(token, hide=frozenset({"secret_sha256"})),
            reason=reason,
        )
    return _token_read(token, username)


def authenticate_token(session: Session, *, secret: str, workstation: str) -> Actor:
    """The user a personal token belongs to, if it is live and the user is active."""
    row = session.exec(
        select(PersonalToken, User)
        .join(User, User.id == PersonalToken.user_id)
        .where(PersonalToken.secret_sha256 == _digest(secret))
    ).first()
    refused = AuthenticationFailed(
        "the personal token (BIOBANK_TOKEN) is unknown, revoked or expired", field="token"
    )
    if row is None:
        raise refused
    token, user = row
    expired = token.expires_at is not None and token.expires_at <= utcnow()
    if token.revoked_at is not None or expired or not user.active:
        raise refused
    return actor_of(user, workstation)
