"""Domain errors. Each front end maps them in one place: the CLI to a line on stderr and an exit
code, the TUI to a notification. Messages name the field and the value at fault."""

from __future__ import annotations

import enum
from typing import TypeVar

from biobank.redact import hide_secrets

Choice = TypeVar("Choice", bound=enum.Enum)


class BiobankError(Exception):
    """Base of every error a user can act on."""

    exit_code = 1

    def __init__(self, message: str, *, field: str | None = None, value: object = None):
        # Every front end shows the message, and a driver's message quoted in it may carry a
        # connection string: passwords are hidden here, once for all of them.
        message = hide_secrets(message)
        super().__init__(message)
        self.message = message
        self.field = field
        self.value = value

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"error": type(self).__name__, "message": self.message}
        if self.field is not None:
            data["field"] = self.field
            data["value"] = None if self.value is None else str(self.value)
        return data


class ValidationError(BiobankError):
    """A value is malformed or out of range; `row` locates it in an imported file."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        value: object = None,
        row: int | None = None,
    ):
        location = f"row {row}: " if row is not None else ""
        super().__init__(f"{location}{message}", field=field, value=value)
        self.row = row


class NotFound(BiobankError):
    exit_code = 4


class AlreadyExists(BiobankError):
    exit_code = 5


class ConstraintViolation(BiobankError):
    """The database refused a change (a unique or foreign key rule) that a service did not catch."""

    exit_code = 5


class ConcurrentChange(BiobankError):
    """Someone else changed the record since it was read; reload and try again."""

    exit_code = 5


class PositionOccupied(BiobankError):
    exit_code = 5


class InvalidTransition(BiobankError):
    exit_code = 5


class ConsentDenied(BiobankError):
    exit_code = 6


class PermissionDenied(BiobankError):
    exit_code = 3


class AuthenticationFailed(BiobankError):
    exit_code = 3


class DatabaseNotReady(BiobankError):
    """The database schema is behind (or ahead of) this version of biobank."""

    exit_code = 7


class DatabaseUnavailable(BiobankError):
    exit_code = 8


class AuditChainBroken(BiobankError):
    exit_code = 9


class BackupFailed(BiobankError):
    """pg_dump or pg_restore failed, or is not installed."""

    exit_code = 10


def parse_choice(choices: type[Choice], value: object, *, field: str) -> Choice:
    """The member of `choices` that `value` names, or an error listing what is allowed."""
    try:
        return choices(value)
    except ValueError:
        allowed = ", ".join(str(member.value) for member in choices)
        raise ValidationError(
            f"{value!r} is not a valid {field} (allowed: {allowed})", field=field, value=value
        ) from None
