"""The scan resolver: what a scanned string names.

One function for every front end. A scan is normalised (whitespace, scanner prefix and AIM
symbology identifier stripped, upper-cased), then tried as a specimen accession ID, a storage
unit barcode, a legacy specimen ID, a participant code and a user badge. A string shaped like
an accession ID whose check character is wrong is a misread, reported as such: never as a
different tube and never as merely "unknown".
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from sqlmodel import Session, select

from biobank.identifiers import (
    check_specimen_id,
    misread_message,
    normalize_scan,
    strip_scan,
    unknown_code,
)
from biobank.models import Participant, StorageUnit, User
from biobank.permissions import Actor, Permission, require
from biobank.services.kits import ReservedRead, find_reserved
from biobank.services.specimen_read import SpecimenRead, find_specimen
from biobank.services.storage import UnitRead, unit_read
from biobank.terminal_text import CONTROL

ScanKind = Literal["specimen", "kit", "unit", "participant", "user", "misread", "unknown"]


class ScanResult(BaseModel):
    kind: ScanKind
    scanned: str
    code: str
    message: str
    specimen: SpecimenRead | None = None
    unit: UnitRead | None = None
    participant_code: str | None = None
    username: str | None = None
    reserved: ReservedRead | None = None


def resolve_scan(
    session: Session, *, actor: Actor, scanned: str, scanner_prefix: str = ""
) -> ScanResult:
    require(actor, Permission.view_inventory)
    code = normalize_scan(scanned, prefix=scanner_prefix)

    def result(kind: ScanKind, message: str, **found) -> ScanResult:
        return ScanResult(kind=kind, scanned=scanned, code=code, message=message, **found)

    if not code:
        return result("unknown", "empty scan")
    garbled = CONTROL.search(code)
    if garbled is not None:  # inside the code, not at its ends: the scan was garbled
        return result(
            "misread",
            f"MISREAD: the scan holds a control character (U+{ord(garbled[0]):04X}); scan again",
        )
    shape = check_specimen_id(code)
    if shape == "valid":
        specimen = find_specimen(session, code)
        if specimen is not None:
            return result("specimen", f"specimen {code}", specimen=specimen)
        reserved = find_reserved(session, code)
        if reserved is not None:
            return result(
                "kit",
                f"kit tube {code} for {reserved.participant_code} {reserved.visit_label}: "
                "not accessioned yet",
                reserved=reserved,
            )
    unit = session.exec(select(StorageUnit).where(StorageUnit.barcode == code)).first()
    if unit is not None:
        return result(
            "unit", f"{unit.kind} {unit.barcode} ({unit.name})", unit=unit_read(session, unit)
        )
    legacy = find_specimen(session, strip_scan(scanned)) or find_specimen(session, code)
    if legacy is not None:
        return result(
            "specimen",
            f"specimen {legacy.accession_id} (legacy ID {legacy.legacy_id})",
            specimen=legacy,
        )
    participant = session.exec(select(Participant.code).where(Participant.code == code)).first()
    if participant is not None:
        return result("participant", f"participant {participant}", participant_code=participant)
    badge = session.exec(select(User.username).where(User.badge == code, User.active)).first()
    if badge is not None:
        return result("user", f"badge of {badge}", username=badge)
    if shape == "misread":
        return result("misread", misread_message(code))
    if shape == "valid":
        return result("unknown", f"{code} is a valid ID but not in this inventory")
    return result(
        "unknown", f"{unknown_code(code)} is not a known specimen, unit, participant or badge"
    )
