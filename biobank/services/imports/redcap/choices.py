"""How a REDCap field's choices become ours: the mapping's `choices` first (a REDCap code or
label → the variable's code or label, or for the sex field a sex), else the label.

A choice field matches a variable of the dictionary only when every one of its choices does:
a field whose choices mean something else (NIH's race codes against the registry's) is never
merged into it (`dictionary` imports it under the project's namespace instead)."""

from __future__ import annotations

import re

from biobank import redcap
from biobank.domain.vocabulary import Sex

# A sex choice's label (lower case, words only) → the sex it is: FHIR's administrative
# genders (female, male, other, unknown) and MIABIS's undifferentiated, in the words REDCap
# projects use for them, NIH's "Unknown or Not Reported" among them.
SEX_LABELS: dict[str, Sex] = {
    **dict.fromkeys(("female", "f", "woman", "girl"), Sex.female),
    **dict.fromkeys(("male", "m", "man", "boy"), Sex.male),
    **dict.fromkeys(
        ("unknown", "unk", "u", "not known", "unknown or not reported", "unknown not reported",
         "not reported", "prefer not to say", "prefer not to answer", "declined", "not stated"),
        Sex.unknown,
    ),
    **dict.fromkeys(
        ("undifferentiated", "intersex", "indeterminate", "ambiguous"), Sex.undifferentiated
    ),
    **dict.fromkeys(("other", "non binary", "nonbinary"), Sex.other),
}  # fmt: skip


def words(label: str) -> str:
    """A label as compared: lower case, its punctuation and spacing one space."""
    return " ".join(re.sub(r"[^\w]+", " ", label.casefold()).split())


def given_for(given: dict[str, str], code: str, label: str) -> str | None:
    """What the mapping's `choices` map a REDCap choice to: by its code, else its label."""
    if code in given:
        return given[code]
    wanted = words(label)
    return next((ours for theirs, ours in given.items() if words(theirs) == wanted), None)


def strays(f: redcap.Field, given: dict[str, str]) -> list[str]:
    """The keys of the mapping's `choices` that are none of the field's codes or labels."""
    codes = {c for c, _ in f.choices}
    labels = {words(label) for _, label in f.choices}
    return [key for key in given if key not in codes and words(key) not in labels]


def sex_of(code: str, label: str, given: dict[str, str]) -> Sex | None:
    """The sex of a choice of the sex field: the mapping's, else by its label."""
    mapped = given_for(given, code, label)
    if mapped is not None:
        return Sex(mapped.casefold())
    return SEX_LABELS.get(words(label))


def ours_of(wanted: str, stored: list[tuple[str, str]], *, code: bool) -> str | None:
    """The variable's code that `wanted` names: a label or code in any case and spacing; a
    `code` (the mapping's) first as it is written."""
    if code and any(c == wanted for c, _ in stored):
        return wanted
    key = words(wanted)
    return next((c for c, label in stored if words(label) == key), None) or next(
        (c for c, _ in stored if words(c) == key), None
    )


def fit(
    f: redcap.Field, stored: list[tuple[str, str]], given: dict[str, str]
) -> tuple[dict[str, str], list[str]]:
    """REDCap code → the variable's code for each choice that maps (by the mapping, else by
    label), and the choices that do not ("code, label")."""
    codes: dict[str, str] = {}
    unmatched: list[str] = []
    for code, label in f.choices:
        mapped = given_for(given, code, label)
        match = (
            ours_of(label, stored, code=False)
            if mapped is None
            else ours_of(mapped, stored, code=True)
        )
        if match is None:
            unmatched.append(f"{code}, {label}")
        else:
            codes[code] = match
    return codes, unmatched


def recoded(f: redcap.Field, given: dict[str, str]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """A new variable's choices made from the field's: each REDCap code as the mapping
    renames it (none: as it is), with the label of its first choice."""
    codes = {code: given_for(given, code, label) or code for code, label in f.choices}
    choices: dict[str, str] = {}
    for code, label in f.choices:
        choices.setdefault(codes[code], label)
    return codes, [{"code": c, "label": label} for c, label in choices.items()]
