"""What the accession form remembers at a workstation across restarts: the type, aliquot
split and destination last used.

They live in a small JSON file beside the settings file (`biobank.settings.config_path`, so
`BIOBANK_CONFIG` moves both), one entry per workstation name. The file is a convenience: a
missing or unreadable one gives the defaults, and nothing else is read from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from biobank.domain import sprec
from biobank.settings import config_path

FILE_NAME = "accession-defaults.json"


@dataclass
class LastUsed:
    """What the previous accession at this workstation used; the next one starts from it."""

    specimen_type: str = "SER"
    count: str = "4"
    volume: str = ""
    destination: str | None = None


def remembered_path() -> Path:
    return config_path().expanduser().parent / FILE_NAME


def _entries() -> dict:
    try:
        entries = json.loads(remembered_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def load_last_used(workstation: str) -> LastUsed:
    """This workstation's remembered values; each one missing or of the wrong kind (a file
    edited by hand, a type no longer known) is the default."""
    entry = _entries().get(workstation)
    if not isinstance(entry, dict):
        return LastUsed()
    kept = {
        f.name: entry[f.name]
        for f in fields(LastUsed)
        if isinstance(entry.get(f.name), str) and entry[f.name].isprintable()
    }
    code = kept.get("specimen_type", "")
    if not (sprec.is_fluid_type(code) or code in sprec.solid_types()):
        kept.pop("specimen_type", None)
    return LastUsed(**kept)


def save_last_used(workstation: str, last: LastUsed) -> None:
    """Written whole to a temporary file, then put in place: a crash leaves the old file."""
    path = remembered_path()
    entries = _entries() | {workstation: asdict(last)}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    partial.write_text(json.dumps(entries, indent=2), encoding="utf-8")
    partial.replace(path)
