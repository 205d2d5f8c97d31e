"""Settings from `BIOBANK_*` environment variables and a TOML file in the platform config dir.

Environment variables win over the file; the file wins over the defaults. Nothing is read at
import time: entry points call `load_settings()` and pass the result on. A value that is not
valid, or a token in a file other accounts may read, is refused in one line naming where.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

import platformdirs
import pydantic
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from biobank.errors import ValidationError
from biobank.inputs import read_toml

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

    kind: Literal["zpl-tcp", "cups", "pdf-folder"] = "pdf-folder"
    host: str | None = None
    port: int = 9100
    queue: str | None = None
    folder: Path | None = None
    dpi: Literal[203, 300] = 203
    label: str = "cryo-1.05x0.5in"


class ScannerSettings(BaseModel):
    """How a keyboard-wedge scanner is told apart from a person typing."""

    max_key_interval_ms: int = Field(default=35, ge=1, le=500)
    min_length: int = Field(default=4, ge=1)
    prefix: str = ""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BIOBANK_", env_nested_delimiter="__", extra="ignore"
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


def _file_settings() -> dict[str, Any]:
    """The settings file's values (none without a file). A personal token is a password: in a
    file that others may read or change it is refused, as ssh refuses such a key."""
    path = config_path().expanduser()
    if not path.exists():
        return {}
    values = read_toml(path, "settings file", field="config")
    if "token" in values and path.stat().st_mode & 0o077:
        raise ValidationError(
            f"the settings file {path} holds a token and other accounts may read or change it: "
            f"chmod 600 {path}",
            field="config",
            value=str(path),
        )
    return values


def load_settings(**overrides: object) -> Settings:
    """The settings; one that is not valid is named with where it was set."""
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        variable = "BIOBANK_" + "__".join(str(part) for part in first["loc"]).upper()
        where = variable if variable in os.environ else config_path()
        raise ValidationError(
            f"the setting {name} ({where}) is not valid: {first['msg']}", field=name
        ) from None
    except SettingsError as error:  # a nested setting's variable that is not JSON
        raise ValidationError(f"the settings cannot be read: {error}", field="config") from None
