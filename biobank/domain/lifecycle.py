"""The specimen status lifecycle, in one place: which status may follow which.

`missing` is for a tube not found where it should be (reconciliation); `quarantined` holds a
tube whose quality or consent is in question. `disposed` is final; `distributed` too, but
for a return against its shipment (`RETURNED_FROM`).
"""

from __future__ import annotations

from biobank.domain.vocabulary import SpecimenStatus as S
from biobank.errors import InvalidTransition

ALLOWED: dict[S, frozenset[S]] = {
    S.available: frozenset({S.reserved, S.checked_out, S.distributed, S.depleted, S.disposed,
                            S.missing, S.quarantined}),
    S.reserved: frozenset({S.available, S.checked_out, S.distributed, S.disposed, S.missing,
                           S.quarantined}),
    S.checked_out: frozenset({S.available, S.reserved, S.distributed, S.depleted, S.disposed,
                              S.missing}),
    S.quarantined: frozenset({S.available, S.disposed, S.missing}),
    S.missing: frozenset({S.available, S.disposed}),
    S.depleted: frozenset({S.disposed}),
    S.distributed: frozenset(),
    S.disposed: frozenset(),
}  # fmt: skip

# The one way back from a final state: a distributed tube returned against the shipment that
# sent it (`services.shipments.receive_return`), never by any other change of status.
RETURNED_FROM = S.distributed

# A tube in one of these states occupies its slot (checked out: the slot is held for it).
IN_STORAGE = frozenset({S.available, S.reserved, S.checked_out, S.quarantined, S.depleted})


def check_transition(current: S, new: S, *, specimen: str) -> None:
    if new not in ALLOWED[current]:
        allowed = ", ".join(sorted(s.value for s in ALLOWED[current])) or "none (final)"
        raise InvalidTransition(
            f"{specimen} is {current.value} and cannot become {new.value} "
            f"(from {current.value}: {allowed})",
            field="status",
            value=new.value,
        )
