"""A shipment's manifest, as the receiver reads it: JSON for the receiving installation (with a
SHA-256 over its content, so an altered manifest is refused), CSV for a spreadsheet (every cell
formula-safe), a FHIR R4 Bundle (the request as a Task naming its Specimens), and a packing list
PDF, one page per shipping box with its grid. The manifest names tubes and what they are, never
a participant."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from biobank.domain.positions import position_label
from biobank.domain.vocabulary import PositionLabels, ShipmentItemStatus
from biobank.export import fhir_terms
from biobank.export.cells import safe_rows
from biobank.models import Specimen, SpecimenRequest
from biobank.models.shipments import Shipment, ShipmentItem
from biobank.services.deidentification import ExportCodes

FORMAT = "biobank-shipment-manifest/1"
ACCESSION_SYSTEM = "urn:biobank:accession"
COLUMNS = (
    "shipment", "request", "box", "position", "accession_id", "donor", "specimen_type",
    "sprec_code", "quantity", "unit", "freeze_thaw_count",
)  # fmt: skip


class Manifest(BaseModel):
    document: dict[str, Any]  # the JSON manifest, `sha256` included
    sha256: str

    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        head = self.document
        writer.writerows(
            safe_rows(
                [head["shipment"], head["request"], i["box"], i["position"], i["accession_id"],
                 i["donor"], i["specimen_type"], i["sprec_code"] or "", i["quantity"], i["unit"],
                 i["freeze_thaw_count"]]
                for i in head["items"]
            )
        )  # fmt: skip
        return out.getvalue()

    def fhir_bundle(self) -> dict[str, Any]:
        """A collection Bundle: each tube a Specimen, the request a Task whose inputs name them."""
        head = self.document
        specimens = [
            {
                "resourceType": "Specimen",
                "id": f"specimen-{n}",
                "identifier": [{"system": ACCESSION_SYSTEM, "value": i["accession_id"]}],
                "status": "available",
                "type": fhir_terms.specimen_type(i["specimen_type"]),
                "collection": {"quantity": _quantity(i["quantity"], i["unit"])},
                "note": [{"text": f"box {i['box']} position {i['position']}"}],
            }
            for n, i in enumerate(head["items"], start=1)
        ]
        task = {
            "resourceType": "Task",
            "id": "request",
            "identifier": [{"system": "urn:biobank:request", "value": head["request"]}],
            "status": "completed",
            "intent": "order",
            "description": head["title"],
            "input": [
                {
                    "type": {"text": "specimen"},
                    "valueReference": {"reference": f"Specimen/{s['id']}"},
                }
                for s in specimens
            ],
        }
        return {
            "resourceType": "Bundle",
            "type": "collection",
            "identifier": {"system": "urn:biobank:shipment", "value": head["shipment"]},
            "entry": [
                {"fullUrl": f"urn:uuid:{head['shipment']}-{r['id']}", "resource": r}
                for r in [task, *specimens]
            ],
        }

    def write(self, folder: Path) -> list[Path]:
        """The manifest's files in `folder` (made if need be)."""
        folder.mkdir(parents=True, exist_ok=True)
        files = {
            "manifest.json": json.dumps(self.document, indent=2, sort_keys=True) + "\n",
            "manifest.csv": self.csv_text(),
            "manifest.fhir.json": json.dumps(self.fhir_bundle(), indent=2) + "\n",
        }
        written = []
        for name, text in files.items():
            path = folder / name
            path.write_text(text, encoding="utf-8")
            written.append(path)
        packing = folder / "packing-list.pdf"
        packing.write_bytes(packing_list(self.document))
        return [*written, packing]


def _quantity(value: float, unit: str) -> dict[str, Any]:
    """A tube's quantity, with its UCUM code where the table has one."""
    code = fhir_terms.ucum(unit)
    found: dict[str, Any] = {"value": value, "unit": unit}
    return found | ({"system": fhir_terms.UCUM_SYSTEM, "code": code} if code else {})


def box_place(row: int, col: int, cols: int) -> str:
    """A place in a shipping box as its grid labels it: A1, B3…"""
    return position_label(row, col, cols=cols, scheme=PositionLabels.letter_number)


def digest(document: dict[str, Any]) -> str:
    """The SHA-256 of a manifest's content (all but its `sha256`), canonical JSON."""
    content = {k: v for k, v in document.items() if k != "sha256"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def manifest_of(session: Session, *, shipment: Shipment, request: SpecimenRequest) -> Manifest:
    """The manifest of a shipment being dispatched: its tubes still on it, box by box, each by
    its label (a relabelled tube's ship code) and its donor's code (the linked export's
    participant code), never our participant."""
    rows = session.exec(
        select(ShipmentItem, Specimen)
        .join(Specimen, col(Specimen.id) == ShipmentItem.specimen_id)
        .where(
            ShipmentItem.shipment_id == shipment.id,
            col(ShipmentItem.status) != ShipmentItemStatus.withdrawn,
        )
        .order_by(col(ShipmentItem.box_no), col(ShipmentItem.box_row), col(ShipmentItem.box_col))
    ).all()
    codes = ExportCodes(request.code_key)
    document: dict[str, Any] = {
        "format": FORMAT,
        "shipment": shipment.code,
        "request": request.code,
        "title": request.title,
        "courier": shipment.courier,
        "tracking": shipment.tracking,
        "condition": shipment.condition.value,
        "destination": f"{request.destination_institution}; {request.destination_address}; "
        f"{request.destination_contact}",
        "box_grid": [shipment.box_rows, shipment.box_cols],
        "sent_on": date.today().isoformat(),
        "relabelled": request.relabel,
        "items": [
            {
                "box": i.box_no, "position": box_place(i.box_row, i.box_col, shipment.box_cols),
                "accession_id": i.ship_code or tube.accession_id,
                "donor": codes.code("P", tube.participant_id),
                "specimen_type": tube.specimen_type, "sprec_code": tube.sprec_code,
                "quantity": i.quantity, "unit": tube.unit.value,
                "freeze_thaw_count": tube.freeze_thaw_count,
            }
            for i, tube in rows
        ],
    }  # fmt: skip
    document["sha256"] = digest(document)
    return Manifest(document=document, sha256=document["sha256"])


def packing_list(document: dict[str, Any]) -> bytes:
    """One A4 page per shipping box: its grid, each tube's ID at its place, and the header."""
    from fpdf import FPDF

    rows, cols = document["box_grid"]
    pdf = FPDF(unit="mm", format="A4")
    pdf.set_creator("biobank")
    pdf.set_auto_page_break(False)
    boxes: dict[int, list[dict[str, Any]]] = {}
    for item in document["items"]:
        boxes.setdefault(item["box"], []).append(item)
    cell_w, cell_h = min(20.0, 180 / cols), min(12.0, 200 / rows)
    for box, items in sorted(boxes.items()):
        pdf.add_page()
        pdf.set_font("helvetica", "B", 14)
        pdf.cell(
            0,
            8,
            f"{document['shipment']} - box {box} of {len(boxes)}",
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.set_font("helvetica", "", 10)
        for line in (
            f"Request {document['request']}: {document['title']}",
            f"To: {document['destination']}",
            f"Courier: {document['courier']} {document['tracking'] or ''}  "
            f"Condition: {document['condition'].replace('_', ' ')}  Tubes: {len(items)}",
        ):
            pdf.multi_cell(0, 5, line, new_x="LMARGIN", new_y="NEXT")
        top, left = pdf.get_y() + 4, 15.0
        at = {item["position"]: item for item in items}
        pdf.set_font("helvetica", "", 6)
        for r in range(rows):
            for c in range(cols):
                x, y = left + c * cell_w, top + r * cell_h
                pdf.rect(x, y, cell_w, cell_h)
                place = box_place(r + 1, c + 1, cols)
                item = at.get(place)
                pdf.set_xy(x, y + 0.5)
                pdf.cell(cell_w, 2.5, place)
                if item is not None:
                    pdf.set_xy(x, y + 3.5)
                    pdf.multi_cell(cell_w, 2.5, f"{item['accession_id']}\n{item['specimen_type']}")
    return bytes(pdf.output())
