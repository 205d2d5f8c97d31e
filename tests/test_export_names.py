"""Export column names: a phenotype variable never takes a fixed column's name, and no two
columns share one (the two beside each variable's, saying when it was observed, included),
whatever the variables are called (pure: no database)."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from biobank.export.names import (
    FIXED_COLUMNS,
    PREFIX,
    observation_column_names,
    phenotype_column_names,
)

SNAKE = re.compile(r"[a-z][a-z0-9_]*")
FIXED = sorted(FIXED_COLUMNS)

# snake_case names, with many that are fixed or a fixed name prefixed once or twice, or end
# like the columns beside a variable's: the cases that collide
plain = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
    st.sampled_from(FIXED),
    st.builds(lambda n, times: PREFIX * times + n, st.sampled_from(FIXED), st.integers(1, 2)),
)
names = st.one_of(
    plain,
    st.builds(
        lambda n, times, ends: PREFIX * times + n + "".join(ends),
        st.sampled_from(["a", "bp", "quantity"]),
        st.integers(0, 2),
        st.lists(st.sampled_from(["__observed", "__days_from_collection"]), min_size=1, max_size=2),
    ),
)


def _suffixed(name: str) -> bool:
    return name.endswith(("__observed", "__days_from_collection"))


def test_the_fixed_columns_of_every_mode():
    assert {"participant_code", "sex", "specimen_code", "collected", "quantity", "unit"} <= (
        FIXED_COLUMNS
    )
    assert {"mrn", "family_name", "given_name", "date_of_birth", "specimens"} <= FIXED_COLUMNS


def test_a_variable_named_like_a_fixed_column_is_prefixed():
    assert phenotype_column_names(["sledai2k", "quantity", "unit", "sex", "collected"]) == {
        "sledai2k": "sledai2k",
        "quantity": "var_quantity",
        "unit": "var_unit",
        "sex": "var_sex",
        "collected": "var_collected",
    }
    # `var_quantity` is a variable too: it keeps its name, `quantity` is prefixed again
    assert phenotype_column_names(["quantity", "var_quantity", "var_var_quantity"]) == {
        "quantity": "var_var_var_quantity",
        "var_quantity": "var_quantity",
        "var_var_quantity": "var_var_quantity",
    }
    assert phenotype_column_names([]) == {}


def test_a_variable_named_like_an_observation_column_is_prefixed_only_if_it_meets_one():
    assert observation_column_names("c3") == ("c3__observed", "c3__days_from_collection")
    assert phenotype_column_names(["c3", "c3__observed", "bp__observed"]) == {
        "c3": "c3",
        "c3__observed": "var_c3__observed",  # `c3`'s observation column
        "bp__observed": "bp__observed",  # no `bp`: nothing to meet
    }
    # `var_a__observed` keeps clear of the columns beside `var_a__observed__observed`'s
    assert phenotype_column_names(["a__observed", "a__observed__observed", "var_a__observed"]) \
        == {"a__observed": "a__observed", "a__observed__observed": "var_a__observed__observed",
            "var_a__observed": "var_var_a__observed"}  # fmt: skip


@given(
    st.lists(names, unique=True, max_size=30).flatmap(
        lambda variables: st.tuples(st.just(variables), st.permutations(variables))
    )
)
@example((["quantity", "var_quantity"], ["var_quantity", "quantity"]))
@example((["bp", "bp__observed", "var_bp__observed"], ["var_bp__observed", "bp__observed", "bp"]))
def test_columns_are_distinct_never_fixed_and_named_from_their_variable(given_twice):
    variables, shuffled = given_twice
    columns = phenotype_column_names(variables)
    assert list(columns) == variables  # one per variable, in the order given
    every = [*columns.values(), *(n for c in columns.values() for n in observation_column_names(c))]
    assert len(set(every)) == 3 * len(variables)
    assert not set(every) & FIXED_COLUMNS
    for name, column in columns.items():
        assert SNAKE.fullmatch(column)
        if _suffixed(name):  # itself, unless that meets another column: then prefixed
            assert column.endswith(name) and set(column[: -len(name)].split(PREFIX)) <= {""}
        elif name not in FIXED_COLUMNS:
            assert column == name
        else:  # the shortest prefixed name free of the fixed names and the variables'
            times = (len(column) - len(name)) // len(PREFIX)
            assert column == PREFIX * times + name and times >= 1
            assert all(PREFIX * t + name in variables for t in range(1, times))
    assert phenotype_column_names(shuffled) == columns  # the order changes no column's name
