"""Export column names: a phenotype variable never takes a fixed column's name, and no two
columns share one, whatever the variables are called (pure: no database)."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from biobank.export.names import FIXED_COLUMNS, PREFIX, phenotype_column_names

SNAKE = re.compile(r"[a-z][a-z0-9_]*")
FIXED = sorted(FIXED_COLUMNS)

# snake_case names, with many that are fixed or a fixed name prefixed once or twice: the cases
# that collide
names = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
    st.sampled_from(FIXED),
    st.builds(lambda n, times: PREFIX * times + n, st.sampled_from(FIXED), st.integers(1, 2)),
)


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


@given(
    st.lists(names, unique=True, max_size=30).flatmap(
        lambda variables: st.tuples(st.just(variables), st.permutations(variables))
    )
)
@example((["quantity", "var_quantity"], ["var_quantity", "quantity"]))
def test_columns_are_distinct_never_fixed_and_named_from_their_variable(given_twice):
    variables, shuffled = given_twice
    columns = phenotype_column_names(variables)
    assert list(columns) == variables  # one per variable, in the order given
    assert len(set(columns.values())) == len(variables)
    assert not set(columns.values()) & FIXED_COLUMNS
    for name, column in columns.items():
        assert SNAKE.fullmatch(column)
        if name not in FIXED_COLUMNS:
            assert column == name
        else:  # the shortest prefixed name free of the fixed names and the variables'
            times = (len(column) - len(name)) // len(PREFIX)
            assert column == PREFIX * times + name and times >= 1
            assert all(PREFIX * t + name in variables for t in range(1, times))
    assert phenotype_column_names(shuffled) == columns  # the order changes no column's name
