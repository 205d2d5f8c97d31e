"""What the mapping makes of single fields and forms (`[fields.<name>]`, `skip_forms`), and how
every key of a mapping file is checked: a wrong key or value is refused naming the file, the
key and the value (`fail`), before anything is read."""

from __future__ import annotations

from dataclasses import dataclass, field

from biobank.domain.phi import Phi
from biobank.errors import ValidationError
from biobank.services.phenotype_variables import VARIABLE_NAME

RULE_KEYS = ("phi", "variable", "skip", "choices")


@dataclass(frozen=True)
class FieldRule:
    """What the mapping makes of one field (`[fields.<name>]`)."""

    phi: Phi | None = None  # None: PHI (flagged, or by its validation or name) to identity
    variable: str | None = None  # the variable its values go to (None: the field's name)
    skip: bool = False  # not imported at all
    # REDCap code or label → the variable's code or label (the sex field's: a sex)
    choices: dict[str, str] = field(default_factory=dict)

    @property
    def maps(self) -> bool:
        """The mapping says which variable, or which choices: a mismatch is then its fault."""
        return self.variable is not None or bool(self.choices)


def fail(where: str, key: str, reason: str, value: object = None) -> ValidationError:
    """What is wrong with `key` of the mapping file `where`."""
    return ValidationError(f"{where}: {key} {reason}", field="mapping", value=value or key)


def field_name(where: str, key: str, value: object) -> str:
    """A REDCap field's name as the mapping gives it (any case)."""
    if not isinstance(value, str) or not value.strip():
        raise fail(where, key, "must name a REDCap field", value)
    return value.strip().lower()


def form_names(where: str, key: str, value: object) -> frozenset[str]:
    """A list of REDCap form names (any case)."""
    if not isinstance(value, list) or not all(isinstance(f, str) and f.strip() for f in value):
        raise fail(where, key, "must be a list of form names", value)
    return frozenset(f.strip().lower() for f in value)


def field_rules(given: object, where: str) -> dict[str, FieldRule]:
    """`[fields.<name>]` tables: each key checked, named in its fault with its value."""
    if not isinstance(given, dict) or not all(isinstance(r, dict) for r in given.values()):
        raise fail(where, "fields", "must be tables [fields.<field name>]", given)
    rules = {}
    for name, rule in given.items():
        key = f"fields.{name}"
        for unknown in rule.keys() - set(RULE_KEYS):
            raise fail(where, f"{key}.{unknown}", f"is not a setting ({', '.join(RULE_KEYS)})")
        phi = rule.get("phi")
        if phi is not None and phi not in tuple(Phi):
            allowed = ", ".join(Phi)
            raise fail(where, f"{key}.phi", f"is {phi!r}, not one of {allowed}", phi)
        variable = rule.get("variable")
        if variable is not None and (
            not isinstance(variable, str) or not VARIABLE_NAME.match(variable.strip().lower())
        ):
            reason = "must be a variable name: 1-64 of a-z, 0-9 and '_', from a letter"
            raise fail(where, f"{key}.variable", reason, variable)
        skip = rule.get("skip", False)
        if not isinstance(skip, bool):
            raise fail(where, f"{key}.skip", "must be true or false", skip)
        if skip and len(rule) > 1:
            others = ", ".join(sorted(rule.keys() - {"skip"}))
            raise fail(where, f"{key}.skip", f"leaves nothing for {others} to do", others)
        rules[field_name(where, "fields", name)] = FieldRule(
            phi=None if phi is None else Phi(phi),
            variable=variable.strip().lower() if isinstance(variable, str) else None,
            skip=skip,
            choices=choice_table(where, f"{key}.choices", rule.get("choices", {})),
        )
    variables: dict[str, str] = {}
    for name, rule in rules.items():
        if rule.variable is None:
            continue
        first = variables.setdefault(rule.variable, name)
        if first != name:
            reason = f"names the variable {rule.variable}, as fields.{first}.variable does"
            raise fail(where, f"fields.{name}.variable", reason, rule.variable)
    return rules


def choice_table(where: str, key: str, given: object) -> dict[str, str]:
    """REDCap choice (code or label) → the variable's (code or label), as written."""
    if not isinstance(given, dict):
        raise fail(where, key, 'must be a table { "REDCap code or label" = "ours" }', given)
    table = {}
    for code, ours in given.items():
        if not isinstance(ours, str) or not ours.strip() or not str(code).strip():
            raise fail(where, f"{key}.{code}", "must map a REDCap choice to one of ours", ours)
        table[str(code).strip()] = ours.strip()
    return table


def check_roles(
    where: str, rules: dict[str, FieldRule], roles: dict[str, str], sex: str | None
) -> None:
    """A field the mapping gives a role (record ID, sex, consent…) takes no field rule: only
    the sex field its `choices`."""
    for name, rule in rules.items():
        if name not in roles:
            continue
        given = [k for k in RULE_KEYS if getattr(rule, k) not in (None, False, {})]
        for key in given:
            if key == "choices" and name == sex:
                continue
            raise fail(
                where,
                f"fields.{name}.{key}",
                f"is for a field with no other role; {name} is the {roles[name]}",
                getattr(rule, key),
            )
