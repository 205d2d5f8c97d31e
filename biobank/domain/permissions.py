"""Who may do what: the one permission matrix every service consults."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from biobank.domain.vocabulary import Role
from biobank.errors import PermissionDenied


class Permission(enum.StrEnum):
    view_inventory = "view_inventory"
    register_participants = "register_participants"
    accession = "accession"
    move = "move"
    print_labels = "print_labels"
    query = "query"
    export = "export"
    export_identified = "export_identified"
    read_phi = "read_phi"
    manage_consent = "manage_consent"
    record_phenotypes = "record_phenotypes"
    import_data = "import_data"
    manage_studies = "manage_studies"
    manage_storage = "manage_storage"
    manage_users = "manage_users"
    view_audit = "view_audit"
    back_up = "back_up"  # and restore: a backup holds PHI, a restore replaces everything
    request_specimens = "request_specimens"  # ask for tubes: a PI's own requests
    review_requests = "review_requests"  # take up, approve or reject any request

    @property
    def description(self) -> str:
        special = {
            "read_phi": "read or record protected health information",
            "export_identified": "export identified data",
            "view_audit": "read the audit trail",
            "back_up": "back up or restore the database",
            "review_requests": "review specimen requests",
        }
        return special.get(self.value, self.value.replace("_", " "))


MATRIX: dict[Role, frozenset[Permission]] = {
    Role.technician: frozenset(
        {
            Permission.view_inventory,
            Permission.register_participants,
            Permission.accession,
            Permission.move,
            Permission.print_labels,
        }
    ),
    Role.pi: frozenset(
        {
            Permission.view_inventory,
            Permission.query,
            Permission.export,
            Permission.request_specimens,
        }
    ),
    Role.admin: frozenset(Permission),
}


@dataclass(frozen=True)
class Actor:
    """The signed-in user on whose behalf a service runs, and where they sit."""

    user_id: int | None
    username: str
    role: Role
    workstation: str

    def can(self, permission: Permission) -> bool:
        return permission in MATRIX[self.role]


SYSTEM = Actor(user_id=None, username="system", role=Role.admin, workstation="biobank")


def require(actor: Actor, permission: Permission) -> None:
    if not actor.can(permission):
        raise PermissionDenied(
            f"{actor.username} ({actor.role.value}) may not {permission.description}",
            field="permission",
            value=permission.value,
        )
