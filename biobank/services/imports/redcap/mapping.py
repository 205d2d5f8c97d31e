"""The mapping of a REDCap project onto this system: which fields are the record ID, the visit
date, the participant's sex and birth year, the identity columns and the consent form, what
a classic project's one visit per record is called, and where a field's PHI goes (a small TOML file,
`biobank/reference/redcap_mapping.toml` unless another is given)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from biobank.domain.phi import Phi
from biobank.domain.visits import canonical_visit_label
from biobank.errors import ValidationError
from biobank.inputs import read_toml

IDENTITY_LIMITS = {"mrn": 64, "family_name": 200, "given_name": 200, "date_of_birth": None}
DEFAULT_MAPPING = "reference/redcap_mapping.toml"


@dataclass(frozen=True)
class ConsentMapping:
    document: str  # its code; each version is a document
    title: str
    version: str  # the field of the version signed
    signed_on: str  # the field of the date signed
    statements: dict[str, str]  # field → statement code, in the order the form asks them


@dataclass(frozen=True)
class FieldRule:
    """What the mapping makes of one field (`[fields.<name>]`)."""

    phi: Phi | None = None  # None: PHI (flagged, or by its validation or name) to identity


@dataclass(frozen=True)
class RedcapMapping:
    """Which REDCap fields are what (build it with `redcap_mapping`, which checks it)."""

    record_id: str
    visit_date: str
    sex: str | None = None
    birth_year: str | None = None
    participant_forms: frozenset[str] = frozenset()
    visit_labels: dict[str, str] = field(default_factory=dict)  # event → label
    classic_label: str = "enrolment"  # a classic project's (no events) one visit per record
    identity: dict[str, str] = field(default_factory=dict)  # identity column → field
    consent: ConsentMapping | None = None
    fields: dict[str, FieldRule] = field(default_factory=dict)  # field → its rule
    file: str = "redcap_mapping.toml"

    def roles(self) -> dict[str, str]:
        """Field → what the mapping makes of it (none of these is a phenotype variable)."""
        roles = {self.record_id: "record ID", self.visit_date: "visit date"}
        if self.sex is not None:
            roles[self.sex] = "sex"
        if self.birth_year is not None:
            roles[self.birth_year] = "birth year"
        roles |= {name: f"identity {column}" for column, name in self.identity.items()}
        if self.consent:
            roles |= {
                self.consent.version: "consent version",
                self.consent.signed_on: "consent date",
            }
            roles |= {name: f"consent {code}" for name, code in self.consent.statements.items()}
        return roles


def redcap_mapping(path: Path | None = None) -> RedcapMapping:
    """The shipped mapping; a file given replaces the keys and tables it sets."""
    text = files("biobank").joinpath(DEFAULT_MAPPING).read_text("utf-8")
    settings = tomllib.loads(text) | (read_toml(path) if path is not None else {})
    where = path.name if path is not None else "redcap_mapping.toml"
    known = {f for f in RedcapMapping.__dataclass_fields__ if f != "file"}
    for key in settings.keys() - known:
        raise _fail(where, key, f"is not a setting (settings: {', '.join(sorted(known))})")

    def name(key: str, value: object) -> str:
        return _field_name(where, key, value)

    def optional_name(key: str, value: object) -> str | None:
        return None if value in (None, "") else name(key, value)

    def table(key: str, value: object) -> dict[str, str]:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise _fail(where, key, "must be a table of names", value)
        return {str(k).strip(): v.strip() for k, v in value.items()}

    forms = settings.get("participant_forms", [])
    if not isinstance(forms, list) or not all(isinstance(f, str) for f in forms):
        raise _fail(where, "participant_forms", "must be a list of form names", forms)
    identity = {
        c: name(f"identity.{c}", f)
        for c, f in table("identity", settings.get("identity", {})).items()
    }
    for column in identity.keys() - IDENTITY_LIMITS.keys():
        raise _fail(
            where,
            f"identity.{column}",
            f"is not an identity column ({', '.join(IDENTITY_LIMITS)})",
        )
    mapping = RedcapMapping(
        record_id=name("record_id", settings.get("record_id")),
        visit_date=name("visit_date", settings.get("visit_date")),
        sex=optional_name("sex", settings.get("sex")),
        birth_year=optional_name("birth_year", settings.get("birth_year")),
        participant_forms=frozenset(f.strip().lower() for f in forms),
        visit_labels=table("visit_labels", settings.get("visit_labels", {})),
        classic_label=_classic_label(where, settings.get("classic_label", "enrolment")),
        identity=identity,
        consent=_consent_mapping(settings.get("consent", {}), where),
        fields=_field_rules(settings.get("fields", {}), where),
        file=where,
    )
    fields = [
        f for f in [mapping.record_id, mapping.visit_date, mapping.sex, mapping.birth_year] if f
    ]
    fields += list(identity.values())
    if mapping.consent:
        fields += [mapping.consent.version, mapping.consent.signed_on, *mapping.consent.statements]
    twice = sorted({f for f in fields if fields.count(f) > 1})
    if twice:
        raise _fail(where, "", f"names the field {twice[0]} for two things", twice[0])
    roles = mapping.roles()
    for field_name, rule in mapping.fields.items():
        if rule.phi is not None and field_name in roles:
            raise _fail(
                where,
                f"fields.{field_name}.phi",
                f"is for a field with no other role; {field_name} is the {roles[field_name]}",
                rule.phi,
            )
    return mapping


def _fail(where: str, key: str, reason: str, value: object = None) -> ValidationError:
    """What is wrong with `key` of the mapping file `where`."""
    return ValidationError(f"{where}: {key} {reason}", field="mapping", value=value or key)


def _field_name(where: str, key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, key, "must name a REDCap field", value)
    return value.strip().lower()


def _classic_label(where: str, value: object) -> str:
    label = canonical_visit_label(value) if isinstance(value, str) else ""
    if not label or len(label) > 48:  # room for a repeat instance's " <form> #N"
        raise _fail(where, "classic_label", "must be a visit label of 1-48 characters", value)
    return label


def _field_rules(given: object, where: str) -> dict[str, FieldRule]:
    if not isinstance(given, dict) or not all(isinstance(r, dict) for r in given.values()):
        raise _fail(where, "fields", "must be tables [fields.<field name>]", given)
    rules = {}
    for name, rule in given.items():
        for key in rule.keys() - {"phi"}:
            raise _fail(where, f"fields.{name}.{key}", "is not a setting (phi)")
        phi = rule.get("phi")
        if phi is not None and phi not in tuple(Phi):
            allowed = ", ".join(Phi)
            raise _fail(where, f"fields.{name}.phi", f"is {phi!r}, not one of {allowed}", phi)
        key = _field_name(where, "fields", name)
        rules[key] = FieldRule(phi=None if phi is None else Phi(phi))
    return rules


def _consent_mapping(given: object, where: str) -> ConsentMapping | None:
    if not isinstance(given, dict):
        raise _fail(where, "consent", "must be a table", given)
    if not given:
        return None  # `[consent]` left empty: no consent in this project
    unknown = given.keys() - {"document", "title", "version", "signed_on", "statements"}
    for key in unknown:
        raise _fail(
            where,
            f"consent.{key}",
            "is not a setting (document, title, version, signed_on, statements)",
        )
    statements = given.get("statements")
    if not isinstance(statements, dict) or not statements:
        raise _fail(
            where, "consent.statements", "must map yes/no fields to consent statements", statements
        )
    document = given.get("document")
    if not isinstance(document, str) or not document.strip():
        raise _fail(where, "consent.document", "must be the consent document's code", document)
    return ConsentMapping(
        document=document.strip().upper(),
        title=str(given.get("title") or document).strip(),
        version=_field_name(where, "consent.version", given.get("version")),
        signed_on=_field_name(where, "consent.signed_on", given.get("signed_on")),
        statements={
            _field_name(where, f"consent.statements.{f}", f): str(code).strip().upper()
            for f, code in statements.items()
        },
    )
