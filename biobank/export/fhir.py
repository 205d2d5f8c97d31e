"""The export as a FHIR R4 `collection` Bundle (`export.fhir_resources`), written entry by entry
so memory stays flat. Entries are named by `urn:uuid:` full URLs, which references use."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import IO

from biobank.export.columns import Column, Row
from biobank.export.fhir_resources import Records, Resources, json_text
from biobank.export.files import Progress, Written, write_atomically


def write_fhir_bundle(
    path: Path,
    columns: Iterable[Column],
    rows: Iterable[Row],
    records: Records,
    progress: Progress | None = None,
) -> Written:
    """`records` gives each exported participant's record (`fhir_resources.ParticipantRecord`);
    a participant without one is refused (their Consent cannot be left out). `rows` counts the
    spreadsheet rows, not the entries."""
    resources = Resources(columns, rows, records, lambda _kind, id_: f"urn:uuid:{id_}", progress)

    def write(file: IO[str]) -> int:
        file.write('{"resourceType":"Bundle","type":"collection"')
        entries = 0
        for _kind, id_, resource in resources:
            file.write(',"entry":[\n' if entries == 0 else ",\n")
            file.write(json_text({"fullUrl": f"urn:uuid:{id_}", "resource": resource}))
            entries += 1
        # FHIR JSON has no empty arrays: a bundle without entries has no `entry` at all.
        file.write("\n]}\n" if entries else "}\n")
        return resources.done

    return write_atomically(path, write, text=True)
