"""The names of an export's columns: the fixed ones, and a column per phenotype variable that
can never take one of them, whatever a REDCap project called its fields.

A variable keeps its own name as its column unless that name is fixed (`quantity`, `sex`…),
when it gains a `var_` prefix, again as often as needed (`var_var_quantity` when `var_quantity`
is itself a variable). Prefixing, not numbering, says at a glance why a column was renamed, and
a column's name does not depend on the order the variables come in: only a new variable named
`var_<name>` moves `<name>` on.

Each variable's column has two more beside it, when its value was observed and how many days
from the specimen's collection: `<column>__observed` and `<column>__days_from_collection`
(`observation_column_names`). A variable whose own name ends like those keeps it unless it is
one of them (or would give one): then it is prefixed too, the variables so named taken in
alphabetical order, so again the order the variables come in changes nothing.
"""

from __future__ import annotations

PREFIX = "var_"
OBSERVED = "__observed"
DAYS_FROM_COLLECTION = "__days_from_collection"

FIXED_COLUMNS = frozenset(
    {
        # every mode's specimen file
        "participant_code", "sex", "specimen_code", "parent_specimen_code", "specimen_kind",
        "specimen_type", "container_type", "sprec_code", "collected", "age_at_collection",
        "age_top_coded", "quantity", "unit", "freeze_thaw_count",
        # identified mode only
        "mrn", "family_name", "given_name", "date_of_birth",
        # the per-participant file's count
        "specimens",
        # the long shape's table of values (`biobank.export.long`)
        "variable", "value", "value_unit", "observed", "days_from_collection",
        # read by name by the FHIR writer as the Patient's birth date: a variable must not pose
        # as it (`biobank.export.columns.BIRTH_YEAR`)
        "birth_year",
    }
)  # fmt: skip


def observation_column_names(column: str) -> tuple[str, str]:
    """The columns beside a variable's `column`: the day its value was observed, and the days
    from collection to then."""
    return column + OBSERVED, column + DAYS_FROM_COLLECTION


def phenotype_column_names(variable_names: list[str]) -> dict[str, str]:
    """Each variable's column name, by variable name, in the order given: its own name, or
    that name prefixed until it is neither fixed nor another variable's name nor already
    chosen, nor (with the two columns beside it) any column chosen before. The names given
    are distinct (a dictionary's)."""
    taken = {*FIXED_COLUMNS, *variable_names}
    columns = {}
    suffixed = sorted(n for n in variable_names if n.endswith((OBSERVED, DAYS_FROM_COLLECTION)))
    for name in variable_names:
        if name in suffixed:
            continue  # below, once every other column is known
        column = name
        if name in FIXED_COLUMNS:
            column = PREFIX + name
            while column in taken:
                column = PREFIX + column
            taken.add(column)
        columns[name] = column
    # Only a name ending like an observation column can meet one: a plain column never does.
    used = {*FIXED_COLUMNS, *columns.values()}
    used.update(*(observation_column_names(c) for c in columns.values()))
    for name in suffixed:
        column = name
        while (
            column in used
            or (column != name and column in taken)
            or not used.isdisjoint(observation_column_names(column))
        ):
            column = PREFIX + column
        used.update((column, *observation_column_names(column)))
        columns[name] = column
    return {name: columns[name] for name in variable_names}
