"""The QR symbol of a label, computed once and drawn by every renderer.

Model 2, error correction Q, alphanumeric mode, mask 7: the symbol a Zebra printer makes from the
`^BQ` field in labels/zpl.py, so every output of one label carries the same code. Why Q and why a
fixed mask: labels/README.md.
"""

from __future__ import annotations

from functools import cache
from itertools import groupby

from labels.errors import LabelError

ALPHANUMERIC = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
ERROR_CORRECTION = "Q"
MASK = 7
QUIET_ZONE = 4
"""Modules of light margin the standard requires on every side of the symbol."""
MAX_LENGTH = 64
"""The longest code a label takes: a storage unit barcode's column width."""

Matrix = tuple[tuple[bool, ...], ...]


def check_code(code: str) -> None:
    """Refuse a code that QR alphanumeric mode cannot hold, naming the value."""
    if not 1 <= len(code) <= MAX_LENGTH:
        raise LabelError(
            f"a label code has 1-{MAX_LENGTH} characters, not {len(code)}: {code!r}",
            field="id",
            value=code,
        )
    bad = sorted(set(code) - ALPHANUMERIC)
    if bad:
        raise LabelError(
            f"{code!r} has {''.join(bad)!r}, outside QR alphanumeric mode "
            "(0-9, A-Z, space and $%*+-./:)",
            field="id",
            value=code,
        )


def _encoder(code: str):
    import qrcode
    from qrcode.constants import ERROR_CORRECT_Q
    from qrcode.util import MODE_ALPHA_NUM, QRData

    encoder = qrcode.QRCode(error_correction=ERROR_CORRECT_Q, border=0, mask_pattern=MASK)
    encoder.add_data(QRData(code, mode=MODE_ALPHA_NUM))
    return encoder


@cache
def _version(length: int) -> int:
    """In alphanumeric mode the version depends on the length alone."""
    return _encoder("0" * length).best_fit()


def size(code: str) -> int:
    """Modules per side of `code`'s symbol, quiet zone excluded; cheaper than `matrix`."""
    return 17 + 4 * _version(len(code))


def matrix(code: str) -> Matrix:
    """Dark (True) and light modules, row by row, quiet zone excluded."""
    encoder = _encoder(code)
    encoder.make(fit=True)
    return tuple(tuple(row) for row in encoder.modules)


def rectangles(symbol: Matrix) -> list[tuple[int, int, int, int]]:
    """The dark modules as few rectangles `(x, y, width, height)` in modules: runs along each
    row, stacked where the next row repeats them. Vector outputs draw these, not modules."""
    done: list[tuple[int, int, int, int]] = []
    growing: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    for y, row in enumerate(symbol):
        continued = {}
        for x, length in _runs(row):
            x0, y0, _, height = growing.pop((x, length), (x, y, length, 0))
            continued[(x, length)] = (x0, y0, length, height + 1)
        done.extend(growing.values())
        growing = continued
    done.extend(growing.values())
    return done


def _runs(row: tuple[bool, ...]):
    x = 0
    for dark, group in groupby(row):
        length = sum(1 for _ in group)
        if dark:
            yield x, length
        x += length
