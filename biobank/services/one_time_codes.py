"""Codes that stand in for a PIN, once: the enrolment code with which a user who has no PIN
sets their first, and the recovery code with which an admin locked out gets back in.

Where sign-in is required, an account without a PIN could otherwise be claimed by whoever
names it first, and the last admin locked out by wrong PINs would have nobody to unlock them.
Each code is shown once to whoever made it, kept only as a SHA-256 digest (it is random
enough that a slow hash would add nothing), and void once used or replaced; an enrolment code
also expires. Every use, right or wrong, is in the audit trail.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlmodel import Session

from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import Role
from biobank.errors import ValidationError
from biobank.models import User, UserRead, utcnow
from biobank.services import audit
from biobank.services.identity import SignInAttempt, actor_of, system_at
from biobank.services.users import (
    HIDDEN,
    find_user,
    get_user,
    hash_pin,
    lift_locks,
    user_read,
)

ENROLMENT = timedelta(hours=72)  # how long an enrolment code lasts
_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # read aloud or typed: no 0/O, 1/I
_GROUPS, _GROUP = 4, 4  # XXXX-XXXX-XXXX-XXXX: 80 random bits
_WRONG_ENROLMENT = "unknown user, or a wrong or used enrolment code"
_WRONG_RECOVERY = "unknown admin, or a wrong or used recovery code"


def _new_code() -> str:
    groups = ("".join(secrets.choice(_ALPHABET) for _ in range(_GROUP)) for _ in range(_GROUPS))
    return "-".join(groups)


def _digest(code: str) -> str:
    """Of the code as typed, in any case, with or without its dashes and spaces."""
    typed = "".join(character for character in code.upper() if character.isalnum())
    return hashlib.sha256(typed.encode()).hexdigest()


def _matches(digest: str | None, code: str) -> bool:
    return digest is not None and hmac.compare_digest(digest, _digest(code))


# --- enrolment ----------------------------------------------------------------------------


def issue_enrolment_code(session: Session, *, actor: Actor, username: str) -> tuple[UserRead, str]:
    """A new enrolment code for a user without a PIN (the one before stops working): what
    they need, where sign-in is required, to set their first PIN (`enrol`). The code is
    returned once, for the admin to hand over; it lasts `ENROLMENT`."""
    require(actor, Permission.manage_users)
    user = get_user(session, username)
    if not user.active:
        raise ValidationError(f"{username} is deactivated", field="username", value=username)
    if user.pin_hash is not None:
        raise ValidationError(
            f"{username} has a PIN already; an admin may set a new one: biobank user set-pin "
            f"{username}",
            field="username",
            value=username,
        )
    code = _new_code()
    with audit.audited(session, user, actor=actor, action="user.enrolment_code", entity="user",
                       hide=HIDDEN):  # fmt: skip
        user.enrolment_code_sha256 = _digest(code)
        user.enrolment_expires_at = utcnow() + ENROLMENT
    return user_read(user), code


def enrol(
    session: Session,
    *,
    username: str,
    code: str,
    pin: str,
    workstation: str,
    now: datetime | None = None,
) -> SignInAttempt:
    """A user without a PIN sets their first with the enrolment code an admin gave them,
    and is signed in. A refusal is returned, not raised, so that the caller's unit of work
    keeps its audit entry."""
    pin_hash = hash_pin(pin)  # a PIN of the wrong form spends nothing
    user = find_user(session, username.strip().lower(), lock=True)  # used once, at once
    if user is None or not user.active or user.pin_hash is not None:
        return SignInAttempt(None, _WRONG_ENROLMENT)
    if not _matches(user.enrolment_code_sha256, code):
        _refused(session, user, workstation, "user.enrolment_refused", "wrong code")
        return SignInAttempt(None, _WRONG_ENROLMENT)
    expires = user.enrolment_expires_at  # set with the code; a code without one is spent
    if expires is None or expires <= (now or utcnow()):
        _refused(session, user, workstation, "user.enrolment_refused", "expired code")
        return SignInAttempt(
            None,
            f"the enrolment code of {user.username} has expired; ask an admin for a new one: "
            f"biobank user enrolment-code {user.username}",
        )
    actor = actor_of(user, workstation)
    with audit.audited(session, user, actor=actor, action="user.enrol", entity="user",
                       hide=HIDDEN):  # fmt: skip
        user.pin_hash = pin_hash
        user.enrolment_code_sha256 = user.enrolment_expires_at = None
    return SignInAttempt(actor)


# --- recovery -----------------------------------------------------------------------------


def issue_recovery_code(session: Session, *, actor: Actor) -> str:
    """A new recovery code for the acting admin (the one before stops working), returned
    once: to keep on paper, away from the workstations, for the day they are locked out."""
    require(actor, Permission.manage_users)
    user = get_user(session, actor.username)
    code = _new_code()
    with audit.audited(session, user, actor=actor, action="user.recovery_code", entity="user",
                       hide=HIDDEN):  # fmt: skip
        user.recovery_code_sha256 = _digest(code)
    return code


def recover(
    session: Session, *, username: str, code: str, pin: str, workstation: str
) -> SignInAttempt:
    """An admin gets back in with their recovery code, whatever locks them out: a new PIN,
    every lock lifted, and the code spent (make the next with `issue_recovery_code`)."""
    pin_hash = hash_pin(pin)
    user = find_user(session, username.strip().lower(), lock=True)
    if user is None or not user.active or user.role is not Role.admin:
        return SignInAttempt(None, _WRONG_RECOVERY)
    if not _matches(user.recovery_code_sha256, code):
        _refused(session, user, workstation, "user.recovery_refused", "wrong code")
        return SignInAttempt(None, _WRONG_RECOVERY)
    actor = actor_of(user, workstation)
    with audit.audited(session, user, actor=actor, action="user.recover", entity="user",
                       hide=HIDDEN):  # fmt: skip
        user.pin_hash, user.recovery_code_sha256 = pin_hash, None
        lift_locks(session, user)
    return SignInAttempt(actor)


def _refused(session: Session, user: User, workstation: str, action: str, reason: str) -> None:
    """Record a code refused for the account it was tried on."""
    audit.record(
        session,
        actor=system_at(workstation),
        action=action,
        entity="user",
        entity_id=user.id,
        reason=reason,
    )
