"""The inventory's vocabulary: the closed lists every layer speaks (roles, statuses, kinds,
units, de-identification modes). Plain enums, so the workstation and the pure rules use them
without loading the database layer; `models` stores each as its values (`_enum_type`)."""

import enum


class Role(enum.StrEnum):
    technician = "technician"
    pi = "pi"
    admin = "admin"


class Sex(enum.StrEnum):
    """Donor sex: MIABIS's four, and FHIR administrative gender's `other` (a REDCap project's
    sex choices beyond these map to it)."""

    female = "female"
    male = "male"
    unknown = "unknown"
    undifferentiated = "undifferentiated"
    other = "other"


class ParticipantStatus(enum.StrEnum):
    active = "active"
    withdrawn = "withdrawn"
    lost_to_follow_up = "lost_to_follow_up"
    deceased = "deceased"
    completed = "completed"


class PhenotypeType(enum.StrEnum):
    integer = "integer"
    decimal = "decimal"
    boolean = "boolean"
    choice = "choice"
    multi_choice = "multi_choice"
    date = "date"
    text = "text"


class PhenotypeScope(enum.StrEnum):
    participant = "participant"
    visit = "visit"


class WithdrawalDisposition(enum.StrEnum):
    destroy = "destroy"
    keep_no_use = "keep_no_use"
    return_to_participant = "return"


class SpecimenKind(enum.StrEnum):
    primary = "primary"
    aliquot = "aliquot"
    derivative = "derivative"
    pool = "pool"


class SpecimenStatus(enum.StrEnum):
    available = "available"
    reserved = "reserved"
    checked_out = "checked_out"
    distributed = "distributed"
    depleted = "depleted"
    disposed = "disposed"
    missing = "missing"
    quarantined = "quarantined"


class QuantityUnit(enum.StrEnum):
    uL = "uL"
    mL = "mL"
    mg = "mg"
    ug = "ug"
    cells = "cells"


class FillOrder(enum.StrEnum):
    """The order auto-allocation fills a box: across each row, or down each column."""

    row_major = "row_major"
    column_major = "column_major"


class PositionLabels(enum.StrEnum):
    """`A1` letters for rows and numbers for columns, or `1..N` row by row."""

    letter_number = "letter_number"
    numeric = "numeric"


class DeidentificationMode(enum.StrEnum):
    safe_harbor = "safe_harbor"
    limited = "limited"
    identified = "identified"


class RequestStatus(enum.StrEnum):
    """A specimen request's life: a PI drafts and submits it, a reviewer takes it up and
    decides; dispatch fulfils it, and its PI (or an admin) may cancel it before then."""

    draft = "draft"
    submitted = "submitted"
    under_review = "under_review"
    approved = "approved"
    partly_approved = "partly_approved"
    rejected = "rejected"
    fulfilled = "fulfilled"
    cancelled = "cancelled"


class RequestLineStatus(enum.StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class RequestTake(enum.StrEnum):
    """How many tubes of a request line a participant gives: one, or every one that fits."""

    one = "one"
    all = "all"


class ShipmentStatus(enum.StrEnum):
    """A shipment is packed (`open`), sent (`dispatched`: its tubes distributed), then the
    receiver's confirmation recorded (`delivered`); an open one may be cancelled."""

    open = "open"
    dispatched = "dispatched"
    delivered = "delivered"
    cancelled = "cancelled"


class ShippingCondition(enum.StrEnum):
    dry_ice = "dry_ice"
    ln2_dry_shipper = "ln2_dry_shipper"
    cold_pack = "cold_pack"
    ambient = "ambient"


class ShipmentItemStatus(enum.StrEnum):
    """A tube in a shipment: packed, sent, taken off before dispatch because its
    participant's consent no longer allowed the request's uses that day, or returned."""

    packed = "packed"
    dispatched = "dispatched"
    withdrawn = "withdrawn"
    returned = "returned"  # came back, unused or left over, and was stored again


class ReceiptItemStatus(enum.StrEnum):
    """A tube of a shipment received from another biobank: expected (on the manifest, not yet
    scanned), received, damaged (thawed on arrival), missing (on the manifest, never
    scanned), or unexpected (scanned, not on the manifest)."""

    expected = "expected"
    received = "received"
    damaged = "damaged"
    missing = "missing"
    unexpected = "unexpected"
