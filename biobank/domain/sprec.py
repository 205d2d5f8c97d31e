"""SPREC 3.0 sample codes (Betsou et al. 2018, doi:10.1089/bio.2017.0109).

A code records how a sample was handled before storage, so results from differently handled
samples are not compared unknowingly. Codes are validated element by element against the lists in
`reference/sprec3_codes.json`, and the delay elements are computed from timestamps the lab
records anyway, rather than typed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import astuple, dataclass, fields
from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import Any, ClassVar, Literal

from biobank.errors import ValidationError

Kind = Literal["fluid", "solid"]

ELEMENT_LABELS = {
    "type": "sample type",
    "container": "primary container",
    "precentrifugation": "pre-centrifugation delay",
    "centrifugation": "centrifugation",
    "second_centrifugation": "second centrifugation",
    "postcentrifugation": "post-centrifugation delay",
    "collection": "collection method",
    "warm_ischemia": "warm ischemia time",
    "cold_ischemia": "cold ischemia time",
    "fixation": "fixation type",
    "fixation_time": "fixation time",
    "storage": "long-term storage",
}
"""Element name → the words error messages and forms use for it."""

TEMPERATURES = ("RT", "2-10C", "35-38C")
"""Temperatures the delay elements distinguish: room, refrigerated, body."""


@dataclass(frozen=True)
class SprecCode:
    """A validated code; `str()` gives it back in canonical form."""

    kind: ClassVar[Kind]

    def __str__(self) -> str:
        return "-".join(astuple(self))


@dataclass(frozen=True)
class FluidSprec(SprecCode):
    kind = "fluid"
    type: str
    container: str
    precentrifugation: str
    centrifugation: str
    second_centrifugation: str
    postcentrifugation: str
    storage: str


@dataclass(frozen=True)
class SolidSprec(SprecCode):
    kind = "solid"
    type: str
    collection: str
    warm_ischemia: str
    cold_ischemia: str
    fixation: str
    fixation_time: str
    storage: str


_CLASSES: dict[Kind, type[SprecCode]] = {"fluid": FluidSprec, "solid": SolidSprec}
_ELEMENTS = {kind: tuple(f.name for f in fields(cls)) for kind, cls in _CLASSES.items()}


@cache
def _reference() -> dict[str, Any]:
    """The code lists, read on first use so that importing biobank stays fast."""
    path = files("biobank") / "reference" / "sprec3_codes.json"
    reference: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return reference


@cache
def _allowed(kind: Kind) -> dict[str, tuple[str, ...]]:
    ref = _reference()
    storage = tuple(ref["7_long_term_storage"])
    if kind == "fluid":
        lists = ref["fluid"]
        spins = tuple(lists["4_centrifugation_and_5_second"])
        return {
            "type": tuple(lists["1_type"]),
            "container": tuple(lists["2_primary_container"]),
            "precentrifugation": tuple(lists["3_precentrifugation"]),
            "centrifugation": spins,
            # M (30 min < 1000 g, no braking) is defined for the first centrifugation only.
            "second_centrifugation": tuple(code for code in spins if code != "M"),
            "postcentrifugation": tuple(lists["6_postcentrifugation"]),
            "storage": storage,
        }
    lists = ref["solid"]
    ischemia = tuple(lists["3_warm_and_4_cold_ischemia"])
    return {
        "type": tuple(lists["1_type"]),
        "collection": tuple(lists["2_collection"]),
        "warm_ischemia": ischemia,
        "cold_ischemia": ischemia,
        "fixation": tuple(lists["5_fixation"]),
        "fixation_time": tuple(lists["6_fixation_time"]),
        "storage": storage,
    }


def allowed_values(kind: Kind, element: str) -> tuple[str, ...]:
    """The codes SPREC 3.0 allows for one element (a name in `ELEMENT_LABELS`), e.g. for a form."""
    return _allowed(kind)[element]


def fluid_types() -> tuple[str, ...]:
    return allowed_values("fluid", "type")


def solid_types() -> tuple[str, ...]:
    return allowed_values("solid", "type")


def is_fluid_type(type: str) -> bool:
    return type in fluid_types()


def _invalid(code: str, problem: str) -> ValidationError:
    return ValidationError(f"SPREC code {code!r}: {problem}", field="sprec_code", value=code)


def _split(code: str) -> list[str]:
    parts = code.strip().upper().split("-")
    if len(parts) != 7:
        grammars = "; ".join(
            f"{kind} {'-'.join(names).upper()}" for kind, names in _ELEMENTS.items()
        )
        raise _invalid(code, f"needs 7 hyphen-separated elements, got {len(parts)} ({grammars})")
    return parts


def _kind(parts: list[str], code: str) -> Kind:
    kinds: list[Kind] = [kind for kind in _CLASSES if parts[0] in allowed_values(kind, "type")]
    if not kinds:
        allowed = "; ".join(
            f"{kind}: {', '.join(allowed_values(kind, 'type'))}" for kind in _CLASSES
        )
        raise _invalid(code, f"sample type {parts[0]!r} is not in SPREC 3.0; allowed {allowed}")
    if len(kinds) == 1:
        return kinds[0]
    # CEN, CLN, PEN and ZZZ are both fluid and solid types. The second element decides (a fluid
    # container or a solid collection method); when it is in both lists (ZZZ) or in neither, the
    # shape does: only a solid code has a three-letter fifth element (the fixation).
    by_second = [kind for kind in kinds if parts[1] in allowed_values(kind, _ELEMENTS[kind][1])]
    if len(by_second) == 1:
        return by_second[0]
    return "solid" if len(parts[4]) == 3 else "fluid"


def _validated(kind: Kind, parts: list[str], code: str) -> SprecCode:
    for name, value in zip(_ELEMENTS[kind], parts, strict=True):
        allowed = allowed_values(kind, name)
        if value not in allowed:
            raise _invalid(
                code,
                f"{ELEMENT_LABELS[name]} {value!r} is not a SPREC 3.0 {kind} code; "
                f"allowed: {', '.join(allowed)}",
            )
    return _CLASSES[kind](*parts)


def parse_sprec(code: str) -> SprecCode:
    """Parse and validate a fluid or solid code; case and surrounding blanks are forgiven."""
    parts = _split(code)
    return _validated(_kind(parts, code), parts, code)


def fluid_code(
    *,
    type: str,
    container: str,
    precentrifugation: str = "X",
    centrifugation: str = "X",
    second_centrifugation: str = "X",
    postcentrifugation: str = "X",
    storage: str = "X",
) -> str:
    """A validated fluid code from what is known; unknown elements stay X."""
    code = "-".join(
        (
            type,
            container,
            precentrifugation,
            centrifugation,
            second_centrifugation,
            postcentrifugation,
            storage,
        )
    )
    return str(_validated("fluid", _split(code), code))


_RANGE = re.compile(
    r"(?P<temperature>\S+) (?:<(?P<below>\d+)h|(?P<low>\d+)-(?P<high>\d+)h|>(?P<above>\d+)h)"
)


@cache
def _delay_table(element: str) -> tuple[tuple[str, float, float, str], ...]:
    """(temperature, from hours, to hours, letter) read from the reference's meanings, such as
    "RT 2-4h", so the JSON stays the one source of the table."""
    rows = []
    for letter, meaning in _reference()["fluid"][element].items():
        if match := _RANGE.fullmatch(meaning):
            low = float(match["low"] or match["above"] or 0)
            high = float(match["high"] or match["below"] or math.inf)
            rows.append((match["temperature"], low, high, letter))
    return tuple(rows)


def _delay(
    element: str,
    start: datetime,
    end: datetime,
    temperature: str | None,
    names: tuple[str, str],
) -> str:
    hours = (end - start).total_seconds() / 3600
    if hours < 0:
        raise ValidationError(
            f"{names[1]} {end.isoformat()} is before {names[0]} {start.isoformat()}",
            field=names[1],
            value=end,
        )
    if temperature is None:
        return "X"
    if temperature not in TEMPERATURES:
        raise ValidationError(
            f"temperature {temperature!r} is not one of {', '.join(TEMPERATURES)}",
            field="temperature",
            value=temperature,
        )
    rows = _delay_table(element)
    found = (letter for t, low, high, letter in rows if t == temperature and low <= hours < high)
    return next(found, "Z")


def precentrifugation_delay(
    collected_at: datetime, processed_at: datetime, temperature: str | None
) -> str:
    """Element 3 from the collection → centrifugation interval and the temperature meanwhile.

    Each range includes its lower bound and excludes its upper one: "<2h" is strictly less than
    two hours, exactly 2 h is "2-4h", and exactly 48 h is already ">48h". An unknown temperature
    gives X (unknown); a combination the table lacks (35-38C for 2 h or more) gives Z (other).
    """
    names = ("collected_at", "processed_at")
    return _delay("3_precentrifugation", collected_at, processed_at, temperature, names)


def postcentrifugation_delay(
    processed_at: datetime, frozen_at: datetime, temperature: str | None
) -> str:
    """Element 6 from the centrifugation → freezing interval, by the same rules as element 3
    (the table has no 35-38C rows, so that temperature gives Z)."""
    names = ("processed_at", "frozen_at")
    return _delay("6_postcentrifugation", processed_at, frozen_at, temperature, names)
