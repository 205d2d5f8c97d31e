"""Checking a REDCap data dictionary against the mapping and the variables there are: which
field is the record ID, the visit date, sex, birth year, identity or consent, which the mapping
skips, which holds PHI (flagged an identifier, or by its validation or name:
`biobank.domain.phi`), and which phenotype variable each other field's values go to.

A field's variable is the one the mapping names (`[fields.<name>] variable`), else the one of
its name or a former name, else one made from the field. A field that has the name of a
variable of another meaning (another type, or choices that do not map onto its choices by the
mapping or by label: `choices`) is never merged into it: unless the mapping renames or maps it,
its values go to a variable of the project's own, `<namespace>__<field>` (the mapping's
`namespace`, else the study's code), with a notice saying why."""

from __future__ import annotations

import re
from datetime import date

import sqlalchemy as sa
from sqlmodel import Session, col, select

from biobank import redcap
from biobank.domain.phi import Phi, phi_reason
from biobank.domain.vocabulary import PhenotypeScope, PhenotypeType, Sex
from biobank.errors import ValidationError
from biobank.models import (
    ConsentDocument,
    ConsentDocumentStatement,
    ConsentStatement,
    PhenotypeVariable,
)
from biobank.services import phenotype_variables
from biobank.services.imports.common import ImportReport
from biobank.services.imports.redcap import choices
from biobank.services.imports.redcap.faults import Faults
from biobank.services.imports.redcap.mapping import NAMESPACE_LIMIT, RedcapMapping
from biobank.services.imports.redcap.mapping_fields import FieldRule
from biobank.services.imports.redcap.planning import Tally, Target
from biobank.tabular import Source

# A REDCap type a variable of another type still takes: every integer is a decimal.
WIDER = {(PhenotypeType.integer, PhenotypeType.decimal)}


class Dictionary:
    """What the data dictionary's fields are, once `read`."""

    def __init__(
        self,
        session: Session,
        report: ImportReport,
        tally: Tally,
        faults: Faults,
        mapping: RedcapMapping,
    ):
        self.session = session
        self.report = report
        self.tally = tally
        self.faults = faults
        self.mapping = mapping
        self.consent = mapping.consent  # None when the dictionary has no consent field
        self.fields: dict[str, redcap.Field] = {}  # but those the mapping skips
        self.named: set[str] = set()  # every field the dictionary defines
        self.forms: set[str] = set()  # every form, its fields skipped or not
        self.skipped_forms: set[str] = set()  # forms whose every field the mapping skips
        # columns of fields without values, with faults, or that the mapping skips
        self.skipped: set[str] = set()
        self.known: dict[str, PhenotypeVariable] = {}  # by name and former name, retired too
        self.targets: dict[str, Target] = {}
        self.others: list[redcap.Field] = []  # identifiers for the identity table's `other`
        self.phi: dict[str, str] = {}  # PHI not flagged, or placed by the mapping → why
        self.kept: dict[str, str] = {}  # PHI the mapping keeps as phenotypes → why
        self.sexes: dict[str, Sex] = {}  # REDCap code → sex
        self.sex_field: redcap.Field | None = None
        self.birth_field: redcap.Field | None = None
        # None: not in the dictionary (a classic project's visits take a date field filled)
        self.visit_date_field: redcap.Field | None = None
        self.statements: dict[str, str] = {}  # consent statement → its (yes/no) field
        self.stored_documents: dict[str, tuple[date, list[str]]] = {}

    def read(self, source: Source) -> bool:
        """Each field's role; False when the records cannot be read without a fix."""
        found = redcap.read_dictionary(source.records())
        name = self.report.dictionary
        for p in found.problems:
            self.faults.fault(name, None, p.line, p.field, p.value, p.reason)
        self.fields = dict(found.fields)
        self.named, self.forms = set(found.fields), found.forms
        self.skipped = set(found.skipped) | set(found.faulty)
        self.report.fields = len(found.fields)
        if found.skipped:
            self.report.notices.append(
                f"fields without values (descriptive, file): {', '.join(found.skipped)}"
            )
        if found.times_dropped:
            self.report.notices.append(
                f"datetime fields read as dates, the time dropped: {', '.join(found.times_dropped)}"
            )
        if found.custom_validations:
            self.report.notices.append(
                "fields with a validation of this REDCap's own, read as text: "
                + ", ".join(found.custom_validations)
            )
        mapping, roles = self.mapping, self.mapping.roles()
        for key, forms in (
            ("participant form", mapping.participant_forms),
            ("skipped form", mapping.skip_forms),
            ("repeating form", frozenset(mapping.repeats)),
        ):
            for form in sorted(forms - found.forms):
                self.report.notices.append(f"the mapping's {key} {form!r} is not in the dictionary")
        self.skip(roles)
        usable = self.role_field(mapping.record_id, "record_id", required=True) is not None
        if mapping.visit_date in found.fields:  # else a longitudinal project's header faults
            self.visit_date_field = self.role_field(
                mapping.visit_date, "visit_date", PhenotypeType.date
            )
            usable &= self.visit_date_field is not None
        self.sex_field = self.role_field(mapping.sex, "sex", PhenotypeType.choice)
        if self.sex_field is not None:
            self.read_sexes(self.sex_field)
        self.birth_field = self.role_field(mapping.birth_year, "birth_year", PhenotypeType.integer)
        for column, field_name in mapping.identity.items():
            wanted = PhenotypeType.date if column == "date_of_birth" else None
            if self.role_field(field_name, f"identity.{column}", wanted):
                self.faults.phi.add(field_name)
        self.read_consent_fields()
        self.known = phenotype_variables.variables_by_name(self.session, include_retired=True)
        for f in self.fields.values():
            if f.name in roles:
                if f.identifier and f.name not in self.faults.phi:
                    self.report.notices.append(
                        f"{f.name} is marked as an identifier; the mapping takes it as the "
                        f"{roles[f.name]}"
                    )
            else:
                self.place(f)
        self.notice_phi()
        self.tally.variables.added = sum(t.variable is None for t in self.targets.values())
        self.tally.variables.unchanged = len(self.targets) - self.tally.variables.added
        return usable

    def skip(self, roles: dict[str, str]) -> None:
        """Leave out the fields the mapping skips, by name or by form (but those it gives a
        role: a skipped form's record ID is still the record ID); their columns are known."""
        mapping, left = self.mapping, []
        for f in list(self.fields.values()):
            rule = mapping.fields.get(f.name)
            if f.name not in roles and ((rule and rule.skip) or f.form in mapping.skip_forms):
                del self.fields[f.name]
                self.skipped.update(f.columns)
                left.append(f.name)
        if left:
            self.skipped_forms = self.forms - {f.form for f in self.fields.values()}
            self.report.notices.append(f"fields the mapping skips: {', '.join(left)}")

    def place(self, f: redcap.Field) -> None:
        """A field the mapping gives no role: PHI (flagged, or by its validation or name) to
        the identity table's `other`, unless the mapping keeps or drops it; else a phenotype."""
        rule = self.mapping.fields.get(f.name)
        phi = rule.phi if rule is not None else None
        why = "identifier" if f.identifier else phi_reason(f.name, f.label, f.validation)
        if phi is Phi.keep:
            if why is not None:
                self.kept[f.name] = why
            self.target(f)
            return
        if why is None and phi is None:
            self.target(f)
            return
        self.faults.phi.add(f.name)  # no fault shows its values
        if phi is not Phi.drop:
            self.others.append(f)
        if phi is not None or not f.identifier:  # the flagged go where the project says
            why = why or "the mapping"
            self.phi[f.name] = f"{why}, dropped" if phi is Phi.drop else why

    def notice_phi(self) -> None:
        """The fields the PHI rules took out of the phenotypes or the mapping kept in, by name
        (never a value)."""
        for f in sorted(self.mapping.fields.keys() - self.named):
            self.report.notices.append(f"the mapping's fields.{f} is not in the dictionary")
        for title, found in (
            ("PHI, not imported as phenotypes", self.phi),
            ('PHI imported as phenotypes (phi = "keep" in the mapping)', self.kept),
        ):
            if found:
                listed = ", ".join(f"{name} ({why})" for name, why in found.items())
                self.report.notices.append(f"{title}: {listed}")

    def read_sexes(self, sex: redcap.Field) -> None:
        """Which sex each choice of the sex field is: the mapping's `choices`, else by label
        (`choices.SEX_LABELS`)."""
        given = self.rule(sex).choices
        self.stray_choices(sex, given)
        for code, label in sex.choices:
            match = choices.sex_of(code, label, given)
            if match is None:
                allowed = ", ".join(s.value for s in Sex)
                self.faults.fault(
                    self.report.dictionary,
                    None,
                    sex.line,
                    sex.name,
                    label,
                    f"{sex.name}: the choice {code}, {label} is not a sex ({allowed}); map it "
                    f"in the mapping's [fields.{sex.name}] choices",
                )
            else:
                self.sexes[code] = match

    def rule(self, f: redcap.Field) -> FieldRule:
        return self.mapping.fields.get(f.name) or FieldRule()

    def stray_choices(self, f: redcap.Field, given: dict[str, str]) -> bool:
        """Fault each key of the mapping's `choices` for a field that is none of its choices
        (or for a field without choices); True when there is none."""
        key = f"fields.{f.name}.choices"
        if given and not f.choices:
            reason = f"{key}: {f.name} has no choices ({f.field_type})"
            self.faults.fault(self.mapping.file, None, None, key, f.field_type, reason)
            return False
        strays = choices.strays(f, given)
        listed = ", ".join(f"{code} ({label})" for code, label in f.choices)
        for stray in strays:
            reason = f"{key}: {stray!r} is none of the choices of {f.name} ({listed})"
            self.faults.fault(self.mapping.file, None, None, key, stray, reason)
        return not strays

    def role_field(
        self,
        name: str | None,
        key: str,
        wanted: PhenotypeType | None = None,
        *,
        required: bool = False,
    ) -> redcap.Field | None:
        """The dictionary's field the mapping names for `key`, if it is there and fits."""
        if name is None:
            return None
        found = self.fields.get(name)
        if found is None:
            if required:
                self.faults.fault(
                    self.mapping.file,
                    None,
                    None,
                    key,
                    name,
                    f"no field {name!r} in the data dictionary",
                )
            else:
                self.report.notices.append(
                    f"no field {name!r} ({key} in the mapping) in the dictionary; not imported"
                )
            return None
        if wanted is None:
            return found
        fits = found.value_type is wanted
        if key == "birth_year":  # a year, or a date of birth
            fits = found.value_type in (PhenotypeType.integer, PhenotypeType.date)
        if not fits:
            self.faults.fault(
                self.report.dictionary,
                None,
                found.line,
                name,
                found.field_type,
                f"{name} ({key} in the mapping) must be of type {wanted.value}, "
                f"not {found.value_type.value}",
            )
            return None
        return found

    def read_consent_fields(self) -> None:
        given = self.consent
        if given is None:
            return
        present = [
            f for f in (given.version, given.signed_on, *given.statements) if f in self.fields
        ]
        if not present:
            self.report.notices.append(
                "the dictionary has none of the mapping's consent fields; consent not imported"
            )
            self.consent = None
            return
        self.role_field(given.version, "consent.version", required=True)
        self.role_field(given.signed_on, "consent.signed_on", PhenotypeType.date, required=True)
        self.statements = {
            code: name
            for name, code in given.statements.items()
            if self.role_field(name, f"consent.statements.{name}", PhenotypeType.boolean)
        }
        known = set(self.session.exec(select(ConsentStatement.code)).all())
        for name, code in given.statements.items():
            if code not in known:
                reason = f"no consent statement {code} (known: {', '.join(sorted(known))})"
                self.faults.fault(
                    self.mapping.file, None, None, f"consent.statements.{name}", code, reason
                )
        self.stored_documents = self.load_documents(given.document)

    def load_documents(self, code: str) -> dict[str, tuple[date, list[str]]]:
        documents: dict[str, tuple[date, list[str]]] = {}
        rows = self.session.execute(
            sa.select(
                col(ConsentDocument.version),
                col(ConsentDocument.effective_on),
                col(ConsentStatement.code),
            )
            .join(
                ConsentDocumentStatement,
                col(ConsentDocumentStatement.document_id) == ConsentDocument.id,
            )
            .join(
                ConsentStatement, col(ConsentStatement.id) == ConsentDocumentStatement.statement_id
            )
            .where(col(ConsentDocument.code) == code)
            .order_by(col(ConsentDocument.id), col(ConsentDocumentStatement.position))
        )
        for version, effective_on, statement in rows:
            documents.setdefault(version, (effective_on, []))[1].append(statement)
        return documents

    def target(self, f: redcap.Field) -> None:
        """The variable a field's values go to (see the module): none for a retired one."""
        rule = self.rule(f)
        if not self.stray_choices(f, rule.choices):
            return
        name = rule.variable or f.name
        variable = self.known.get(name)
        if variable is not None and variable.retired_at is None and not rule.maps:
            _, why = self.fit(f, variable, {})
            if why is not None:  # another meaning: the project's own variable
                name = self.namespaced(f, variable, why)
                variable = self.known.get(name)
        resolved = variable.name if variable is not None else name
        twin = next((t for t in self.targets.values() if t.definition.name == resolved), None)
        if twin is not None:
            reason = f"{f.name} and {twin.field.name} are both the variable {resolved}"
            given = [n for n in (twin.field.name, f.name) if n in self.mapping.fields]
            if any(self.mapping.fields[n].variable for n in given):
                reason += " (the mapping's [fields] variable)"
            else:  # one of them has the name the variable had
                reason += " (renamed)"
            self.faults.fault(self.report.dictionary, None, f.line, f.name, f.name, reason)
            return
        if variable is None:
            self.new_target(f, name, rule)
            return
        if variable.retired_at is not None:
            self.report.notices.append(
                f"{f.name}: the variable {variable.name} is retired; its values are not imported"
            )
            return
        if rule.variable is None and variable.name != name:
            self.report.notices.append(f"{f.name} is the variable {variable.name} (renamed)")
        codes, why = self.fit(f, variable, rule.choices)
        if why is not None:
            self.misfit(f, variable, rule, why)
            return
        self.targets[f.name] = Target(
            f, phenotype_variables.variable_read(variable), variable, codes
        )

    def namespaced(self, f: redcap.Field, variable: PhenotypeVariable, why: str) -> str:
        """The project's own variable for a field of another meaning than `variable`'s."""
        namespace = self.mapping.namespace or namespace_of(self.report.study)
        name = f"{namespace}__{f.name}"
        self.report.notices.append(
            f"{f.name} is imported as the variable {name}, not as {variable.name}, which is "
            f"another meaning here: {why}"
        )
        return name  # over 64 characters: refused as a variable name, like any field's

    def fit(
        self, f: redcap.Field, variable: PhenotypeVariable, given: dict[str, str]
    ) -> tuple[dict[str, str], str | None]:
        """REDCap code → the variable's, and why the field is not the variable (None: it is)."""
        have = PhenotypeType(variable.value_type)
        if have is not f.value_type and (f.value_type, have) not in WIDER:
            return {}, f"it is of type {have.value}, the field {f.value_type.value}"
        stored = [(c["code"], c["label"]) for c in variable.choices or ()]
        codes, unmatched = choices.fit(f, stored, given)
        if unmatched:
            return codes, f"it has no choice for {'; '.join(unmatched)}"
        return codes, None

    def misfit(
        self, f: redcap.Field, variable: PhenotypeVariable, rule: FieldRule, why: str
    ) -> None:
        """The fault of a field the mapping (or its namespace) sends to a variable it is not:
        each choice that does not map, or the type."""
        file, column = self.report.dictionary, f.name
        line: int | None = f.line
        if rule.maps:  # the mapping's fault
            file, line = self.mapping.file, None
            column = f"fields.{f.name}.{'choices' if rule.choices else 'variable'}"
        have = PhenotypeType(variable.value_type)
        if have is not f.value_type and (f.value_type, have) not in WIDER:
            reason = (
                f"the variable {variable.name} is of type {have.value} here; the dictionary "
                f"makes {'it' if variable.name == f.name else f.name} {f.value_type.value}"
            )
            self.faults.fault(file, None, line, column, f.field_type, reason)
            return
        stored = [(c["code"], c["label"]) for c in variable.choices or ()]
        allowed = ", ".join(f"{c} ({lab})" for c, lab in stored)
        _, unmatched = choices.fit(f, stored, rule.choices)
        whose = "the variable's" if variable.name == f.name else f"{variable.name}'s"
        for choice in unmatched:
            reason = f"{f.name}: the choice {choice} is none of {whose} ({allowed})"
            self.faults.fault(file, None, line, column, choice, reason)

    def new_target(self, f: redcap.Field, name: str, rule: FieldRule) -> None:
        """A variable made from the field, under `name`, its codes as the mapping renames them."""
        scope = (
            PhenotypeScope.participant
            if f.form in self.mapping.participant_forms
            else PhenotypeScope.visit
        )
        codes, made = choices.recoded(f, rule.choices)
        definition = phenotype_variables.VariableRead(
            name=name,
            label=f.label,
            value_type=f.value_type,
            scope=scope,
            min_value=f.min_value,
            max_value=f.max_value,
            choices=made or None,
            category=f.form[:64],
            description=f.note,
        )
        try:
            phenotype_variables.check_definition(definition)
        except ValidationError as error:
            self.faults.fault(
                self.report.dictionary, None, f.line, f.name, error.value, error.message
            )
            return
        self.targets[f.name] = Target(f, definition, None, codes)


def namespace_of(study: str) -> str:
    """A study's code as the namespace of its project's own variables: `SLE-2` → `sle_2`."""
    name = re.sub(r"[^a-z0-9]+", "_", study.lower()).strip("_")
    name = name if name[:1].isalpha() else f"study_{name}"
    return name[:NAMESPACE_LIMIT].rstrip("_")
