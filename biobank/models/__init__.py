"""The data model: SQLModel tables and the plain read models services return.

Alembic migrations are the only thing that creates these tables; the metadata here, filled by
importing every module of this package, is what `biobank db check` compares the database
against. Timestamps are timezone-aware UTC; every table has an integer key and human-facing
identifiers live in separate unique columns.
"""

from biobank.models.audit import AuditEntry, AuditEntryRead
from biobank.models.base import utcnow
from biobank.models.consent import (
    ConsentAnswer,
    ConsentDocument,
    ConsentDocumentStatement,
    ConsentStatement,
    ConsentWithdrawal,
    ParticipantConsent,
)
from biobank.models.exports import DataUseAgreement, ExportRun, ExportRunSpecimen, SavedQuery
from biobank.models.participants import (
    ExternalIdRead,
    IdentityRead,
    Participant,
    ParticipantExternalId,
    ParticipantIdentity,
    ParticipantRead,
    Study,
    StudyRead,
    Visit,
    VisitRead,
)
from biobank.models.phenotypes import PhenotypeMissing, PhenotypeValue, PhenotypeVariable
from biobank.models.requests import (
    RequestedSpecimen,
    RequestEvent,
    RequestLine,
    SpecimenRequest,
)
from biobank.models.shipments import Receipt, ReceiptItem, Shipment, ShipmentItem
from biobank.models.specimens import (
    ReservedAccession,
    SerialCounter,
    Specimen,
    SpecimenEvent,
    SpecimenPoolSource,
    SpecimenReservation,
)
from biobank.models.storage import StorageUnit
from biobank.models.users import (
    PersonalToken,
    PersonalTokenRead,
    PinLockout,
    SiteSetting,
    User,
    UserRead,
)

__all__ = [
    "AuditEntry",
    "AuditEntryRead",
    "ConsentAnswer",
    "ConsentDocument",
    "ConsentDocumentStatement",
    "ConsentStatement",
    "ConsentWithdrawal",
    "DataUseAgreement",
    "ExportRun",
    "ExportRunSpecimen",
    "ExternalIdRead",
    "IdentityRead",
    "Participant",
    "ParticipantConsent",
    "ParticipantExternalId",
    "ParticipantIdentity",
    "ParticipantRead",
    "PersonalToken",
    "PersonalTokenRead",
    "PhenotypeMissing",
    "PhenotypeValue",
    "PhenotypeVariable",
    "PinLockout",
    "Receipt",
    "ReceiptItem",
    "RequestEvent",
    "RequestLine",
    "RequestedSpecimen",
    "ReservedAccession",
    "SavedQuery",
    "SerialCounter",
    "Shipment",
    "ShipmentItem",
    "SiteSetting",
    "Specimen",
    "SpecimenEvent",
    "SpecimenPoolSource",
    "SpecimenRequest",
    "SpecimenReservation",
    "StorageUnit",
    "Study",
    "StudyRead",
    "User",
    "UserRead",
    "Visit",
    "VisitRead",
    "utcnow",
]
