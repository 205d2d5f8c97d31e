"""The export as FHIR Bulk Data files: one NDJSON file per resource type (`Patient.ndjson`,
`Specimen.ndjson`, …), one resource a line, each with its `id` and referring to the others as
`Type/id`, as a Bulk Data export's output is read (`export.fhir_resources` makes them).

Each resource is written the moment it is made: nothing but the current batch of rows (and the
codes `export.fhir_resources` keeps) is held, so a cohort of any size streams. The files are
written beside their targets under hidden temporary names and renamed into place together once
all are whole; a failure removes them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from biobank.export.columns import Column, Row
from biobank.export.fhir_resources import Records, Resources, json_bytes
from biobank.export.files import Progress, Written, _cannot_write

RESOURCE_TYPES = ("Patient", "Condition", "Observation", "Consent", "Specimen")
"""Every file is written, empty when no resource of its type is."""

FILE_NAMES = tuple(f"{kind}.ndjson" for kind in RESOURCE_TYPES)


def write_fhir_ndjson(
    folder: Path,
    columns: Iterable[Column],
    rows: Iterable[Row],
    records: Records,
    progress: Progress | None = None,
) -> list[Written]:
    """One `<Type>.ndjson` per type in `folder`; each file's `rows` counts its resources."""
    folder = Path(folder)
    resources = Resources(columns, rows, records, lambda kind, id_: f"{kind}/{id_}", progress)
    outputs: dict[str, _Output] = {}
    try:
        for kind in RESOURCE_TYPES:
            outputs[kind] = _Output(folder / f"{kind}.ndjson")
        for kind, _id, resource in resources:
            outputs[kind].write(json_bytes(resource))
        for output in outputs.values():
            output.finish()
        return [output.publish() for output in outputs.values()]
    finally:
        for output in outputs.values():
            output.discard()


class _Output:
    """One NDJSON file under a temporary name, hashed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        except OSError as error:
            raise _cannot_write(path, error) from None
        self._temporary: Path | None = Path(name)
        self._file: IO[bytes] = open(fd, "wb")  # noqa: SIM115 (closed by `finish` or `discard`)
        self._digest = hashlib.sha256()
        self._bytes = 0
        self._lines = 0

    def write(self, line: bytes) -> None:
        data = line + b"\n"
        self._file.write(data)
        self._digest.update(data)
        self._bytes += len(data)
        self._lines += 1

    def finish(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as error:
            raise _cannot_write(self.path, error) from None

    def publish(self) -> Written:
        assert self._temporary is not None  # published once
        os.replace(self._temporary, self.path)
        self._temporary = None
        return Written(self.path, self._lines, self._digest.hexdigest(), self._bytes)

    def discard(self) -> None:
        """Closes the file and removes it unless published."""
        self._file.close()
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)
