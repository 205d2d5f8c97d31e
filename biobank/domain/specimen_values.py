"""What a specimen's captured values must be: quantity, unit, type, centrifugation
temperatures, times in order, a collection near its visit, and the SPREC code they make.

Accession, the workstation's form and the legacy import check a tube by these same rules, so a
value one of them accepts the others accept too.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

from biobank.domain import sprec
from biobank.domain.vocabulary import QuantityUnit
from biobank.errors import ValidationError

# Derivatives extracted in the lab; not SPREC primary types.
DERIVATIVE_TYPES = frozenset({"DNA", "RNA", "PRO", "CDN"})
CLOCK_SKEW = timedelta(minutes=10)


def quantity_unit(value: QuantityUnit | str) -> QuantityUnit:
    """A unit of quantity, or a ValidationError listing the allowed ones."""
    try:
        return QuantityUnit(value)
    except ValueError:
        allowed = ", ".join(u.value for u in QuantityUnit)
        raise ValidationError(
            f"unknown unit {value!r} (allowed: {allowed})", field="unit", value=value
        ) from None


def positive_quantity(value: float, field: str = "quantity") -> float:
    """A quantity as a float above zero (to 6 decimals), or a ValidationError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{field} must be a number", field=field, value=value)
    if value <= 0:
        raise ValidationError(f"{field} must be more than zero", field=field, value=value)
    return round(float(value), 6)


def specimen_type_code(value: str, *, derivative: bool = False) -> str:
    """A SPREC type code, uppercased; DNA, RNA and PRO also for a `derivative`."""
    code = value.strip().upper()
    known = sprec.is_fluid_type(code) or code in sprec.solid_types()
    if not known and not (derivative and code in DERIVATIVE_TYPES):
        raise ValidationError(
            f"unknown specimen type {value!r}: use a SPREC type code such as SER, PL1, BUF, "
            f"CEL, URN or TIS{' (or DNA, RNA, PRO)' if derivative else ''}",
            field="specimen_type",
            value=value,
        )
    return code


def temperature_code(value: str | None, field: str) -> str | None:
    """A centrifugation temperature as SPREC names it (RT, 2-10C, 35-38C; a degree sign
    is allowed), or None if none was given."""
    if value is None:
        return None
    text = value.strip().upper().replace("°", "")
    if text not in sprec.TEMPERATURES:
        raise ValidationError(
            f"{field} must be one of {', '.join(sprec.TEMPERATURES)}", field=field, value=value
        )
    return text


TIME_WORDS = {
    "collected_at": "collection time",
    "received_at": "receipt time",
    "processed_at": "processing time",
    "frozen_at": "freezing time",
}


def check_times(times: dict[str, datetime | None]) -> None:
    """Times are zoned, not in the future, and in order: collected, processed, frozen; and
    received after collected."""
    now = datetime.now(UTC)
    for field, value in times.items():
        if value is None:
            continue
        if value.tzinfo is None:
            raise ValidationError(
                f"{TIME_WORDS[field]} needs a time zone", field=field, value=value
            )
        if value > now + CLOCK_SKEW:
            raise ValidationError(f"{TIME_WORDS[field]} is in the future", field=field, value=value)
    pairs = [("collected_at", "processed_at"), ("processed_at", "frozen_at")]
    pairs += [("collected_at", "frozen_at"), ("collected_at", "received_at")]
    for first, second in pairs:
        earlier, later = times.get(first), times.get(second)
        if earlier and later and later < earlier:
            raise ValidationError(
                f"{TIME_WORDS[second]} is before {TIME_WORDS[first]}", field=second, value=later
            )


class FarFromVisit(ValidationError):
    """A collection further from its visit's date than `visit_gap_days` allows: usually a
    slip (a wrong date, or the wrong visit chosen), so accession asks to be forced."""

    def __init__(
        self, *, visit: str, visit_date: date, collected_on: date, gap: int, allowed: int
    ) -> None:
        self.fact = f"collected {collected_on}, {gap:,} days from visit {visit!r} ({visit_date})"
        self.forced = f"forced past visit_gap_days ({allowed}): {self.fact}"
        self.collected_on, self.allowed = collected_on, allowed
        super().__init__(
            f"{self.fact}: more than visit_gap_days ({allowed}) allows; check the collection "
            "time and the visit, or force it (--force)",
            field="collected_at",
            value=collected_on,
        )


def far_from_visit(
    *, visit: str, visit_date: date | None, collected_at: datetime | None, allowed: int
) -> FarFromVisit | None:
    """The refusal of a collection more than `allowed` days from its visit's date (the
    collection's day where it was taken, this workstation's zone), or None. A visit or a
    collection without a date (legacy records) is never far. Accession raises it unless
    forced; an import may make it a fault of the row."""
    if visit_date is None or collected_at is None:
        return None
    collected_on = collected_at.astimezone().date()
    gap = abs((collected_on - visit_date).days)
    if gap <= allowed:
        return None
    return FarFromVisit(
        visit=visit, visit_date=visit_date, collected_on=collected_on, gap=gap, allowed=allowed
    )


def sprec_code_for(
    *,
    given: str | None,
    specimen_type: str,
    container: str | None,
    collected_at: datetime | None,
    processed_at: datetime | None,
    frozen_at: datetime | None,
    precentrifugation_temperature: str | None,
    postcentrifugation_temperature: str | None,
    centrifugation: str | None,
    second_centrifugation: str | None,
    storage: str | None,
) -> str | None:
    """The SPREC code of a tube: the one `given`, checked against its type and container, or
    one worked out from its times and processing (X where unknown); None for a solid tissue
    with none given."""
    if given:
        code = sprec.parse_sprec(given.strip().upper())
        assert isinstance(code, sprec.FluidSprec | sprec.SolidSprec)  # every code is one
        if code.type != specimen_type:
            raise ValidationError(
                f"SPREC code {given} is for type {code.type}, not {specimen_type}",
                field="sprec_code",
                value=given,
            )
        if container and isinstance(code, sprec.FluidSprec) and code.container != container:
            raise ValidationError(
                f"SPREC code {given} names container {code.container}, not {container}",
                field="sprec_code",
                value=given,
            )
        return str(code)
    if not sprec.is_fluid_type(specimen_type):
        return None
    pre = "X"
    if collected_at and processed_at:
        pre = sprec.precentrifugation_delay(
            collected_at, processed_at, precentrifugation_temperature
        )
    post = "X"
    if processed_at and frozen_at:
        post = sprec.postcentrifugation_delay(
            processed_at, frozen_at, postcentrifugation_temperature
        )
    return sprec.fluid_code(
        type=specimen_type,
        container=container or "XXX",
        precentrifugation=pre,
        centrifugation=(centrifugation or "X").upper(),
        second_centrifugation=(second_centrifugation or "X").upper(),
        postcentrifugation=post,
        storage=(storage or "X").upper(),
    )
