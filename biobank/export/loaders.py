"""Loading scripts written beside an export's tables, so an analyst reads them typed and
labelled at once: `load.py` (pyarrow, and pandas through it) and `load.R` (base R). Both read
`dictionary.csv` for each column's kind and `value_labels.csv` for the labels of coded columns;
they hold no data, only the names of the tables written, so the same export gives the same
bytes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from biobank.export.files import Written, write_atomically

LOAD_PY = '''"""Read this export's tables with their types and labels.

    from load import load
    specimens = load("specimens.csv")       # a pyarrow Table
    frame = specimens.to_pandas()            # pandas: coded columns are categoricals

Each column is typed as dictionary.csv says (integer, decimal, boolean, date, year as an
integer); each coded column's codes become their labels (value_labels.csv), as a categorical
in the dictionary's order; a column whose cells list several codes ("a|b") keeps its codes.
In the long table (phenotype_values.*), `value` stays text and `value_label` is added. A
spreadsheet-safe CSV cell that would start like a formula begins with an apostrophe.
Needs pyarrow (pip install pyarrow). Run as a script, it prints each table's schema.
"""

import csv
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
TABLES = {tables}
TYPES = {{
    "string": pa.string(), "integer": pa.int64(), "decimal": pa.float64(),
    "boolean": pa.bool_(), "date": pa.date32(), "year": pa.int32(),
}}


def _rows(name):
    with open(HERE / name, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def kinds():
    """Each column's kind, by name (dictionary.csv)."""
    return {{row["name"]: row["kind"] for row in _rows("dictionary.csv")}}


def value_labels():
    """Each coded column's {{code: label}} and whether its cells list several codes."""
    found = {{}}
    for row in _rows("value_labels.csv"):
        labels, _ = found.setdefault(row["column"], ({{}}, row["multiple"] == "True"))
        labels[row["code"]] = row["label"]
    return found


def _labelled(values, labels):
    order = list(dict.fromkeys(labels.values()))
    shown = [None if v is None else labels.get(v, v) for v in values]
    order += [v for v in dict.fromkeys(shown) if v is not None and v not in order]
    at = {{label: place for place, label in enumerate(order)}}
    indices = pa.array([None if v is None else at[v] for v in shown], type=pa.int32())
    return pa.DictionaryArray.from_arrays(indices, pa.array(order, type=pa.string()))


def load(name=TABLES[0], labelled=True):
    """One table of the export (CSV or Parquet), typed, and labelled unless `labelled` is
    False."""
    path = HERE / name
    if path.suffix == ".parquet":
        table = pq.read_table(path)
    elif path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as file:
            header = next(csv.reader(file))
        types = kinds()
        options = pa_csv.ConvertOptions(
            column_types={{c: TYPES[types.get(c, "string")] for c in header}},
            null_values=[""], strings_can_be_null=True,
            true_values=["True"], false_values=["False"],
        )
        table = pa_csv.read_csv(path, convert_options=options)
    else:
        raise SystemExit(f"{{name}}: read the CSV or Parquet tables here (XLSX opens as it is)")
    if not labelled:
        return table
    coded = value_labels()
    if "variable" in table.column_names and "value" in table.column_names:
        variables = table.column("variable").to_pylist()
        values = table.column("value").to_pylist()
        shown = []
        for variable, value in zip(variables, values):
            labels, several = coded.get(variable, ({{}}, False))
            if value is None or not labels:
                shown.append(None)
            elif several:
                shown.append("|".join(labels.get(v, v) for v in value.split("|")))
            else:
                shown.append(labels.get(value, value))
        table = table.append_column("value_label", pa.array(shown, type=pa.string()))
    for place, name in enumerate(table.column_names):
        labels, several = coded.get(name, ({{}}, True))
        if labels and not several and name != "variable":
            column = _labelled(table.column(name).to_pylist(), labels)
            table = table.set_column(place, name, column)
    return table


if __name__ == "__main__":
    for name in sys.argv[1:] or TABLES:
        print(name, load(name).schema, sep="\\n")
'''

LOAD_R = """# Read this export's tables with their types and labels, in base R:
#
#   source("load.R", chdir = TRUE)
#   specimens <- load_export("specimens.csv")
#
# Each column is typed as dictionary.csv says (integer, decimal, boolean, date; a year is an
# integer); each coded column becomes a factor of its labels (value_labels.csv), in the
# dictionary's order; a column whose cells list several codes ("a|b") keeps its codes. In the
# long table (phenotype_values.csv), `value` stays text and `value_label` is added. A
# spreadsheet-safe cell that would start like a formula begins with an apostrophe. Parquet:
# arrow::read_parquet() keeps the types; the labels are added the same way.

export_tables <- {tables_r}
export_dictionary <- read.csv("dictionary.csv", colClasses = "character",
                              na.strings = character(), encoding = "UTF-8")
export_value_labels <- read.csv("value_labels.csv", colClasses = "character",
                                na.strings = character(), encoding = "UTF-8")
export_classes <- c(string = "character", integer = "integer", decimal = "numeric",
                    boolean = "logical", date = "Date", year = "integer")

load_export <- function(name = export_tables[[1]], labelled = TRUE) {{
  if (grepl("[.]parquet$", name)) {{
    data <- as.data.frame(arrow::read_parquet(name))
  }} else {{
    header <- names(read.csv(name, nrows = 1, check.names = FALSE))
    kinds <- setNames(export_dictionary$kind, export_dictionary$name)[header]
    classes <- unname(export_classes[kinds])
    classes[is.na(classes)] <- "character"
    data <- read.csv(name, colClasses = classes, na.strings = "", check.names = FALSE,
                     encoding = "UTF-8")
  }}
  if (!labelled) return(data)
  several <- export_value_labels$multiple == "True"
  if (all(c("variable", "value") %in% names(data))) {{
    single <- export_value_labels[!several, ]
    key <- paste(single$column, single$code, sep = "\\r")
    data$value_label <- single$label[match(paste(data$variable, data$value, sep = "\\r"), key)]
  }}
  for (column in setdiff(intersect(names(data), export_value_labels$column), "variable")) {{
    codes <- export_value_labels[export_value_labels$column == column, ]
    if (any(codes$multiple == "True")) next
    shown <- codes$label[match(data[[column]], codes$code)]
    data[[column]] <- factor(shown, levels = unique(codes$label))
  }}
  data
}}
"""


def write_loaders(folder: Path, tables: Sequence[str]) -> list[Written]:
    """`load.py` and `load.R` for the tables written (their file names, the first the
    default)."""
    names = list(tables)
    scripts = {
        "load.py": LOAD_PY.format(tables=json.dumps(names)),
        "load.R": LOAD_R.format(tables_r="c(" + ", ".join(json.dumps(n) for n in names) + ")"),
    }
    written = []
    for name, text in scripts.items():

        def write(file: IO[str], text: str = text) -> int:
            file.write(text)
            return 0

        written.append(write_atomically(folder / name, write, text=True))
    return written
