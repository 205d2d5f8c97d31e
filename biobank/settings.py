"""Settings from `BIOBANK_*` environment variables and a TOML file in the platform config dir.

Environment variables win over the file; the file wins over the defaults. Nothing is read at
import time: entry points call `load_settings()` and pass the result on. A value that is not
valid, a key that is no setting (a misspelling would otherwise be ignored), a file that is not
TOML, or a token in a file other accounts may read, is refused in one line naming where.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
import tomllib
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import platformdirs
import pydantic
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from biobank.errors import ValidationError
from biobank.inputs import SMALL_LIMIT, read_input

APP_NAME = "biobank"


def config_path() -> Path:
    """The settings file: `BIOBANK_CONFIG`, or `config.toml` in the platform config dir."""
    explicit = os.environ.get("BIOBANK_CONFIG")
    if explicit:
        return Path(explicit)
    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def default_database_url() -> str:
    """The embedded default: a SQLite file in the platform data dir."""
    return f"sqlite:///{platformdirs.user_data_path(APP_NAME) / 'biobank.db'}"


class PrinterProfile(BaseModel):
    """A label printer of this workstation (used by the labels feature)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["zpl-tcp", "cups", "pdf-folder"] = "pdf-folder"
    host: str | None = None
    port: int = 9100
    queue: str | None = None
    folder: Path | None = None
    dpi: Literal[203, 300] = 203
    label: str = "cryo-1.05x0.5in"


class ScannerSettings(BaseModel):
    """How a keyboard-wedge scanner is told apart from a person typing."""

    model_config = ConfigDict(extra="forbid")
    max_key_interval_ms: int = Field(default=35, ge=1, le=500)
    min_length: int = Field(default=4, ge=1)
    prefix: str = ""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BIOBANK_", env_nested_delimiter="__", extra="forbid"
    )

    database_url: str = Field(default_factory=default_database_url)
    workstation: str = Field(default_factory=socket.gethostname)
    user: str | None = None
    # A personal token (`biobank user token create`): proof of who runs the CLI where the
    # database requires sign-in. Kept out of reprs and logs.
    token: SecretStr | None = None
    idle_lock_minutes: int = Field(default=10, ge=1)
    # How far back "the phenotype at collection" may reach when the specimen's own visit has
    # no value for a variable: the latest value observed within this many days before.
    phenotype_window_days: int = Field(default=90, ge=0)
    # How far a specimen's collection may lie from its visit's date before accession asks for
    # `--force` (CLI) or a new visit (workstation): a 2019 tube on a 2023 visit is a slip.
    visit_gap_days: int = Field(default=30, ge=0)
    # How many tubes of each type a participant keeps when a specimen request takes from
    # them (by default the last one is never sent away).
    request_floor: int = Field(default=1, ge=0)
    # A cohort preview's breakdown suppresses a stratum of fewer specimens or participants than
    # this, in de-identified modes.
    small_cell: int = Field(default=5, ge=1)
    # Specimen labels show the participant's pseudonymous code only where this is on.
    labels_show_participant: bool = False
    default_printer: str | None = None
    printers: dict[str, PrinterProfile] = Field(default_factory=dict)
    scanner: ScannerSettings = Field(default_factory=ScannerSettings)
    # The audit trail's anchors, never in the database (`services.audit_anchor`): the secret
    # its checkpoints are keyed with, and the file they are appended to. On a server, keep
    # both where the admins (and not the workstations) can reach them.
    audit_key_file: Path = Field(default_factory=lambda: config_path().parent / "audit.key")
    audit_checkpoints_file: Path = Field(
        default_factory=lambda: config_path().parent / "audit-checkpoints.jsonl"
    )
    # A REDCap server to import from (`biobank import redcap --api-url`): its API URL, and the
    # project's API token, a password like the personal token (never a command-line flag).
    redcap_api_url: str | None = None
    redcap_token: SecretStr | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, InitSettingsSource(settings_cls, _file_settings()))

    def printer_profile(self, name: str | None = None) -> PrinterProfile:
        """A printer of this workstation by name, or the default printer."""
        name = name or self.default_printer
        if name is None or name not in self.printers:
            known = ", ".join(sorted(self.printers)) or "none configured"
            wanted = f"no printer profile {name!r}" if name else "no default printer"
            raise ValidationError(
                f"{wanted} on this workstation ({known}); see `biobank config path`",
                field="printer",
                value=name,
            )
        return self.printers[name]

    @property
    def is_embedded(self) -> bool:
        """SQLite is the embedded engine: created and upgraded on first use."""
        return self.database_url.startswith("sqlite")


SECRET_KEYS = frozenset({"token", "redcap_token"})  # passwords: only in a private file


def _file_settings() -> dict[str, Any]:
    """The settings file's values (none without a file). A token (a personal one, REDCap's)
    is a password: in a file that others may read or change it is refused, as ssh refuses such
    a key."""
    path = config_path().expanduser()
    if not path.exists():
        return {}
    data = read_input(path, SMALL_LIMIT, "settings file", field="config")
    try:
        values = tomllib.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # not UTF-8, not TOML, nested without end
        raise _not_toml(path, error) from None
    if values.keys() & SECRET_KEYS and path.stat().st_mode & 0o077:
        raise ValidationError(
            f"the settings file {path} holds a token and other accounts may read or change it: "
            f"chmod 600 {path}",
            field="config",
            value=str(path),
        )
    return values


def load_settings(**overrides: object) -> Settings:
    """The settings. One that is not valid, or a key that is none, is refused in one line: where
    it was set (the variable, or the file and line), the key, the value, what it should be."""
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as error:
        raise _explained(error.errors()[0]) from None
    except SettingsError as error:  # a nested setting's variable that is not JSON
        raise _not_json(error) from None


def _explained(found: Any) -> ValidationError:
    """One of pydantic's errors as a line a person acts on."""
    loc = tuple(str(part) for part in found["loc"])
    if found["type"] == "extra_forbidden":
        problem = _unknown(loc)
    else:  # "Input should be 203 or 300"
        problem = found["msg"].removeprefix("Input ")
    variable = _variable(loc)
    where = f"environment variable {variable}" if variable else _in_file(loc)
    key = ".".join(loc)
    return _refused(where, f"{key} = {_shown(found['input'])}: {problem}", key)


def _unknown(loc: tuple[str, ...]) -> str:
    """A key that is no setting, with the known key of its table it most looks like."""
    known = _known_keys(loc[:-1])
    close = difflib.get_close_matches(loc[-1], known, n=1)
    if close:
        return f"not a setting; did you mean {'.'.join((*loc[:-1], close[0]))}?"
    return f"not a setting (known here: {', '.join(known)})"


def _known_keys(table: tuple[str, ...]) -> list[str]:
    """The keys a table of the settings takes (`printers.NAME` takes a printer's)."""
    model: Any = Settings
    parts = iter(table)
    for part in parts:
        annotation = model.model_fields[part].annotation
        if get_origin(annotation) is dict:  # the next part names the entry
            next(parts, None)
            annotation = get_args(annotation)[1]
        model = annotation
    return list(model.model_fields)


def _variable(loc: tuple[str, ...]) -> str | None:
    """The BIOBANK_* variable that set the value at `loc`, if one did: its own (`A__B` for a
    nested key) or an enclosing key's, given as JSON."""
    names = {name.upper(): name for name in os.environ}  # as pydantic-settings reads them
    for end in range(len(loc), 0, -1):
        name = names.get("BIOBANK_" + "__".join(loc[:end]).upper())
        if name:
            return name
    return None


def _in_file(loc: tuple[str, ...]) -> str:
    """The settings file, and the line that sets `loc` where it can be found."""
    path = config_path().expanduser()
    with suppress(OSError, ValueError):
        line = _line_of(path.read_text("utf-8"), loc)
        if line is not None:
            return f"settings file {path}, line {line}"
    return f"settings file {path}"


# A table header (`[a.b]`, `[[a]]`) or a key (`a.b = `) at the start of a TOML line.
_TOML_KEY = re.compile(
    r"""\s*(?P<table>\[\[?)?\s*(?P<key>(?:[\w-]+|"[^"]*"|'[^']*')"""
    r"""(?:\s*\.\s*(?:[\w-]+|"[^"]*"|'[^']*'))*)\s*(?:\]|=)"""
)
_TOML_PART = re.compile(r"""[\w-]+|"[^"]*"|'[^']*'""")


def _line_of(text: str, loc: tuple[str, ...]) -> int | None:
    """The line of the TOML `text` that sets the key at `loc`: its own line, its table's
    header, or the key whose inline table holds it (tomllib keeps no positions)."""
    table: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        found = _TOML_KEY.match(line)
        if found is None:
            continue
        path = [part.strip("\"'") for part in _TOML_PART.findall(found["key"])]
        if found["table"]:
            table = path
        else:
            path = table + path
        if tuple(path[: len(loc)]) == loc or (
            not found["table"] and loc[: len(path)] == tuple(path)
        ):
            return number
    return None


def _shown(value: object) -> str:
    """A value as TOML and JSON write it, cut short."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else f"{text[:59]}…"


_TOML_AT = re.compile(r"(?P<what>.*) \(at (?:line (?P<line>\d+), column (?P<column>\d+)|.*)\)$")


def _not_toml(path: Path, error: Exception) -> ValidationError:
    """tomllib's error, its line and column first."""
    what = str(error) or type(error).__name__
    where = f"settings file {path}"
    found = _TOML_AT.match(what)
    if found:
        what = found["what"]
        if found["line"]:
            where += f", line {found['line']}, column {found['column']}"
    return _refused(where, f"not valid TOML: {what}", "config")


def _not_json(error: SettingsError) -> ValidationError:
    """A table's variable (`BIOBANK_SCANNER`) that is not the JSON object it must be."""
    found = re.search(r'field "([^"]+)"', str(error))
    variable = _variable((found[1],)) if found else None
    if variable is None:
        return _refused("settings", str(error), "config")
    value = _shown(os.environ[variable])
    return _refused(
        f"environment variable {variable}",
        f"{found[1]} = {value}: should be a JSON object, or set one key as {variable}__KEY",
        found[1],
    )


def _refused(where: str, problem: str, key: str) -> ValidationError:
    return ValidationError(f"{where}: {problem}", field=key)
