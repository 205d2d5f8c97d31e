"""Who is acting: PIN sign-in (with locks after repeated wrong PINs), badges, personal
tokens for scripts, and the sign-in policy that says whether the CLI may be told a name.

On a shared PostgreSQL server anyone with the connection settings could type `--user admin`,
so there the CLI asks for proof (a PIN, or a personal token) by default; on the embedded SQLite
file the operating system's account is the boundary and naming oneself is enough, unless an
admin requires sign-in there too. The policy lives in the database, so no workstation can
choose its own.

Wrong PINs lock a user at the workstation they were typed at, so that anyone's guesses at one
bench do not lock the user out of the others; many from several workstations (a workstation's
name is what it says it is) lock the whole account. Each lock lasts twice the one before, until
a right PIN; an admin lifts them sooner, and the last admin has a recovery code.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, col, select

from biobank.db import flush
from biobank.domain.permissions import SYSTEM, Actor, Permission, require
from biobank.domain.vocabulary import Role
from biobank.errors import AuthenticationFailed, NotFound, ValidationError, parse_choice
from biobank.models import PersonalToken, PersonalTokenRead, PinLockout, SiteSetting, User, utcnow
from biobank.services import audit
from biobank.services.users import HIDDEN, find_user, get_user, lift_locks

MAX_WRONG_PINS = 5  # in a row at one workstation lock the user there…
ACCOUNT_WRONG_PINS = 25  # …and in a row at all of them together, everywhere…
LOCKOUT = timedelta(minutes=15)  # …this long, twice as long after each lock…
LONGEST_LOCKOUT = timedelta(days=1)  # …up to this (an admin can unlock sooner)
TOKEN_PREFIX = "bbk_"
_POLICY_KEY = "cli_sign_in"
_REFUSED = "unknown user, inactive user, or wrong PIN"
_hasher = PasswordHasher()


class SignInPolicy(enum.StrEnum):
    trusted = "trusted"  # the CLI acts as the user it is told (--user, BIOBANK_USER)
    required = "required"  # the CLI needs a PIN or a personal token


def actor_of(user: User, workstation: str) -> Actor:
    """Who a signed-in user acts as at this workstation."""
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
    """Choose whether the CLI may be told who is acting or needs a PIN or token. Requiring
    it needs a PIN of one's own first, so the admin cannot lock themselves out."""
    require(actor, Permission.manage_users)
    policy = parse_choice(SignInPolicy, policy, field="policy")
    user = find_user(session, actor.username)
    if policy is SignInPolicy.required and (user is None or user.pin_hash is None):
        raise ValidationError(
            f"set your own PIN before requiring sign-in, or you could not sign in after: "
            f"biobank user set-pin {actor.username}",
            field="policy",
            value=policy.value,
        )
    row = session.exec(select(SiteSetting).where(SiteSetting.key == _POLICY_KEY)).first()
    row = row or SiteSetting(key=_POLICY_KEY, value=policy.value)
    with audit.audited(session, row, actor=actor, action="site.set_sign_in_policy",
                       entity="site_setting", reason=reason):  # fmt: skip
        row.value = policy.value
    return policy


# --- PINs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignInAttempt:
    """The outcome of a sign-in (by PIN, enrolment or recovery code). A refusal is returned,
    not raised, so that the caller's unit of work commits the count of wrong PINs and the
    audit entry; `accepted()` then raises it."""

    actor: Actor | None
    refusal: str | None = None

    def accepted(self) -> Actor:
        if self.actor is None:
            raise AuthenticationFailed(self.refusal or _REFUSED, field="pin")
        return self.actor


def sign_in(
    session: Session, *, username: str, pin: str, workstation: str, now: datetime | None = None
) -> SignInAttempt:
    """Check a PIN. The refusal never says whether the name or the PIN was wrong; a locked
    user is told so, and nothing is checked. The user's row is locked to this unit of work
    (SQLite: the whole file is), so attempts made at once are counted one after another."""
    now = now or utcnow()
    user = find_user(session, username.strip().lower(), lock=True)
    if user is None or not user.active or user.pin_hash is None:
        return SignInAttempt(None, _REFUSED)
    here = _lockout_at(session, user, workstation)
    refusal = _lock_in_force(user, here, now)
    if refusal is not None:
        return SignInAttempt(None, refusal)
    try:
        _hasher.verify(user.pin_hash, pin)
    except (VerificationError, InvalidHashError):
        return _wrong_pin(session, user, here, now)
    if here.id is not None or (user.failed_pins, user.lockouts, user.locked_until) != (0, 0, None):
        with audit.audited(session, user, actor=system_at(workstation),
                           action="user.pin_accepted", entity="user", hide=HIDDEN):  # fmt: skip
            if here.id is not None:  # this workstation's wrong PINs are forgiven, not others'
                session.delete(here)
            user.failed_pins, user.lockouts, user.locked_until = 0, 0, None
    return SignInAttempt(actor_of(user, workstation))


def _lockout_at(session: Session, user: User, workstation: str) -> PinLockout:
    """The user's wrong PINs at this workstation (a new, unsaved count if none)."""
    assert user.id is not None
    found = session.exec(
        select(PinLockout).where(
            PinLockout.user_id == user.id, PinLockout.workstation == workstation
        )
    ).first()
    return found or PinLockout(user_id=user.id, workstation=workstation)


def _lock_in_force(user: User, here: PinLockout, now: datetime) -> str | None:
    """Why the user may not sign in at this workstation now, if a lock says so."""
    if user.locked_until is not None and user.locked_until > now:
        why, until = f"{ACCOUNT_WRONG_PINS} wrong PINs at several workstations", user.locked_until
        elsewhere = ""
    elif here.locked_until is not None and here.locked_until > now:
        why, until = f"{MAX_WRONG_PINS} wrong PINs at {here.workstation}", here.locked_until
        elsewhere = " or at another workstation"
    else:
        return None
    way_back = f"ask an admin: biobank user unlock {user.username}"
    if user.role is Role.admin:
        way_back += f"; or use your recovery code: biobank user recover {user.username}"
    return (
        f"{user.username} is locked after {why}; try again after "
        f"{until.strftime('%Y-%m-%d %H:%M UTC')}{elsewhere}, or {way_back}"
    )


def _wrong_pin(session: Session, user: User, here: PinLockout, now: datetime) -> SignInAttempt:
    """Count a wrong PIN at this workstation and for the account; either count may lock (the
    entry's action and reason say which, so they are known only after the count)."""
    before = audit.snapshot(user, hide=HIDDEN)
    locks_here = _counted(here, MAX_WRONG_PINS, now)
    locks_everywhere = _counted(user, ACCOUNT_WRONG_PINS, now)
    session.add(here)
    action = "user.wrong_pin"
    if locks_here or locks_everywhere:
        action = "user.account_locked" if locks_everywhere else "user.locked"
    locked = _lock_in_force(user, here, now)
    session.add(user)
    flush(session)
    audit.record(session, actor=system_at(here.workstation), action=action, entity="user",
                 entity_id=user.id, before=before, after=audit.snapshot(user, hide=HIDDEN),
                 reason=locked)  # fmt: skip
    return SignInAttempt(None, locked or _REFUSED)


def _counted(wrong: User | PinLockout, most: int, now: datetime) -> bool:
    """Count one more wrong PIN in a row; the `most`-th locks: for `LOCKOUT`, doubled with
    each lock since the last right PIN, at most `LONGEST_LOCKOUT`. True if it locks."""
    wrong.failed_pins += 1
    if wrong.failed_pins < most:
        return False
    wrong.failed_pins, wrong.lockouts = 0, wrong.lockouts + 1
    wrong.locked_until = now + min(LOCKOUT * 2 ** (wrong.lockouts - 1), LONGEST_LOCKOUT)
    return True


def unlock_user(
    session: Session, *, actor: Actor, username: str, reason: str | None = None
) -> None:
    """An admin lifts a user's locks, at every workstation, before they run out (after
    checking who is asking)."""
    require(actor, Permission.manage_users)
    user = get_user(session, username)
    with audit.audited(session, user, actor=actor, action="user.unlock", entity="user",
                       reason=reason, hide=HIDDEN):  # fmt: skip
        lift_locks(session, user)


def system_at(workstation: str) -> Actor:
    """Who records what someone not signed in yet tried: the system, at the workstation it
    came from."""
    return Actor(SYSTEM.user_id, SYSTEM.username, SYSTEM.role, workstation)


# --- badges and names ------------------------------------------------------------------------


def authenticate_badge(
    session: Session, *, badge: str, workstation: str, now: datetime | None = None
) -> Actor:
    """Sign in by scanning a user badge (the badge is the credential). A lock earned by
    wrong PINs holds for the badge too: a found or copied badge is no way around it."""
    user = session.exec(select(User).where(User.badge == badge.strip().upper())).first()
    if user is None or not user.active:
        raise AuthenticationFailed("unknown or inactive badge", field="badge")
    refusal = _lock_in_force(user, _lockout_at(session, user, workstation), now or utcnow())
    if refusal is not None:
        raise AuthenticationFailed(refusal, field="badge")
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
    user = get_user(session, username)
    if not user.active:
        raise AuthenticationFailed(
            f"user {username!r} is deactivated", field="user", value=username
        )
    return actor_of(user, workstation)


@dataclass(frozen=True)
class Identified:
    """Who a front end says is acting, and what they must still show: their PIN, or (a user
    without one, setting their own) the enrolment code an admin was given for them."""

    actor: Actor
    needs_pin: bool = False
    needs_enrolment_code: bool = False


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
    sign-in is required. A user without a PIN yet may only set their own (`claiming_pin_of`),
    showing the enrolment code an admin made for them: nobody claims an account without a
    PIN."""
    if token is not None:
        actor = authenticate_token(session, secret=token, workstation=workstation)
        if username is not None and username != actor.username:
            raise AuthenticationFailed(
                f"the personal token belongs to {actor.username}, not {username}",
                field="user",
                value=username,
            )
        return Identified(actor)
    actor = actor_for(session, username=username, workstation=workstation)
    if sign_in_policy(session) is SignInPolicy.trusted:
        return Identified(actor)
    if get_user(session, actor.username).pin_hash is not None:
        return Identified(actor, needs_pin=True)
    if claiming_pin_of == actor.username:
        return Identified(actor, needs_enrolment_code=True)
    raise AuthenticationFailed(
        f"{actor.username} has no PIN yet and this database requires sign-in; they set one "
        f"with the enrolment code an admin gave them: biobank -u {actor.username} user set-pin "
        f"{actor.username}",
        field="user",
        value=actor.username,
    )


# --- personal tokens -----------------------------------------------------------------------


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.strip().encode()).hexdigest()


def _token_read(token: PersonalToken, username: str) -> PersonalTokenRead:
    assert token.id is not None
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
    user = get_user(session, actor.username)
    assert user.id is not None
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
    query = select(PersonalToken, User.username).join(User, col(User.id) == PersonalToken.user_id)
    if username is None and not actor.can(Permission.manage_users):
        username = actor.username
    if username is not None:
        if username != actor.username:
            require(actor, Permission.manage_users)
        query = query.where(User.username == username)
    rows = session.exec(query.order_by(col(PersonalToken.id))).all()
    return [_token_read(token, name) for token, name in rows]


def revoke_token(
    session: Session, *, actor: Actor, token_id: int, reason: str | None = None
) -> PersonalTokenRead:
    """Revoke one's own token, or (admins) anyone's. Revoked tokens stay listed."""
    row = session.exec(
        select(PersonalToken, User.username)
        .join(User, col(User.id) == PersonalToken.user_id)
        .where(PersonalToken.id == token_id)
    ).first()
    if row is None:
        raise NotFound(f"no personal token {token_id}", field="token", value=token_id)
    token, username = row
    if username != actor.username:
        require(actor, Permission.manage_users)
    if token.revoked_at is None:
        with audit.audited(session, token, actor=actor, action="token.revoke",
                           entity="personal_token", reason=reason,
                           hide=frozenset({"secret_sha256"})):  # fmt: skip
            token.revoked_at = utcnow()
    return _token_read(token, username)


def authenticate_token(session: Session, *, secret: str, workstation: str) -> Actor:
    """The user a personal token belongs to, if it is live and the user is active."""
    row = session.exec(
        select(PersonalToken, User)
        .join(User, col(User.id) == PersonalToken.user_id)
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
