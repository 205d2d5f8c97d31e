"""The heap an import works on, kept out of the cyclic garbage collector's way.

An import makes millions of short-lived objects (cells, values, audit entries), and Python's
collector walks the whole heap each time enough of them pile up: the models, SQLAlchemy's
metadata, the modules, and the import's own plan, none of which is garbage. Frozen while the
import runs, what was there before it is walked no more; only what the import makes is (and
the writing of a plan walks not the plan its checking made). A block inside another freezes
nothing more; the outer one thaws."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0  # imports running in this process with the heap frozen


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze what the process holds for the length of the block (all threads' alike: the
    collector is the process's); thawed as the last block to freeze ends."""
    global _depth
    with _lock:
        if _depth == 0:
            gc.freeze()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.unfreeze()
