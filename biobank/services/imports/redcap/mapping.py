"""The mapping of a REDCap project onto this system: which fields are the record ID, the visit
date, the participant's sex and birth year, the identity columns and the consent form (and
what a consent answer turned from yes to no becomes), what a classic project's one visit per
record and an arm's visits are called, what a repeating instrument's instances are (dated
observations within their event's visit, or visits of their own), which namespace holds the
variables of fields of another meaning, and what single fields and forms become
(`mapping_fields`: renamed, skipped, their choices mapped, where their PHI goes). A small TOML
file, `biobank/reference/redcap_mapping.toml`, the "lupus" mapping, or another given; or
settings inferred from the project itself: `inference`."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from biobank import redcap
from biobank.domain.visits import canonical_visit_label
from biobank.domain.vocabulary import Sex
from biobank.errors import ValidationError
from biobank.inputs import read_toml
from biobank.services.imports.redcap.mapping_fields import (
    FieldRule,
    check_roles,
    field_rules,
    form_names,
)
from biobank.services.imports.redcap.mapping_fields import fail as _fail
from biobank.services.imports.redcap.mapping_fields import field_name as _field_name
from biobank.services.phenotype_missing import check_code
from biobank.services.phenotype_variables import VARIABLE_NAME

IDENTITY_LIMITS = {"mrn": 64, "family_name": 200, "given_name": 200, "date_of_birth": None}
DEFAULT_MAPPING = "reference/redcap_mapping.toml"
NAMESPACE_LIMIT = 24  # room for "<namespace>__<field>" in a variable's 64 characters
ON_CHANGE = ("withdraw", "refuse")  # what a consent answer turned from yes to no becomes
# what a repeating instrument's instances are: dated observations in their event's visit (the
# default: medicines, flares, lab panels filled in several times), or visits of their own
REPEATS = ("observation", "visit")
# REDCap's standard missing-data codes (Project Setup, "Missing Data Codes"): code → label
REDCAP_MISSING_CODES = {
    "NI": "No information", "INV": "Invalid", "UNK": "Unknown", "NASK": "Not asked",
    "ASKU": "Asked but unknown", "NAV": "Temporarily unavailable", "MSK": "Masked",
    "NA": "Not applicable", "NAVU": "Not available", "NP": "Not present",
    "QS": "Sufficient quantity", "QI": "Insufficient quantity", "TRC": "Trace",
    "UNC": "Unencoded", "DER": "Derived", "PINF": "Positive infinity",
    "NINF": "Negative infinity", "OTH": "Other",
}  # fmt: skip


@dataclass(frozen=True)
class ConsentMapping:
    document: str  # its code; each version is a document
    title: str
    version: str  # the field of the version signed
    signed_on: str  # the field of the date signed
    statements: dict[str, str]  # field → statement code, in the order the form asks them
    on_change: str = "withdraw"  # an answer turned from yes to no: withdrawn, or refused


@dataclass(frozen=True)
class RedcapMapping:
    """Which REDCap fields are what (build it with `redcap_mapping`, which checks it)."""

    record_id: str
    visit_date: str | None = None  # None: each event's in `event_dates`, else the row's or
    # the record's first date (`reading`, `checking`)
    sex: str | None = None
    birth_year: str | None = None
    participant_forms: frozenset[str] = frozenset()
    visit_labels: dict[str, str] = field(default_factory=dict)  # event → label
    event_dates: dict[str, str] = field(default_factory=dict)  # event → its visit date field
    classic_label: str = "enrolment"  # a classic project's (no events) one visit per record
    identity: dict[str, str] = field(default_factory=dict)  # identity column → field
    consent: ConsentMapping | None = None
    fields: dict[str, FieldRule] = field(default_factory=dict)  # field → its rule
    skip_forms: frozenset[str] = frozenset()  # forms not imported (but their role fields)
    namespace: str | None = None  # of colliding fields' variables (None: the study's code)
    arms: dict[int, str] = field(default_factory=dict)  # arm → its visits' label suffix
    repeats: dict[str, str] = field(default_factory=dict)  # form → "observation" or "visit"
    # a cell holding one of these codes is a value missing with reason: code → label
    missing_codes: dict[str, str] = field(default_factory=lambda: dict(REDCAP_MISSING_CODES))
    file: str = "redcap_mapping.toml"

    def observed(self, form: str) -> bool:
        """Whether a repeating instrument's instances are dated observations in their event's
        visit (else each is a visit of its own: `visits`)."""
        return self.repeats.get(form, REPEATS[0]) == REPEATS[0]

    def date_field(self, event: str) -> str | None:
        """The field that dates the visits of `event` (None: the row's or the record's first
        date does)."""
        return self.event_dates.get(event, self.visit_date)

    def roles(self) -> dict[str, str]:
        """Field → what the mapping makes of it (none of these is a phenotype variable)."""
        roles = {self.record_id: "record ID"}
        dates = [self.visit_date] if self.visit_date else []
        roles |= dict.fromkeys([*dates, *self.event_dates.values()], "visit date")
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
    where = path.name if path is not None else "redcap_mapping.toml"
    return mapping_from_settings(mapping_settings(path), where)


def mapping_settings(path: Path | None = None) -> dict[str, Any]:
    """The shipped mapping's settings, as its TOML file holds them, with the keys and tables a
    file given replaces."""
    text = files("biobank").joinpath(DEFAULT_MAPPING).read_text("utf-8")
    return tomllib.loads(text) | (read_toml(path) if path is not None else {})


def mapping_from_settings(settings: dict[str, Any], where: str) -> RedcapMapping:
    """A mapping made of its settings (a TOML file's, or inferred), checked; `where` names
    them in a fault."""
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

    forms = form_names(where, "participant_forms", settings.get("participant_forms", []))
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
        visit_date=optional_name("visit_date", settings.get("visit_date")),
        sex=optional_name("sex", settings.get("sex")),
        birth_year=optional_name("birth_year", settings.get("birth_year")),
        participant_forms=forms,
        visit_labels=table("visit_labels", settings.get("visit_labels", {})),
        event_dates={
            event: name(f"event_dates.{event}", f)
            for event, f in table("event_dates", settings.get("event_dates", {})).items()
        },
        classic_label=_classic_label(where, settings.get("classic_label", "enrolment")),
        identity=identity,
        consent=_consent_mapping(settings.get("consent", {}), where),
        fields=field_rules(settings.get("fields", {}), where),
        skip_forms=form_names(where, "skip_forms", settings.get("skip_forms", [])),
        namespace=_namespace(where, settings.get("namespace")),
        arms=_arms(where, settings.get("arms", {})),
        repeats=_repeats(where, settings.get("repeats", {})),
        missing_codes=_missing_codes(settings.get("missing_codes", REDCAP_MISSING_CODES), where),
        file=where,
    )
    fields = [
        f for f in [mapping.record_id, mapping.visit_date, mapping.sex, mapping.birth_year] if f
    ]
    fields += sorted(set(mapping.event_dates.values()) - {mapping.visit_date})
    fields += list(identity.values())
    if mapping.consent:
        fields += [mapping.consent.version, mapping.consent.signed_on, *mapping.consent.statements]
    twice = sorted({f for f in fields if fields.count(f) > 1})
    if twice:
        raise _fail(where, "", f"names the field {twice[0]} for two things", twice[0])
    check_roles(where, mapping.fields, mapping.roles(), mapping.sex)
    sex_rule = mapping.fields.get(mapping.sex or "")
    for code, ours in sex_rule.choices.items() if sex_rule else ():
        if ours.casefold() not in tuple(Sex):
            allowed = ", ".join(Sex)
            key = f"fields.{mapping.sex}.choices.{code}"
            raise _fail(where, key, f"is {ours!r}, not a sex ({allowed})", ours)
    return mapping


def _classic_label(where: str, value: object) -> str:
    label = canonical_visit_label(value) if isinstance(value, str) else ""
    if not label or len(label) > 48:  # room for a repeat instance's " <form> #N"
        raise _fail(where, "classic_label", "must be a visit label of 1-48 characters", value)
    return label


def _namespace(where: str, value: object) -> str | None:
    """The prefix of the variables of fields that collide with another meaning."""
    if value is None:
        return None
    name = value.strip().lower() if isinstance(value, str) else ""
    if not VARIABLE_NAME.match(name) or len(name) > NAMESPACE_LIMIT:
        reason = f"must be 1-{NAMESPACE_LIMIT} of a-z, 0-9 and '_', from a letter"
        raise _fail(where, "namespace", reason, value)
    return name


def _arms(where: str, given: object) -> dict[int, str]:
    """Arm number → the words its events' visit labels end in."""
    if not isinstance(given, dict):
        raise _fail(where, "arms", 'must be a table of arm numbers: 2 = "extension"', given)
    arms = {}
    for arm, words in given.items():
        key = f"arms.{arm}"
        if not str(arm).isdigit() or int(arm) < 1:
            raise _fail(where, key, "must be an arm's number (1, 2, …)", arm)
        suffix = canonical_visit_label(words) if isinstance(words, str) else ""
        if not suffix or len(suffix) > 24:
            raise _fail(where, key, "must be the words of 1-24 characters its visits end in", words)
        if canonical_visit_label(f"visit {suffix}") != f"visit {suffix}":
            reason = "ends like REDCap's own arm name, which visit labels drop: say it otherwise"
            raise _fail(where, key, reason, words)
        arms[int(arm)] = suffix
    return arms


def _repeats(where: str, given: object) -> dict[str, str]:
    """Form → what its instances are (`REPEATS`)."""
    if not isinstance(given, dict):
        raise _fail(
            where, "repeats", 'must be a table of forms: medications = "observation"', given
        )
    for form, kind in given.items():
        if kind not in REPEATS:
            allowed = " or ".join(f'"{k}"' for k in REPEATS)
            raise _fail(where, f"repeats.{form}", f"is {kind!r}, not {allowed}", kind)
    return {str(form).strip().lower(): kind for form, kind in given.items()}


def _consent_mapping(given: object, where: str) -> ConsentMapping | None:
    if not isinstance(given, dict):
        raise _fail(where, "consent", "must be a table", given)
    if not given:
        return None  # `[consent]` left empty: no consent in this project
    keys = ("document", "title", "version", "signed_on", "statements", "on_change")
    for key in given.keys() - set(keys):
        raise _fail(where, f"consent.{key}", f"is not a setting ({', '.join(keys)})")
    on_change = given.get("on_change", ON_CHANGE[0])
    if on_change not in ON_CHANGE:
        allowed = " or ".join(ON_CHANGE)
        raise _fail(where, "consent.on_change", f"is {on_change!r}, not {allowed}", on_change)
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
        on_change=on_change,
    )


def _missing_codes(given: object, where: str) -> dict[str, str]:
    """A table of code = label, or the codes as REDCap's Project Setup writes them:
    "NASK, Not asked | UNK, Unknown" (empty: the project has none)."""
    key = "missing_codes"
    try:
        if isinstance(given, str):
            given = dict(redcap.parse_choices(given)) if given.strip() else {}
        if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
            raise ValidationError('must be a table of code = "label", or "CODE, Label | …"')
        codes = {check_code(str(code)): label.strip() for code, label in given.items()}
        for code, label in codes.items():
            if not label:
                raise ValidationError(f"{code} needs its label")
        return codes
    except ValidationError as error:
        raise _fail(where, key, error.message, given) from None
