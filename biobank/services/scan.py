"""The scan resolver: what a scanned string names, and what opening it shows.

One function for every front end. A scan is normalised (whitespace, scanner prefix and AIM
symbology identifier stripped, upper-cased), then tried as a specimen accession ID, a storage
unit barcode, a legacy specimen ID, a participant code, a participant's ID in another system
(a REDCap record ID: as scanned, not upper-cased, since those IDs tell case apart) and a user
badge. A string shaped like
an accession ID whose check character is wrong is a misread, reported as such: never as a
different tube and never as merely "unknown".

Each kind of thing a scan names is a type of its own, so a front end matches on the type. A
scan that opens a screen (`views`) carries what a tube's or a box's screen shows, read in the
scan's own unit of work.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from sqlmodel import Session, select

from biobank.domain.identifiers import (
    check_specimen_id,
    misread_message,
    normalize_scan,
    strip_scan,
    unknown_code,
)
from biobank.domain.permissions import Actor, Permission, require
from biobank.models import Participant, StorageUnit, User
from biobank.services.consent import ConsentStatusRead, consent_status
from biobank.services.external_ids import scanned_external_id
from biobank.services.kits import ReservedRead, find_reserved
from biobank.services.pulls import pull_item
from biobank.services.specimen_read import SpecimenRead, find_specimen
from biobank.services.specimens import SpecimenDetail, show_specimen
from biobank.services.storage import BoxView, UnitRead, box_view, unit_read
from biobank.terminal_text import CONTROL


class Scanned(BaseModel):
    """What every scan says: the text as scanned, the code it was read as, and one line."""

    scanned: str
    code: str
    message: str


class SpecimenView(BaseModel):
    """A tube as its screen shows it: with its participant's consent as of today."""

    detail: SpecimenDetail
    consent: ConsentStatusRead
    on_pull_list: bool


class SpecimenScan(Scanned):
    kind: Literal["specimen"] = "specimen"
    specimen: SpecimenRead
    view: SpecimenView | None = None  # read when the scan opens the tube


class KitScan(Scanned):
    """A collection kit's tube: its ID reserved for a visit, not accessioned yet."""

    kind: Literal["kit"] = "kit"
    reserved: ReservedRead


class UnitScan(Scanned):
    """A storage unit: a freezer, shelf or rack (a box is a `BoxScan`)."""

    kind: Literal["unit"] = "unit"
    unit: UnitRead


class BoxScan(UnitScan):
    """A unit that holds tubes."""

    view: BoxView | None = None  # read when the scan opens the box


class ParticipantScan(Scanned):
    kind: Literal["participant"] = "participant"
    participant_code: str


class BadgeScan(Scanned):
    kind: Literal["user"] = "user"
    username: str


class MisreadScan(Scanned):
    """A garbled scan or a wrong check character: scan again."""

    kind: Literal["misread"] = "misread"


class UnknownScan(Scanned):
    kind: Literal["unknown"] = "unknown"


Scan = (
    SpecimenScan | KitScan | UnitScan | BoxScan | ParticipantScan | BadgeScan | MisreadScan
    | UnknownScan
)  # fmt: skip


def scanned_tube(result: Scan) -> str | None:
    """The tube ID a scan gives a list worked through by scanning (a pull list, a pick list,
    a receipt): a tube of ours, or a code this inventory does not know (another biobank's
    label, a wrong tube) for the list's service to judge; None for anything else."""
    match result:
        case SpecimenScan(specimen=specimen):
            return specimen.accession_id
        case UnknownScan(code=code) if code:
            return code
    return None


def specimen_view(session: Session, *, actor: Actor, accession: str) -> SpecimenView:
    """The tube and its participant's consent, in the one unit of work a scan costs."""
    detail = show_specimen(session, actor=actor, accession=accession)
    s = detail.specimen
    pulled = (
        s.consent_withdrawal_id is not None
        and pull_item(session, actor=actor, specimen_id=s.id) is not None
    )
    return SpecimenView(
        detail=detail,
        consent=consent_status(session, actor=actor, participant=s.participant_code),
        on_pull_list=pulled,
    )


def resolve_scan(
    session: Session, *, actor: Actor, scanned: str, scanner_prefix: str = "", views: bool = False
) -> Scan:
    """What `scanned` names; with `views`, a tube or a box comes with what its screen shows."""
    require(actor, Permission.view_inventory)
    code = normalize_scan(scanned, prefix=scanner_prefix)

    def tube(specimen: SpecimenRead, message: str) -> SpecimenScan:
        view = (
            specimen_view(session, actor=actor, accession=specimen.accession_id) if views else None
        )
        return SpecimenScan(
            scanned=scanned, code=code, message=message, specimen=specimen, view=view
        )

    if not code:
        return UnknownScan(scanned=scanned, code=code, message="empty scan")
    garbled = CONTROL.search(code)
    if garbled is not None:  # inside the code, not at its ends: the scan was garbled
        return MisreadScan(
            scanned=scanned,
            code=code,
            message=f"MISREAD: the scan holds a control character (U+{ord(garbled[0]):04X}); "
            "scan again",
        )
    shape = check_specimen_id(code)
    if shape == "valid":
        specimen = find_specimen(session, code)
        if specimen is not None:
            return tube(specimen, f"specimen {code}")
        reserved = find_reserved(session, code)
        if reserved is not None:
            return KitScan(
                scanned=scanned,
                code=code,
                message=f"kit tube {code} for {reserved.participant_code} "
                f"{reserved.visit_label}: not accessioned yet",
                reserved=reserved,
            )
    unit = session.exec(select(StorageUnit).where(StorageUnit.barcode == code)).first()
    if unit is not None:
        read = unit_read(session, unit)
        message = f"{unit.kind} {unit.barcode} ({unit.name})"
        if not read.holds_specimens:
            return UnitScan(scanned=scanned, code=code, message=message, unit=read)
        view = box_view(session, actor=actor, barcode=read.barcode) if views else None
        return BoxScan(scanned=scanned, code=code, message=message, unit=read, view=view)
    legacy = find_specimen(session, strip_scan(scanned)) or find_specimen(session, code)
    if legacy is not None:
        return tube(legacy, f"specimen {legacy.accession_id} (legacy ID {legacy.legacy_id})")
    participant = session.exec(select(Participant.code).where(Participant.code == code)).first()
    if participant is not None:
        return ParticipantScan(
            scanned=scanned,
            code=code,
            message=f"participant {participant}",
            participant_code=participant,
        )
    external = _by_external_id(session, scanned, code)
    if external is not None:
        return external
    badge = session.exec(select(User.username).where(User.badge == code, User.active)).first()
    if badge is not None:
        return BadgeScan(scanned=scanned, code=code, message=f"badge of {badge}", username=badge)
    if shape == "misread":
        return MisreadScan(scanned=scanned, code=code, message=misread_message(code))
    if shape == "valid":
        return UnknownScan(
            scanned=scanned, code=code, message=f"{code} is a valid ID but not in this inventory"
        )
    return UnknownScan(
        scanned=scanned,
        code=code,
        message=f"{unknown_code(code)} is not a known specimen, unit, participant or badge",
    )


def _by_external_id(session: Session, scanned: str, code: str) -> Scan | None:
    """The participant a scanned external ID names (as written: `code` upper-cased it); an ID
    held in several studies names none of them, and the scan says so."""
    stripped = strip_scan(scanned)
    written = stripped[-len(code) :] if stripped.upper().endswith(code) else code
    found = scanned_external_id(session, written)
    if not found:
        return None
    if len(found) > 1:
        studies = ", ".join(sorted({study for _, study, _ in found}))
        return UnknownScan(
            scanned=scanned,
            code=code,
            message=f"{written} is a record ID in several studies ({studies}): "
            "find the participant by study",
        )
    participant, _, system = found[0]
    named = "REDCap record" if system == "redcap" else f"{system} ID"
    return ParticipantScan(
        scanned=scanned,
        code=code,
        message=f"participant {participant} ({named} {written})",
        participant_code=participant,
    )
