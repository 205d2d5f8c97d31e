"""Specimen IDs: the MOD 37-2 check character catches every single substitution and adjacent
transposition, and scanner input normalizes to the ID."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from biobank.domain.identifiers import (
    ALPHABET,
    MAX_SERIAL,
    ParsedSpecimenId,
    check_specimen_id,
    format_specimen_id,
    mod37_2,
    normalize_scan,
    parse_specimen_id,
)

prefixes = st.from_regex(r"[A-Z][A-Z0-9]{0,5}", fullmatch=True)
serials = st.integers(0, MAX_SERIAL)
specimen_ids = st.builds(format_specimen_id, prefixes, serials).filter(lambda i: i is not None)


def _verifies(protected: str) -> bool:
    """ISO 7064's verification, written independently of mod37_2: the weighted sum of every
    character, check character included, is 1 mod 37."""
    chars = protected.replace("-", "")
    weights = (pow(2, len(chars) - 1 - i, 37) for i in range(len(chars)))
    return sum(ALPHABET.index(c) * w for c, w in zip(chars, weights, strict=True)) % 37 == 1


def test_mod37_2_matches_the_iso_7064_example():
    assert mod37_2("G123489654321") == "Y"
    assert mod37_2("G1234-8965-4321") == "Y"


@pytest.mark.parametrize("payload", ["g123", "A*1", "A 1", "Ä1"])
def test_mod37_2_rejects_characters_outside_the_alphabet(payload):
    with pytest.raises(ValueError):
        mod37_2(payload)


@given(st.text(ALPHABET[:36] + "-"))
def test_check_character_passes_iso_7064_verification(payload):
    assert _verifies(payload + mod37_2(payload))


def test_fixed_examples():
    assert format_specimen_id("SLE", 1234) == "SLE-00012349"
    assert parse_specimen_id("SLE-00012349") == ParsedSpecimenId("SLE", 1234, "9")
    assert check_specimen_id("SLE-00012349") == "valid"
    assert check_specimen_id("SLE-00012348") == "misread"
    assert check_specimen_id("SLE-00013249") == "misread"
    assert format_specimen_id("SLE", 199) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SLE-0001234",  # no check character
        "SLE00012349",  # no hyphen
        "sle-00012349",  # lowercase: normalize_scan first
        "SLE-000012349",  # eight-digit serial
        "SLE-0001234*",
        "1LE-00012349",
        "SLEABCD-00012349",  # prefix too long
        " SLE-00012349",
    ],
)
def test_malformed(text):
    assert check_specimen_id(text) == "malformed"
    with pytest.raises(ValueError):
        parse_specimen_id(text)


@pytest.mark.parametrize(("prefix", "serial"), [("", 1), ("sle", 1), ("1A", 1), ("SLE", -1)])
def test_format_rejects_bad_prefix_or_serial(prefix, serial):
    with pytest.raises(ValueError):
        format_specimen_id(prefix, serial)


def test_format_rejects_serials_beyond_seven_digits():
    with pytest.raises(ValueError):
        format_specimen_id("SLE", MAX_SERIAL + 1)


@given(prefixes, serials)
def test_format_returns_none_exactly_when_the_check_would_be_star(prefix, serial):
    formatted = format_specimen_id(prefix, serial)
    star = mod37_2(f"{prefix}{serial:07d}") == "*"
    assert (formatted is None) == star
    if formatted is not None:
        assert check_specimen_id(formatted) == "valid"
        assert parse_specimen_id(formatted) == ParsedSpecimenId(prefix, serial, formatted[-1])


@given(specimen_ids)
def test_every_single_substitution_is_caught(specimen_id):
    for i, original in enumerate(specimen_id):
        if original == "-":
            continue
        for char in ALPHABET[:36]:
            if char != original:
                changed = specimen_id[:i] + char + specimen_id[i + 1 :]
                assert check_specimen_id(changed) != "valid", changed


@given(specimen_ids)
def test_every_adjacent_transposition_is_caught(specimen_id):
    for i in range(len(specimen_id) - 1):
        a, b = specimen_id[i], specimen_id[i + 1]
        if a != b:
            swapped = specimen_id[:i] + b + a + specimen_id[i + 2 :]
            assert check_specimen_id(swapped) != "valid", swapped


@pytest.mark.parametrize(
    ("raw", "prefix", "code"),
    [
        ("SLE-00012349\r\n", "", "SLE-00012349"),
        ("SLE-00012349\t", "", "SLE-00012349"),
        ("\x00 SLE-00012349\x1d\x1e\x04 ", "", "SLE-00012349"),
        ("sle-00012349\r", "", "SLE-00012349"),  # Caps Lock
        ("]Q1SLE-00012349\r", "", "SLE-00012349"),
        ("]d2SLE-00012349\n", "", "SLE-00012349"),
        ("]C0SLE-00012349", "", "SLE-00012349"),
        ("]E04006381333931", "", "4006381333931"),
        ("#]Q1SLE-00012349\r\n", "#", "SLE-00012349"),
        ("scan:]q1sle-00012349\r", "SCAN:", "SLE-00012349"),
        ("SLE-00012349\r", "#", "SLE-00012349"),  # prefix configured but not sent
        ("BOX-A1", "", "BOX-A1"),
    ],
)
def test_normalize_scan(raw, prefix, code):
    assert normalize_scan(raw, prefix=prefix) == code


junk = st.text(st.sampled_from("\r\n\t\x00\x04\x1d\x1e "), max_size=3)
aim_ids = st.sampled_from(["", "]Q1", "]d2", "]C0", "]Q3"])


@given(specimen_ids, junk, aim_ids, junk, st.booleans())
def test_normalized_scans_of_issued_ids_are_valid(specimen_id, before, aim, after, caps_lock):
    typed = specimen_id.lower() if caps_lock else specimen_id
    assert normalize_scan(f"{before}~{aim}{typed}{after}", prefix="~") == specimen_id
