"""The cohort filter options, one list for every command that selects specimens (`cohort
preview`, `cohort save`, `export run`): a command takes `query: CohortQuery` and
`@cohort_filters` gives it the options, turned into that query."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from biobank.cli.common import parse_date
from biobank.domain.cohort import CohortQuery, load_query, parse_conditions

Uses = Annotated[
    list[str],
    typer.Option("--use", help="Use the consent must allow (repeatable; default FUTURE_RESEARCH)."),
]

_OPTIONS: dict[str, tuple[Any, object]] = {  # name: (annotation, default)
    "where": (
        Annotated[
            str | None,
            typer.Option(
                "--where", help='Phenotype conditions: "ln_class in (III, IV) and upcr >= 0.25".'
            ),
        ],
        None,
    ),
    "specimen_types": (
        Annotated[list[str], typer.Option("--type", help="SPREC type, e.g. SER (repeatable).")],
        [],
    ),
    "statuses": (
        Annotated[
            list[str],
            typer.Option("--status", help="Specimen status (repeatable; default available)."),
        ],
        [],
    ),
    "min_quantity": (
        Annotated[
            float | None, typer.Option("--min-quantity", help="At least this much left (its unit).")
        ],
        None,
    ),
    "collected_from": (
        Annotated[str | None, typer.Option("--collected-from", help="YYYY-MM-DD.")],
        None,
    ),
    "collected_to": (
        Annotated[str | None, typer.Option("--collected-to", help="YYYY-MM-DD.")],
        None,
    ),
    "max_freeze_thaws": (
        Annotated[int | None, typer.Option("--max-thaws", help="At most this many thaws.")],
        None,
    ),
    "study": (
        Annotated[str | None, typer.Option("--study", help="Only this study's participants.")],
        None,
    ),
    "shipment": (
        Annotated[
            str | None, typer.Option("--shipment", help="Only the tubes this shipment sent.")
        ],
        None,
    ),
    "storage": (
        Annotated[str | None, typer.Option("--storage", help="Only under this unit (barcode).")],
        None,
    ),
    "sex": (
        Annotated[list[str], typer.Option("--sex", help="female, male, … (repeatable).")],
        [],
    ),
    "min_age": (
        Annotated[int | None, typer.Option("--min-age", help="Age at collection, years.")],
        None,
    ),
    "max_age": (
        Annotated[int | None, typer.Option("--max-age", help="Age at collection, years.")],
        None,
    ),
}


def build_query(**given: Any) -> CohortQuery:
    """The query the options describe (dates and conditions parsed, each error naming its
    option). Only the options given are set (`model_fields_set`), so a saved query is
    narrowed by exactly those (`cohort.narrowed`); the status left unsaid is available."""
    where = given.pop("where")
    parsed = {
        "collected_from": parse_date(given["collected_from"], "collected_from"),
        "collected_to": parse_date(given["collected_to"], "collected_to"),
        "phenotypes": parse_conditions(where).model_dump(mode="json") if where else None,
    }
    values = given | parsed
    return load_query({k: v for k, v in values.items() if v is not None and v != []})


def cohort_filters(command: Callable[..., None]) -> Callable[..., None]:
    """Replace the command's `query` parameter by the filter options; Typer reads the
    signature, the command receives the query."""
    signature = inspect.signature(command, eval_str=True)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.name != "query":
            parameters.append(parameter)
            continue
        parameters += [
            inspect.Parameter(name, parameter.kind, default=default, annotation=annotation)
            for name, (annotation, default) in _OPTIONS.items()
        ]

    @functools.wraps(command)
    def with_query(*args: Any, **kwargs: Any) -> None:
        given = {name: kwargs.pop(name) for name in _OPTIONS}
        command(*args, query=build_query(**given), **kwargs)

    with_query.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_query.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_query
