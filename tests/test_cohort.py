"""Cohort queries are data: the text form reads into conditions and back, and anything that is
not a condition is refused with the place it went wrong."""

import re
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from biobank.domain.cohort import (
    CohortQuery,
    Condition,
    Group,
    describe,
    load_query,
    parse_conditions,
)
from biobank.errors import ValidationError


def test_the_pi_question_reads_as_conditions():
    group = parse_conditions("ln_class in (III, IV) and UPCR >= 0.25")
    assert group == Group(
        match="all",
        conditions=[
            Condition(variable="ln_class", op="in", value=["III", "IV"]),
            Condition(variable="upcr", op=">=", value=0.25),
        ],
    )


def test_or_ever_not_in_exists_and_parentheses():
    group = parse_conditions(
        'sledai2k >= 6 or ever(ln_biopsy = yes) or (race not in ("white", asian) and c3 exists)'
    )
    assert group.match == "any"
    first, second, third = group.conditions
    assert first == Condition(variable="sledai2k", op=">=", value=6)
    assert second == Condition(variable="ln_biopsy", op="=", value=True, when="ever")
    assert third == Group(
        match="all",
        conditions=[
            Condition(variable="race", op="not in", value=["white", "asian"]),
            Condition(variable="c3", op="exists"),
        ],
    )
    assert group.variables() == {"sledai2k", "ln_biopsy", "race", "c3"}


def test_dates_and_numbers_keep_their_type():
    group = parse_conditions("dx_date < 2015-06-01 and pga <= 1e0 and hcq_mg = 400")
    assert [c.value for c in group.conditions] == [date(2015, 6, 1), 1.0, 400]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a = 1 and b = 2 or c = 3", "mixing 'and' and 'or' needs parentheses"),
        ("ln_class in ()", "expected a value"),
        ("ln_class in (III", "expected ')'"),
        ("upcr", "ends too early"),
        ("upcr 0.25", "expected an operator"),
        ("upcr >= 0.25 extra", "unexpected text"),
        ("upcr >= 0.25; DROP TABLE specimen", "unexpected text"),
        ("(upcr >= 0.25", "expected ')'"),
        ("", "empty"),
    ],
)
def test_a_malformed_condition_names_where_it_went_wrong(text, says):
    with pytest.raises(ValidationError, match=re.escape(says)) as caught:
        parse_conditions(text)
    assert caught.value.field == "where"


def test_a_query_round_trips_through_json():
    query = CohortQuery(
        specimen_types=["SER"],
        min_quantity=200,
        collected_from=date(2018, 1, 1),
        sex=["female"],
        min_age=18,
        phenotypes=parse_conditions("ln_class in (III, IV) and upcr >= 0.25"),
    )
    assert load_query(query.model_dump(mode="json")) == query


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"min_age": 60, "max_age": 20}, "query"),
        ({"collected_from": "2020-01-01", "collected_to": "2019-01-01"}, "query"),
        ({"min_quantity": -1}, "min_quantity"),
        ({"sql": "SELECT 1"}, "sql"),
        ({"phenotypes": {"conditions": [{"variable": "c3", "op": "LIKE", "value": 1}]}},
         "phenotypes.conditions.0.op"),
        ({"phenotypes": {"conditions": [{"variable": "c3", "op": "in", "value": 1}]}},
         "phenotypes.conditions.0"),
        ({"phenotypes": {"conditions": []}}, "phenotypes.conditions"),
    ],
)  # fmt: skip
def test_a_malformed_saved_query_names_the_field(data, field):
    with pytest.raises(ValidationError) as caught:
        load_query(data)
    assert caught.value.field == field


names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True).filter(
    lambda n: n not in {"and", "or", "in", "not", "ever", "exists", "yes", "no", "true", "false"}
)
texts = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=0, max_size=12
).filter(lambda t: not ('"' in t and "'" in t))
scalars = st.one_of(
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.dates(),
    texts,
)


@st.composite
def conditions(draw):
    op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "in", "not in", "exists"]))
    if op == "exists":
        value = None
    elif op in ("in", "not in"):
        value = draw(st.lists(scalars, min_size=1, max_size=4))
    else:
        value = draw(scalars)
    when = draw(st.sampled_from(["collection", "ever"]))
    return Condition(variable=draw(names), op=op, value=value, when=when)


groups = st.recursive(
    st.builds(
        Group,
        match=st.sampled_from(["all", "any"]),
        conditions=st.lists(conditions(), min_size=1, max_size=3),
    ),
    lambda inner: st.builds(
        Group,
        match=st.sampled_from(["all", "any"]),
        conditions=st.lists(st.one_of(conditions(), inner), min_size=2, max_size=3),
    ),
    max_leaves=8,
)


def _normal(group: Group) -> Group:
    """What reading back can tell apart: a one-condition group is its condition, and a group
    inside one of the same kind is part of it."""
    items: list = []
    for c in group.conditions:
        if isinstance(c, Group):
            c = _normal(c)
            if len(c.conditions) == 1:
                c = c.conditions[0]
            elif c.match == group.match or len(group.conditions) == 1:
                items += c.conditions if c.match == group.match else [c]
                continue
        items.append(c)
    if len(items) == 1 and isinstance(items[0], Group):
        return items[0]
    return Group(match=group.match if len(items) > 1 else "all", conditions=items)


@given(groups)
def test_describe_reads_back_to_the_same_conditions(group):
    assert _normal(parse_conditions(describe(group))) == _normal(group)
