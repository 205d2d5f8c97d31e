"""Telling a keyboard-wedge scanner from a person typing.

A scanner types a whole code in a burst, keys a few milliseconds apart, and ends it with Enter
(or Tab). A person types 50 ms or more apart. Printable keys are held back briefly: if they
arrive as a burst that ends in Enter, they are a scan and never reach the focused field; if
the burst stops, they are released to the field as typed. A fast typist's burst can look like
a scan too: where only codes of one shape are scanned (badges, at sign-in), a burst of
another shape is released as typed, its Enter or Tab with it. Pure logic, so it is easy to
test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")
TERMINATORS = frozenset({"enter", "tab"})


@dataclass
class Decision(Generic[K]):
    """What to do with a key: `scan` is a finished scan; `release` are held keys to deliver
    (in order, before the current one unless the current one is `held`)."""

    held: bool = False
    scan: str | None = None
    release: list[K] = field(default_factory=list)


@dataclass
class ScanDetector(Generic[K]):
    max_interval: float = 0.035
    min_length: int = 4
    _buffer: list[tuple[K, str]] = field(default_factory=list)
    _last: float = 0.0

    def feed(
        self,
        key: K,
        name: str,
        character: str | None,
        now: float,
        is_scan: Callable[[str], bool] | None = None,
    ) -> Decision[K]:
        """`is_scan`: whether a finished burst is a scan where it lands (else any burst is)."""
        quick = bool(self._buffer) and now - self._last <= self.max_interval
        if character is not None and len(character) == 1 and character.isprintable():
            if self._buffer and not quick:
                released = self.flush()
                self._hold(key, character, now)
                return Decision(held=True, release=released)
            self._hold(key, character, now)
            return Decision(held=True)
        if name in TERMINATORS and quick and len(self._buffer) >= self.min_length:
            text = "".join(c for _, c in self._buffer)
            if is_scan is None or is_scan(text):
                self._buffer.clear()
                return Decision(scan=text)
        return Decision(release=self.flush())

    def _hold(self, key: K, character: str, now: float) -> None:
        self._buffer.append((key, character))
        self._last = now

    def flush(self) -> list[K]:
        """Give back the held keys (the burst stopped: a person is typing)."""
        keys = [k for k, _ in self._buffer]
        self._buffer.clear()
        return keys

    @property
    def holding(self) -> bool:
        return bool(self._buffer)
