"""A cohort query as data: what a PI asks for, never SQL text from the user.

"All serum from patients with class III/IV nephritis and UPCR ≥ 0.25 at collection,
consented for genetic research, at least 200 µL left" is

    CohortQuery(
        specimen_types=["SER"], min_quantity=200,
        phenotypes=parse_conditions("ln_class in (III, IV) and upcr >= 0.25"),
    )

with the uses (GENETIC) given to the export. A query is saved and replayed as its JSON; the
services check every name in it against the dictionary before running it.
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from biobank.errors import ValidationError

Operator = Literal["=", "!=", "<", "<=", ">", ">=", "in", "not in", "exists"]
OPERATORS: tuple[str, ...] = ("=", "!=", "<", "<=", ">", ">=", "in", "not in", "exists")
Scalar = bool | int | float | date | str
MAX_CONDITION = 10_000  # characters of a condition's text
MAX_DEPTH = 50  # parentheses within parentheses


class Condition(BaseModel):
    """One phenotype comparison, of the value at collection or of any value ever recorded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    variable: str
    op: Operator
    value: Scalar | list[Scalar] | None = None
    when: Literal["collection", "ever"] = "collection"

    @model_validator(mode="after")
    def _value_fits_operator(self) -> Condition:
        listed = isinstance(self.value, list)
        if self.op in ("in", "not in") and not (listed and self.value):
            raise ValueError(f"{self.variable} {self.op} needs a list of values")
        if self.op == "exists" and self.value is not None:
            raise ValueError(f"{self.variable} exists takes no value")
        if self.op not in ("in", "not in", "exists") and (listed or self.value is None):
            raise ValueError(f"{self.variable} {self.op} needs one value")
        return self


class Group(BaseModel):
    """Conditions combined: all of them (and) or any of them (or); groups nest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    match: Literal["all", "any"] = "all"
    conditions: list[Condition | Group] = Field(min_length=1)

    def variables(self) -> set[str]:
        names: set[str] = set()
        for c in self.conditions:
            names |= c.variables() if isinstance(c, Group) else {c.variable}
        return names


class CohortQuery(BaseModel):
    """Filters over specimens, their participants and their phenotypes, combined with and."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    specimen_types: list[str] = []
    statuses: list[str] = ["available"]
    min_quantity: float | None = Field(default=None, ge=0)
    collected_from: date | None = None
    collected_to: date | None = None
    max_freeze_thaws: int | None = Field(default=None, ge=0)
    storage: str | None = None  # a unit's barcode: everything stored under it
    study: str | None = None  # a study's code: its participants only
    shipment: str | None = None  # a shipment's code: the tubes it sent only
    sex: list[str] = []
    min_age: int | None = Field(default=None, ge=0, le=130)  # at collection, in whole years
    max_age: int | None = Field(default=None, ge=0, le=130)
    phenotypes: Group | None = None

    @model_validator(mode="after")
    def _ranges_in_order(self) -> CohortQuery:
        if self.collected_from and self.collected_to and self.collected_from > self.collected_to:
            raise ValueError("collected_from is after collected_to")
        if self.min_age is not None and self.max_age is not None and self.min_age > self.max_age:
            raise ValueError("min_age is above max_age")
        return self


_SETS = ("specimen_types", "statuses", "sex")  # both hold: what the two lists share
_LOWER_BOUNDS = ("min_quantity", "collected_from", "min_age")  # both hold: the higher
_UPPER_BOUNDS = ("collected_to", "max_freeze_thaws", "max_age")  # both hold: the lower
_PLACES = ("storage", "study", "shipment")  # one each: two different ones cannot both hold


def narrowed(saved: CohortQuery, filters: CohortQuery) -> CohortQuery:
    """A saved query with further filters, every one of both holding (and): never wider
    than the saved query. Only the filters given (`model_fields_set`) count; two that
    cannot both hold (types with none in common, two storage units) are refused, naming
    them, rather than giving an empty or a wider cohort."""
    update: dict[str, object] = {}
    for name in filters.model_fields_set:
        mine, theirs = getattr(saved, name), getattr(filters, name)
        if theirs is None or theirs == []:
            continue
        if mine is None or mine == [] or mine == theirs:
            update[name] = theirs
        elif name in _SETS:
            wanted = {str(v).upper() for v in theirs}
            both = [v for v in mine if str(v).upper() in wanted]
            if not both:
                raise ValidationError(
                    f"{name}: the saved query's {', '.join(map(str, mine))} and "
                    f"{', '.join(map(str, theirs))} have nothing in common",
                    field=name,
                    value=theirs,
                )
            update[name] = both
        elif name in _LOWER_BOUNDS:
            update[name] = max(mine, theirs)
        elif name in _UPPER_BOUNDS:
            update[name] = min(mine, theirs)
        elif name in _PLACES:
            if str(mine).upper() != str(theirs).upper():
                raise ValidationError(
                    f"{name}: the saved query is limited to {mine}, not {theirs}",
                    field=name,
                    value=theirs,
                )
        else:  # phenotypes
            update[name] = Group(match="all", conditions=[mine, theirs])
    return load_query(saved.model_dump(mode="json") | _dumped(update))


def _dumped(update: dict[str, object]) -> dict[str, object]:
    return {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v
            for k, v in update.items()}  # fmt: skip


def load_query(data: object) -> CohortQuery:
    """A query from its JSON form (a saved query, a manifest), or a ValidationError naming the
    first field at fault."""
    try:
        return CohortQuery.model_validate(data)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        # Drop pydantic's internal steps (validator and union tags) from the location.
        path = [str(p) for p in first["loc"] if "[" not in str(p)]
        where = ".".join(path) or "query"
        reason = first["msg"].removeprefix("Value error, ")
        raise ValidationError(f"{where}: {reason}", field=where, value=first.get("input")) from None


# --- The text form ------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"[^"]*"|'[^']*')
      | (?P<op><=|>=|!=|=|<|>)
      | (?P<punct>[(),])
      | (?P<word>[^\s(),<>=!"']+)
    )""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position or match.lastgroup is None:
            raise ValidationError(
                f"cannot read the condition from {text[position:]!r}",
                field="where",
                value=text,
            )
        kind = match.lastgroup
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


def _literal(kind: str, text: str) -> Scalar:
    """Numbers become numbers; quoted text, choice codes and labels stay text; ISO dates dates."""
    if kind == "string":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("yes", "true"):
        return True
    if lowered in ("no", "false"):
        return False
    if re.fullmatch(r"[-+]?(\d+|\d+\.\d*|\.\d+)([eE][-+]?\d+)?", text):
        return _number(text)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    return text


def _number(text: str) -> int | float:
    """Whole numbers of up to 18 digits stay whole (64 bits hold them); any other is a float,
    as the values it is compared with are, and one beyond a float's range is refused."""
    number = int(text) if re.fullmatch(r"[-+]?\d{1,18}", text) else float(text)
    if math.isinf(number):
        shown = text if len(text) <= 24 else f"{text[:12]}… ({len(text):,} characters)"
        raise ValidationError(f"the number {shown} is out of range", field="where", value=text)
    return number


class _Parser:
    """conditions := term (("and" | "or") term)* — one kind of joiner per level, parentheses
    for the other; term := "(" conditions ")" | "ever" "(" comparison ")" | comparison.

    Its recursion is bounded: at most MAX_DEPTH parentheses deep, in at most MAX_CONDITION
    characters."""

    def __init__(self, text: str):
        if len(text) > MAX_CONDITION:
            raise ValidationError(
                f"the condition is {len(text):,} characters long; at most {MAX_CONDITION:,}",
                field="where",
                value=text,
            )
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0
        self.depth = 0

    def fail(self, reason: str) -> ValidationError:
        shown = " ".join(t for _, t in self.tokens[self.at : self.at + 3]) or "the end"
        return ValidationError(
            f"{reason} at {shown!r} in the condition {self.text!r}", field="where", value=self.text
        )

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise self.fail("the condition ends too early")
        self.at += 1
        return token

    def expect(self, text: str) -> None:
        token = self.peek()
        if token is None or token[1].lower() != text:
            raise self.fail(f"expected {text!r}")
        self.at += 1

    def keyword(self) -> str | None:
        token = self.peek()
        return token[1].lower() if token and token[0] == "word" else None

    def parse(self) -> Group:
        group = self.conditions()
        if self.peek() is not None:
            raise self.fail("unexpected text")
        return group if isinstance(group, Group) else Group(conditions=[group])

    def conditions(self) -> Condition | Group:
        items = [self.term()]
        joiner = None
        while self.keyword() in ("and", "or"):
            word = self.take()[1].lower()
            if joiner is not None and word != joiner:
                raise self.fail("mixing 'and' and 'or' needs parentheses")
            joiner = word
            items.append(self.term())
        if joiner is None:
            return items[0]
        return Group(match="all" if joiner == "and" else "any", conditions=items)

    def term(self) -> Condition | Group:
        token = self.peek()
        if token == ("punct", "("):
            self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ValidationError(
                    f"the condition nests parentheses more than {MAX_DEPTH} deep",
                    field="where",
                    value=self.text,
                )
            inner = self.conditions()
            self.expect(")")
            self.depth -= 1
            return inner
        if self.keyword() == "ever" and self.tokens[self.at + 1 : self.at + 2] == [("punct", "(")]:
            self.take()
            self.take()
            condition = self.comparison(when="ever")
            self.expect(")")
            return condition
        return self.comparison(when="collection")

    def comparison(self, *, when: str) -> Condition:
        kind, variable = self.take()
        if kind != "word":
            self.at -= 1
            raise self.fail("expected a variable name")
        variable = variable.lower()
        word = self.keyword()
        if word == "exists":
            self.take()
            return self.condition(variable, "exists", None, when)
        if word == "not":
            self.take()
            self.expect("in")
            return self.condition(variable, "not in", self.values(), when)
        if word == "in":
            self.take()
            return self.condition(variable, "in", self.values(), when)
        kind, op = self.take()
        if kind != "op":
            self.at -= 1
            raise self.fail(f"expected an operator ({', '.join(OPERATORS)}) after {variable}")
        return self.condition(variable, op, self.value(), when)

    def value(self) -> Scalar:
        kind, text = self.take()
        if kind not in ("word", "string"):
            self.at -= 1
            raise self.fail("expected a value")
        return _literal(kind, text)

    def values(self) -> list[Scalar]:
        self.expect("(")
        found = [self.value()]
        while self.peek() == ("punct", ","):
            self.take()
            found.append(self.value())
        self.expect(")")
        return found

    def condition(self, variable: str, op: str, value: object, when: str) -> Condition:
        try:  # the operator and `when` are text as read, until the model checks them
            return Condition.model_validate(
                {"variable": variable, "op": op, "value": value, "when": when}
            )
        except pydantic.ValidationError as error:
            reason = error.errors()[0]["msg"].removeprefix("Value error, ")
            raise ValidationError(reason, field="where", value=self.text) from None


def _shown(value: Scalar) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, date):
        return value.isoformat()
    return f"'{value}'" if '"' in value else f'"{value}"'


def describe(conditions: Condition | Group, *, nested: bool = False) -> str:
    """The text form of conditions, which `parse_conditions` reads back to the same thing."""
    if isinstance(conditions, Group):
        joiner = " and " if conditions.match == "all" else " or "
        text = joiner.join(describe(c, nested=True) for c in conditions.conditions)
        return f"({text})" if nested and len(conditions.conditions) > 1 else text
    c = conditions
    if c.value is None:  # exists, the one operator without a value
        text = f"{c.variable} exists"
    elif isinstance(c.value, list):  # in, not in
        text = f"{c.variable} {c.op} ({', '.join(_shown(v) for v in c.value)})"
    else:
        text = f"{c.variable} {c.op} {_shown(c.value)}"
    return f"ever({text})" if c.when == "ever" else text


def parse_conditions(text: str) -> Group:
    """`ln_class in (III, IV) and upcr >= 0.25`, `sledai2k >= 6 or ever(ln_biopsy = yes)`;
    mixing and/or needs parentheses, so no one has to remember which binds tighter."""
    if not text or not text.strip():
        raise ValidationError("the condition is empty", field="where", value=text)
    return _Parser(text).parse()
