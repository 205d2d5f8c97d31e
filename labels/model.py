"""What a label says. Each kind has an `id` (encoded in the QR code and printed first) and the
human-readable `lines` that follow it; renderers need nothing else.

Labels never carry a name or an MRN: a specimen or kit label shows at most the participant's
pseudonymous code, and only when the caller passes it (a workstation setting decides).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol

from labels import qr


class Label(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def lines(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class _Coded:
    id: str

    def __post_init__(self) -> None:
        qr.check_code(self.id)


def _present(*parts: str | None) -> tuple[str, ...]:
    return tuple(part for part in parts if part)


def _joined(*parts: str | None) -> str:
    return " ".join(part for part in parts if part)


@dataclass(frozen=True)
class SpecimenLabel(_Coded):
    """A tube: its accession ID, type (e.g. SER) and collection date."""

    specimen_type: str
    collected: date | None = None
    participant: str | None = None

    @property
    def lines(self) -> tuple[str, ...]:
        collected = f"{self.collected:%Y-%m-%d}" if self.collected else None
        return _present(_joined(self.specimen_type, collected), self.participant)


@dataclass(frozen=True)
class KitLabel(_Coded):
    """A tube of a collection kit: a reserved ID printed before the visit's draw."""

    visit: str
    specimen_type: str | None = None
    participant: str | None = None

    @property
    def lines(self) -> tuple[str, ...]:
        return _present(_joined(self.specimen_type, self.visit), "KIT", self.participant)


@dataclass(frozen=True)
class BoxLabel(_Coded):
    """A storage box: its barcode, name and where it lives (e.g. the parent's path)."""

    name: str
    path: str | None = None

    @property
    def lines(self) -> tuple[str, ...]:
        return _present(self.name, self.path)
