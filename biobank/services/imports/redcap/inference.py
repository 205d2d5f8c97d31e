"""A mapping inferred from a REDCap project itself, for an import given none: a registry that
never wrote one imports at once, and learns from the report (and `--write-mapping`) what was
taken for what, and what was not.

The shipped lupus mapping is taken when the dictionary has every field it names, so a project
of that shape imports as it always has. Otherwise, from the data dictionary and the forms each
event holds (a project pulled from its server: its form-event mapping, `RedcapSetup`; files:
one pass over the records, the forms that hold values in each event's rows), the rows of a
repeating instrument left out, as their dates are their own:

- the record ID is the dictionary's first field, as REDCap makes it;
- each event's visit date is a date field (date_* or datetime_* validation; not an identifier
  nor PHI) of the forms the event holds: one named like a visit date (visit, collection,
  sample, enrolment…), else the first, the forms of one value per participant last. One field
  for every event is `visit_date`, else each event's is in `[event_dates]`; the visits of an
  event with none are dated by the row's first date filled, else by the date of their record's
  first dated visit (`checking`). A classic project is one event;
- events become visits named as always (`visit_labels` left empty: the event's name without
  its arm);
- sex is a radio or dropdown named like sex or gender whose labels are all sexes; the birth
  year an integer named birth_year, year_of_birth or yob (a date of birth is PHI: it goes to
  `[identity]`, and no birth year is made of it); MRN, names and date of birth go to
  `[identity]` by their common names;
- participant forms are those named like demographics or baseline characteristics, and in a
  longitudinal project of several events the forms held in the first event only;
- consent is taken from a form named consent* only when it has a version field, a date field
  and yes/no fields each naming one of the standard statements; else it is not inferred.

What could not be inferred is said (`InferredMapping.not_inferred`), never guessed."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import tomli_w

from biobank import redcap
from biobank.domain.phi import phi_reason
from biobank.domain.visits import canonical_visit_label
from biobank.domain.vocabulary import PhenotypeType, Sex
from biobank.services.imports.common import InferredMapping
from biobank.services.imports.redcap.api import RedcapSetup
from biobank.services.imports.redcap.choices import sex_of
from biobank.services.imports.redcap.mapping import (
    RedcapMapping,
    mapping_from_settings,
    mapping_settings,
    redcap_mapping,
)
from biobank.services.imports.redcap.reading import EVENT_COLUMN, INSTRUMENT_COLUMN
from biobank.tabular import open_source

SHIPPED = "lupus"  # `--mapping lupus`: biobank/reference/redcap_mapping.toml
INFERRED = "inferred"

SEX_NAMES = frozenset({"sex", "gender", "sex_at_birth", "birth_sex", "biological_sex"})
BIRTH_YEAR_NAMES = frozenset({"birth_year", "year_of_birth", "yob", "birthyear", "byear"})
IDENTITY_NAMES = {
    "mrn": {"mrn", "medical_record_number", "hospital_number"},
    "family_name": {"last_name", "lastname", "surname", "family_name", "lname"},
    "given_name": {"first_name", "firstname", "given_name", "fname"},
    "date_of_birth": {"dob", "date_of_birth", "birth_date", "birthdate"},
}
PARTICIPANT_FORM = re.compile(
    r"^(demographics?|baseline_characteristics|"
    r"(patient|participant|subject)_(characteristics|demographics|information|details))$"
)
VISIT_WORDS = frozenset(
    {
        "visit", "collection", "collected", "sample", "specimen", "draw", "drawn", "enrolment",
        "enrollment", "enrolled", "enroled", "enrol", "enroll", "exam", "examination",
        "assessment", "encounter", "appointment",
    }
)  # fmt: skip
STATEMENTS = {  # the standard consent statements, and the words of a field that asks one
    "FUTURE_RESEARCH": {"future"},
    "GENETIC": {"genetic", "genetics", "genomic", "dna"},
    "COMMERCIAL": {"commercial"},
    "DATA_SHARING": {"share", "sharing", "shared"},
    "RECONTACT": {"recontact", "recontacted", "contact", "contacted"},
}
NOTES = {  # what each setting is, for the file `mapping_toml` writes
    "record_id": "the REDCap record ID, kept as the participant's external ID",
    "visit_date": 'every event\'s visit date field ("": none, see [event_dates])',
    "sex": 'a radio or dropdown whose labels are Female, Male, Unknown… ("": none)',
    "birth_year": 'the year of birth, an integer field ("": none)',
    "classic_label": "the one visit of each record of a project without events",
    "participant_forms": "forms of one value per participant; the other forms' are per visit",
    "event_dates": "Event → its visits' date field. A visit that none dates takes the row's "
    "first date filled, else its record's first date.",
    "visit_labels": "Event → visit label. Events not listed lose their arm and underscores.",
    "identity": "Identity column (mrn, family_name, given_name, date_of_birth) → field: PHI, "
    "kept apart from the phenotypes.",
    "consent": "The consent form: document code, title, version and signed_on fields, and "
    "[consent.statements] yes/no field → statement (FUTURE_RESEARCH, GENETIC, COMMERCIAL, "
    "DATA_SHARING, RECONTACT). Left empty: no consent imported.",
    "repeats": 'Repeating instrument → "observation" (each instance a dated observation in its '
    'event\'s visit) or "visit" (each instance a visit of its own).',
    "fields": '[fields.NAME]: phi = "keep", "drop" or "identity"; variable = "…"; skip = true; '
    "choices = { REDCap code or label = ours }.",
}


def infer_mapping(
    dictionary: Path, records: Path, setup: RedcapSetup | None = None
) -> InferredMapping:
    """The mapping of a project's two files (see the module), and its `setup` where its server
    gave it: the shipped one when the dictionary has every field it names, else one inferred.
    A dictionary without a readable field gets the shipped one too, and the check then says
    what is wrong with it."""
    notices: list[str] = []  # the check reports the files' own
    found = redcap.read_dictionary(open_source(dictionary, notices, "data dictionary").records())
    if not found.fields or redcap_mapping().roles().keys() <= found.fields.keys():
        why = (
            "the dictionary has every field the shipped lupus mapping names"
            if found.fields
            else "the data dictionary has no field to infer one from"
        )
        return InferredMapping(mapping=SHIPPED, settings=mapping_settings(), why={"mapping": why})
    if setup is not None:
        held = {event: set(forms) for event, forms in setup.held().items()}
        repeating = list(dict.fromkeys(form for _, form in setup.repeating if form))
        return _Inference(found, (setup.longitudinal, held, repeating)).run()
    source = open_source(records, notices, "records export")
    return _Inference(found, _forms_held(found.fields, source.records())).run()


def inferred_mapping(inferred: InferredMapping) -> RedcapMapping:
    """The mapping an inference took, checked as a file's is."""
    where = "redcap_mapping.toml" if inferred.mapping == SHIPPED else "the inferred mapping"
    return mapping_from_settings(inferred.settings, where)


def _words(f: redcap.Field) -> set[str]:
    """The words of a field's name and label."""
    return set(f.name.split("_")) | set(re.findall(r"[a-z0-9]+", f.label.casefold()))


def _filled(cell: str, box: bool) -> bool:
    """A cell with a value (a checkbox's column: ticked)."""
    return cell == "1" if box else bool(cell)


def _forms_held(
    fields: dict[str, redcap.Field], records: Iterable[tuple[int, list[str]]]
) -> tuple[bool, dict[str, set[str]], list[str]]:
    """Whether the records have events, the forms with a value in each event's rows (a
    classic project's: event ""), events in the order the records first name them, and the
    repeating instruments, in the order met."""
    rows: Iterator[tuple[int, list[str]]] = iter(records)
    header = next(rows, None)
    if header is None:
        return False, {}, []
    columns = {cell.strip().lower(): i for i, cell in enumerate(header[1])}
    event_at, repeat_at = columns.get(EVENT_COLUMN), columns.get(INSTRUMENT_COLUMN)
    by_form: dict[str, list[tuple[int, bool]]] = {}
    for f in list(fields.values())[1:]:  # not the record ID, in every row
        box = f.value_type is PhenotypeType.multi_choice
        found = [(columns[c], box) for c in f.columns if c in columns]
        by_form.setdefault(f.form, []).extend(found)
    held: dict[str, set[str]] = {}
    repeating: dict[str, None] = {}

    def cell(cells: list[str], at: int | None) -> str:
        return cells[at].strip() if at is not None and at < len(cells) else ""

    for _, cells in rows:
        if form := cell(cells, repeat_at).lower():
            repeating[form] = None
            continue
        forms = held.setdefault(cell(cells, event_at), set())
        for form, places in by_form.items():
            if form not in forms and any(_filled(cell(cells, i), box) for i, box in places):
                forms.add(form)
    return event_at is not None, held, list(repeating)


class _Inference:
    """One inference: each setting in turn, each taking fields the ones before did not, from
    the dictionary and the project's forms `held` (see `_forms_held`)."""

    def __init__(self, found: redcap.Dictionary, held: tuple[bool, dict[str, set[str]], list[str]]):
        self.fields = found.fields
        self.forms = list(dict.fromkeys(f.form for f in self.fields.values()))
        self.longitudinal, self.held, self.repeating = held
        self.settings: dict[str, Any] = {}
        self.why: dict[str, str] = {}
        self.not_inferred: dict[str, str] = {}
        self.used: set[str] = set()  # the fields given a role

    def run(self) -> InferredMapping:
        self.record_id()
        self.identity()
        self.sex()
        self.birth_year()
        consent_form = self.consent()
        self.participant_forms(consent_form)
        self.visit_dates()
        visits = {event: _label(event) for event in self.held} if self.longitudinal else {}
        if visits:
            self.why["visit_labels"] = "none: each event's visit is its name without its arm"
        if self.repeating:
            self.settings["repeats"] = dict.fromkeys(self.repeating, "observation")
            self.why["repeats"] = (
                f"{', '.join(self.repeating)}: each instance a dated observation in its "
                "event's visit"
            )
        order = (
            "record_id", "visit_date", "sex", "birth_year", "classic_label",
            "participant_forms", "event_dates", "visit_labels", "repeats", "identity", "consent",
            "fields",
        )  # fmt: skip
        defaults = {"classic_label": "enrolment", "visit_labels": {}, "fields": {}}
        given = defaults | self.settings
        return InferredMapping(
            mapping=INFERRED,
            settings={key: given[key] for key in order if key in given},
            why=self.why,
            not_inferred=self.not_inferred,
            visits=visits,
        )

    def take(self, key: str, f: redcap.Field, why: str) -> None:
        self.used.add(f.name)
        self.why[key] = why

    def candidates(self, value_type: PhenotypeType) -> list[redcap.Field]:
        """The fields of a type that no setting took yet, in the dictionary's order."""
        return [
            f
            for f in self.fields.values()
            if f.value_type is value_type and f.name not in self.used
        ]

    def record_id(self) -> None:
        first = next(iter(self.fields.values()))
        self.settings["record_id"] = first.name
        self.take("record_id", first, "the dictionary's first field")

    def identity(self) -> None:
        identity: dict[str, str] = {}
        for column, names in IDENTITY_NAMES.items():
            wanted = PhenotypeType.date if column == "date_of_birth" else PhenotypeType.text
            f = next((f for f in self.candidates(wanted) if f.name in names), None)
            if f is not None:
                identity[column] = f.name
                self.take(f"identity.{column}", f, f"named like a {column.replace('_', ' ')}")
        self.settings["identity"] = identity
        if not identity:
            self.not_inferred["identity"] = (
                "no field named like an MRN, a family or given name or a date of birth (other "
                "PHI still goes to the identity table)"
            )

    def sex(self) -> None:
        """The first radio or dropdown named like sex, if its choices are all sexes (read
        as the import reads them: `choices`)."""
        self.settings["sex"] = ""
        sexes = [s.value for s in Sex]
        for f in self.candidates(PhenotypeType.choice):
            named = f.name in SEX_NAMES or "sex" in f.name.split("_")
            if named and f.field_type in ("radio", "dropdown"):
                others = [label for code, label in f.choices if sex_of(code, label, {}) is None]
                if not others:
                    self.settings["sex"] = f.name
                    self.take("sex", f, f"a {f.field_type} named like sex, its choices sexes")
                else:
                    self.not_inferred["sex"] = (
                        f"{f.name}: its choices {', '.join(others)} are not sexes "
                        f"({', '.join(sexes)}); map them with [fields.{f.name}] choices"
                    )
                return
        self.not_inferred["sex"] = "no radio or dropdown field named sex or gender"

    def birth_year(self) -> None:
        years = self.candidates(PhenotypeType.integer)
        f = next((f for f in years if f.name in BIRTH_YEAR_NAMES), None)
        if f is not None:
            self.settings["birth_year"] = f.name
            self.take("birth_year", f, "an integer field named like a year of birth")
            return
        self.settings["birth_year"] = ""
        why = f"no integer field named {', '.join(sorted(BIRTH_YEAR_NAMES))}"
        if "date_of_birth" in self.settings["identity"]:
            why += "; the date of birth goes to the identity table"
        self.not_inferred["birth_year"] = why

    def consent(self) -> str | None:
        """The consent form, if its fields are all found (see the module)."""
        self.settings["consent"] = {}
        form = next((form for form in self.forms if form.startswith("consent")), None)
        if form is None:
            self.not_inferred["consent"] = "no form named consent…"
            return None
        mine = [f for f in self.fields.values() if f.form == form and f.name not in self.used]
        texts = [f for f in mine if f.value_type is PhenotypeType.text]
        version = next((f for f in texts if "version" in _words(f)), None)
        dates = [f for f in mine if f.value_type is PhenotypeType.date and not _phi(f)]
        signed = dates[0] if dates else None
        statements: dict[str, str] = {}
        unmatched = []
        for f in (f for f in mine if f.value_type is PhenotypeType.boolean):
            codes = [code for code, words in STATEMENTS.items() if words & _words(f)]
            if len(codes) == 1 and codes[0] not in statements.values():
                statements[f.name] = codes[0]
            else:
                unmatched.append(f.name)
        lacks = [] if version else ["a version field"]
        lacks += [] if signed else ["a date field"]
        lacks += [] if statements or unmatched else ["yes/no fields"]
        if unmatched:
            known = ", ".join(STATEMENTS)
            lacks.append(f"a statement ({known}) for {', '.join(unmatched)}")
        if version is None or signed is None or lacks:
            self.not_inferred["consent"] = (
                f"the form {form} lacks {' and '.join(lacks)}: map it in [consent]"
            )
            return None
        self.settings["consent"] = {
            "document": form.upper().replace("_", "-")[:64],
            "title": form.replace("_", " ").capitalize(),
            "version": version.name,
            "signed_on": signed.name,
            "statements": statements,
        }
        self.used |= {version.name, signed.name, *statements}
        self.why["consent"] = (
            f"the form {form}: version {version.name}, signed on {signed.name}, "
            + ", ".join(f"{name} → {code}" for name, code in statements.items())
        )
        return form

    def participant_forms(self, consent_form: str | None) -> None:
        named = [form for form in self.forms if PARTICIPANT_FORM.match(form)]
        why = dict.fromkeys(named, "named so")
        labels: dict[str, set[str]] = {}  # event label → the forms its events hold
        for event, forms in self.held.items():
            labels.setdefault(_label(event), set()).update(forms)
        if self.longitudinal and len(labels) > 1:
            first, *others = labels.values()
            later = set().union(*others)
            for form in self.forms:
                if form in first - later and form not in why:
                    why[form] = "held in the first event only"
        why.pop(consent_form or "", None)
        self.settings["participant_forms"] = list(why)
        if why:
            told = {w: [form for form in why if why[form] == w] for w in why.values()}
            self.why["participant_forms"] = "; ".join(
                f"{w}: {', '.join(forms)}" for w, forms in told.items()
            )
        else:
            self.not_inferred["participant_forms"] = (
                "no form named like demographics: every value is a visit's"
            )

    def visit_dates(self) -> None:
        """Each event's date field (see the module)."""
        participant = set(self.settings["participant_forms"])
        dates = [f for f in self.candidates(PhenotypeType.date) if not _phi(f)]
        picks: dict[str, tuple[redcap.Field, str] | None] = {}
        for event, held in self.held.items():
            mine = [f for f in dates if f.form in held]
            named = [f for f in mine if _words(f) & VISIT_WORDS]
            if named:
                picks[event] = named[0], "a date field named like a visit date"
            elif mine:
                first = sorted(mine, key=lambda f: f.form in participant)[0]
                picks[event] = first, "the first date field of its forms"
            else:
                picks[event] = None
        undated = [event or "(the records)" for event, pick in picks.items() if pick is None]
        dated = {event: pick for event, pick in picks.items() if pick is not None}
        names = {f.name for f, _ in dated.values()}
        self.settings["visit_date"] = ""
        self.settings["event_dates"] = {}
        if len(names) == 1 and not undated:
            f, why = next(iter(dated.values()))
            self.settings["visit_date"] = f.name
            self.take(
                "visit_date", f, why + (", in every event's forms" if self.longitudinal else "")
            )
        else:
            for event, (f, why) in dated.items():
                self.settings["event_dates"][event] = f.name
                self.take(f"event_dates.{event}", f, why)
        if undated:
            self.not_inferred["visit_date"] = (
                f"no date field in the forms of {', '.join(undated)}: their visits are dated by "
                "the row's first date filled, else by their record's first date"
            )
        elif not picks:
            self.not_inferred["visit_date"] = "the records have no rows to infer it from"


def _phi(f: redcap.Field) -> bool:
    return f.identifier or phi_reason(f.name, f.label, f.validation) is not None


def _label(event: str) -> str:
    """An event's visit label as the import makes it when the mapping names none."""
    return canonical_visit_label(redcap.split_event(event)[0])


def mapping_toml(inferred: InferredMapping | None, settings: dict[str, Any], title: str) -> str:
    """A mapping's settings as a TOML file to edit: each setting with a note of what it is,
    and, for an inferred mapping, why it was inferred so, or why not."""
    why = inferred.why if inferred is not None else {}
    lines = [
        f"# {title}",
        "# Import with it: biobank import redcap … --mapping THIS_FILE. Values are REDCap field",
        '# names; "" is none. A setting left out is the shipped lupus mapping\'s.',
    ]
    if inferred is not None and inferred.not_inferred:
        lines += ["#", "# Not inferred:"]
        for key, reason in inferred.not_inferred.items():
            lines += _comment(f"{key}: {reason}", "#   ", "#     ")
    for key, value in sorted(settings.items(), key=lambda item: isinstance(item[1], dict)):
        lines += ["", *_comment(NOTES.get(key, ""), "# ", "# ")]
        for told, reason in why.items():
            if told == key or told.startswith(f"{key}."):
                lines += _comment(f"inferred: {told}: {reason}", "# ", "#   ")
        lines.append(tomli_w.dumps({key: value}).rstrip("\n"))
        if key == "visit_labels" and not value and inferred is not None:
            lines += [f'# {event} = "{label}"' for event, label in inferred.visits.items()]
    return "\n".join(lines) + "\n"


def _comment(text: str, first: str, then: str) -> list[str]:
    return textwrap.wrap(text, 96, initial_indent=first, subsequent_indent=then)
