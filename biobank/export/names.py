"""The names of an export's columns: the fixed ones, and a column per phenotype variable that
can never take one of them, whatever a REDCap project called its fields.

A variable keeps its own name as its column unless that name is fixed (`quantity`, `sex`…),
when it gains a `var_` prefix, again as often as needed (`var_var_quantity` when `var_quantity`
is itself a variable). Prefixing, not numbering, says at a glance why a column was renamed, and
a column's name does not depend on the order the variables come in: only a new variable named
`var_<name>` moves `<name>` on.
"""

from __future__ import annotations

PREFIX = "var_"

FIXED_COLUMNS = frozenset(
    {
        # every mode's specimen file
        "participant_code", "sex", "specimen_code", "parent_specimen_code", "specimen_kind",
        "specimen_type", "container_type", "sprec_code", "collected", "age_at_collection",
        "quantity", "unit", "freeze_thaw_count",
        # identified mode only
        "mrn", "family_name", "given_name", "date_of_birth",
        # the per-participant file's count
        "specimens",
        # read by name by the FHIR writer as the Patient's birth date: a variable must not pose
        # as it (`biobank.export.columns.BIRTH_YEAR`)
        "birth_year",
    }
)  # fmt: skip


def phenotype_column_names(variable_names: list[str]) -> dict[str, str]:
    """Each variable's column name, by variable name, in the order given: its own name, or
    that name prefixed until it is neither fixed nor another variable's name nor already
    chosen. The names given are distinct (a dictionary's)."""
    taken = {*FIXED_COLUMNS, *variable_names}
    columns = {}
    for name in variable_names:
        column = name
        if name in FIXED_COLUMNS:
            column = PREFIX + name
            while column in taken:
                column = PREFIX + column
            taken.add(column)
        columns[name] = column
    return columns
