"""Which fields of a project hold PHI though nobody flagged them: projects often leave a phone,
an e-mail, an address or a next of kin's name unmarked, and such a field must never become a
phenotype. The rule leans towards catching too much (a field caught wrongly is listed, and the
mapping's `phi = "keep"` takes it back) but "name" alone is not enough: "Drug name" is data,
"Next of kin name" is not."""

from __future__ import annotations

import enum
import re


class Phi(enum.StrEnum):
    """Where the mapping sends a field (`[fields.<name>] phi = …`)."""

    identity = "identity"  # the identity table only (what PHI gets unless told otherwise)
    drop = "drop"  # nowhere
    keep = "keep"  # a phenotype after all


# Text validations that only PHI takes (REDCap's own, and its country variants by prefix).
VALIDATIONS = frozenset({"email", "zipcode", "ssn", "vmrn"})
VALIDATION_PREFIXES = ("phone", "postalcode_", "mrn_")
WORDS = frozenset(
    {
        "phone", "telephone", "tel", "mobile", "fax", "email", "zip", "zipcode", "postcode",
        "postal", "address", "street", "mrn", "ssn", "dob", "birthdate", "surname", "fname",
        "lname", "firstname", "lastname", "fullname",
    }
)  # fmt: skip
# Whose "name" is a person's: "first name", "nok_name", "Next of kin name"…
PERSONS = ("first", "last", "given", "family", "full", "middle", "maiden", "nok", "kin")
PHRASES = (
    ("date", "of", "birth"),
    ("birth", "date"),
    ("e", "mail"),
    ("zip", "code"),
    ("post", "code"),
    *((person, "name") for person in PERSONS),
)


def phi_reason(name: str, label: str, validation: str) -> str | None:
    """Why a field holds PHI ("validation phone", "name" or "label": what says so), or None."""
    if validation in VALIDATIONS or validation.startswith(VALIDATION_PREFIXES):
        return f"validation {validation}"
    if _says_phi(name.lower().split("_")):
        return "name"
    if _says_phi(re.findall(r"[a-z0-9]+", label.casefold())):
        return "label"
    return None


def _says_phi(words: list[str]) -> bool:
    """A word or phrase of PHI among `words`, or a lone "name"."""
    if words == ["name"] or not WORDS.isdisjoint(words):
        return True
    return any(
        tuple(words[i : i + len(phrase)]) == phrase
        for phrase in PHRASES
        for i in range(len(words) - len(phrase) + 1)
    )
