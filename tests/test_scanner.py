"""The scan detector: bursts ending in Enter are scans; typing goes to the field."""

from hypothesis import given
from hypothesis import strategies as st

from tui.scanner import ScanDetector


def _feed(detector, keys, is_scan=None):
    """keys: (name, character, time). Returns (scans, delivered characters/keys)."""
    scans, delivered = [], []
    for name, character, at in keys:
        decision = detector.feed(name, name, character, at, is_scan)
        delivered += decision.release
        if decision.scan:
            scans.append(decision.scan)
        elif not decision.held:
            delivered.append(name)
    delivered += detector.flush()
    return scans, delivered


def _burst(text, start=0.0, gap=0.01, end="enter"):
    keys = [(c, c, start + i * gap) for i, c in enumerate(text)]
    return [*keys, (end, None, start + len(text) * gap)]


def test_a_burst_ending_in_enter_is_a_scan():
    scans, delivered = _feed(ScanDetector(), _burst("SLE-0000001M"))
    assert scans == ["SLE-0000001M"] and delivered == []


def test_typing_reaches_the_field():
    keys = [(c, c, i * 0.12) for i, c in enumerate("tech")] + [("enter", None, 0.6)]
    scans, delivered = _feed(ScanDetector(), keys)
    assert scans == [] and delivered == ["t", "e", "c", "h", "enter"]


def test_short_bursts_and_non_printable_keys_are_not_scans():
    scans, delivered = _feed(ScanDetector(min_length=4), _burst("ab"))
    assert scans == [] and delivered == ["a", "b", "enter"]
    scans, delivered = _feed(ScanDetector(), [("a", "a", 0), ("up", None, 0.001)])
    assert delivered == ["a", "up"]


def test_a_scan_after_typing():
    keys = [("x", "x", 0.0), *_burst("BX000004", start=1.0, end="tab")]
    scans, delivered = _feed(ScanDetector(), keys)
    assert scans == ["BX000004"] and delivered == ["x"]


@given(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=4, max_size=30),
    st.floats(min_value=0.001, max_value=0.03),
)
def test_any_fast_burst_is_one_scan(text, gap):
    assert _feed(ScanDetector(max_interval=0.035), _burst(text, gap=gap)) == ([text], [])


@given(st.text(alphabet="abcdefghij", min_size=1, max_size=12))
def test_slow_typing_is_never_a_scan(text):
    keys = [(c, c, i * 0.2) for i, c in enumerate(text)] + [("enter", None, len(text) * 0.2)]
    scans, delivered = _feed(ScanDetector(), keys)
    assert scans == [] and delivered == [*text, "enter"]


def test_a_burst_of_another_shape_than_is_scanned_here_is_typed():
    """At sign-in only badges are scanned: a name typed fast reaches the field, its Tab too."""
    typed = _feed(ScanDetector(), _burst("tech", end="tab"), str.isupper)
    assert typed == ([], ["t", "e", "c", "h", "tab"])
    scanned = _feed(ScanDetector(), _burst("BADGE-0042", end="tab"), str.isupper)
    assert scanned == (["BADGE-0042"], [])
