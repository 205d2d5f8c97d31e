"""SPREC 3.0 codes: each element is checked against its list and named when wrong, and the delay
elements follow the reference table at its boundaries."""

from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from biobank.domain.sprec import (
    ELEMENT_LABELS,
    FluidSprec,
    SolidSprec,
    allowed_values,
    fluid_code,
    fluid_types,
    is_fluid_type,
    parse_sprec,
    postcentrifugation_delay,
    precentrifugation_delay,
    solid_types,
)
from biobank.errors import ValidationError

FLUID = "SER-SST-A-B-N-A-D"
SOLID = "TIS-SRG-A-B-NBF-C-P"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
JUST_UNDER = timedelta(microseconds=1)


def test_fluid_code_parses():
    code = parse_sprec(FLUID)
    assert code == FluidSprec("SER", "SST", "A", "B", "N", "A", "D")
    assert code.kind == "fluid"
    assert code.precentrifugation == "A"
    assert str(code) == FLUID


def test_solid_code_parses():
    code = parse_sprec(SOLID)
    assert code == SolidSprec("TIS", "SRG", "A", "B", "NBF", "C", "P")
    assert code.kind == "solid"
    assert code.fixation == "NBF"
    assert str(code) == SOLID


def test_case_and_blanks_are_forgiven():
    assert str(parse_sprec(" ser-sst-a-b-n-a-d\n")) == FLUID


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("CEN-SST-A-B-N-A-D", "fluid"),  # SST is a container
        ("CEN-FNA-A-B-NBF-C-P", "solid"),  # FNA is a collection method
        ("ZZZ-ZZZ-X-X-X-X-X", "fluid"),  # ZZZ is both: a one-letter fifth element
        ("ZZZ-ZZZ-X-X-ZZZ-X-X", "solid"),  # ... or a three-letter fixation
    ],
)
def test_types_in_both_lists_are_decided_by_the_second_element_then_the_shape(code, kind):
    assert parse_sprec(code).kind == kind


def _with(code: str, index: int, value: str) -> str:
    parts = code.split("-")
    parts[index] = value
    return "-".join(parts)


@pytest.mark.parametrize(("code", "cls"), [(FLUID, FluidSprec), (SOLID, SolidSprec)])
@pytest.mark.parametrize("index", range(7))
def test_a_wrong_element_is_named_with_its_allowed_values(code, cls, index):
    bad = _with(code, index, "QQQ")
    name = fields(cls)[index].name
    with pytest.raises(ValidationError) as caught:
        parse_sprec(bad)
    assert ELEMENT_LABELS[name] in caught.value.message
    assert "'QQQ'" in caught.value.message
    assert ", ".join(allowed_values(cls.kind, name)[:3]) in caught.value.message
    assert (caught.value.field, caught.value.value) == ("sprec_code", bad)


def test_m_is_for_the_first_centrifugation_only():
    assert parse_sprec("PL1-EDG-A-M-N-A-D").centrifugation == "M"
    with pytest.raises(ValidationError, match="second centrifugation 'M'"):
        parse_sprec("PL1-EDG-A-B-M-A-D")


@pytest.mark.parametrize(
    ("code", "count"),
    [("", 1), ("SER-SST-A-B-N-A", 6), (FLUID + "-A", 8), ("SER SST A B N A D", 1)],
)
def test_wrong_number_of_elements(code, count):
    with pytest.raises(ValidationError, match=f"needs 7 hyphen-separated elements, got {count}"):
        parse_sprec(code)


def test_empty_element_is_named():
    with pytest.raises(ValidationError, match="long-term storage ''"):
        parse_sprec("SER-SST-A-B-N-A-")


def test_fluid_code_builds_and_validates():
    assert fluid_code(type="SER", container="SST") == "SER-SST-X-X-X-X-X"
    assert fluid_code(type="pl2", container="edg", precentrifugation="c", storage="V") == (
        "PL2-EDG-C-X-X-X-V"
    )
    with pytest.raises(ValidationError, match=r"sample type 'TIS' is not a SPREC 3\.0 fluid code"):
        fluid_code(type="TIS", container="SST")


def test_type_lists():
    assert {"SER", "PL1", "PL2", "BLD", "CEL", "BUF", "URN", "URM"} <= set(fluid_types())
    assert "TIS" in solid_types()
    assert is_fluid_type("SER")
    assert is_fluid_type("CEN")
    assert not is_fluid_type("TIS")


@pytest.mark.parametrize(
    ("interval", "temperature", "letter"),
    [
        (timedelta(0), "RT", "A"),
        (timedelta(hours=2) - JUST_UNDER, "RT", "A"),
        (timedelta(hours=2), "RT", "C"),
        (timedelta(hours=4) - JUST_UNDER, "RT", "C"),
        (timedelta(hours=4), "RT", "E"),
        (timedelta(hours=8), "RT", "G"),
        (timedelta(hours=12), "RT", "I"),
        (timedelta(hours=24), "RT", "K"),
        (timedelta(hours=48) - JUST_UNDER, "RT", "K"),
        (timedelta(hours=48), "RT", "M"),
        (timedelta(days=30), "RT", "M"),
        (timedelta(minutes=30), "2-10C", "B"),
        (timedelta(hours=2), "2-10C", "D"),
        (timedelta(hours=4), "2-10C", "F"),
        (timedelta(hours=8), "2-10C", "H"),
        (timedelta(hours=12), "2-10C", "J"),
        (timedelta(hours=24), "2-10C", "L"),
        (timedelta(hours=48), "2-10C", "N"),
        (timedelta(hours=2) - JUST_UNDER, "35-38C", "O"),
        (timedelta(hours=2), "35-38C", "Z"),
        (timedelta(hours=3), None, "X"),
    ],
)
def test_precentrifugation_delay(interval, temperature, letter):
    """Ranges include their lower bound and exclude their upper one: "<2h" is strictly less."""
    assert precentrifugation_delay(T0, T0 + interval, temperature) == letter


@pytest.mark.parametrize(
    ("interval", "temperature", "letter"),
    [
        (timedelta(hours=1) - JUST_UNDER, "2-10C", "A"),
        (timedelta(0), "RT", "B"),
        (timedelta(hours=1), "2-10C", "C"),
        (timedelta(hours=1), "RT", "D"),
        (timedelta(hours=2), "2-10C", "E"),
        (timedelta(hours=2), "RT", "F"),
        (timedelta(hours=8), "2-10C", "G"),
        (timedelta(hours=8), "RT", "H"),
        (timedelta(hours=24) - JUST_UNDER, "RT", "H"),
        (timedelta(hours=24), "2-10C", "I"),
        (timedelta(hours=24), "RT", "J"),
        (timedelta(minutes=10), "35-38C", "Z"),
        (timedelta(minutes=10), None, "X"),
    ],
)
def test_postcentrifugation_delay(interval, temperature, letter):
    assert postcentrifugation_delay(T0, T0 + interval, temperature) == letter


def test_negative_intervals_name_the_later_timestamp():
    earlier = T0 - timedelta(minutes=1)
    with pytest.raises(ValidationError) as caught:
        precentrifugation_delay(T0, earlier, "RT")
    assert (caught.value.field, caught.value.value) == ("processed_at", earlier)
    with pytest.raises(ValidationError) as caught:
        postcentrifugation_delay(T0, earlier, None)
    assert caught.value.field == "frozen_at"


def test_unknown_temperature():
    with pytest.raises(ValidationError, match="RT, 2-10C, 35-38C") as caught:
        precentrifugation_delay(T0, T0, "4C")
    assert caught.value.field == "temperature"


@st.composite
def codes(draw):
    cls = draw(st.sampled_from([FluidSprec, SolidSprec]))
    parts = [draw(st.sampled_from(allowed_values(cls.kind, f.name))) for f in fields(cls)]
    return cls(*parts)


@given(codes())
def test_every_combination_from_the_lists_parses_and_round_trips(code):
    assert parse_sprec(str(code)) == code
