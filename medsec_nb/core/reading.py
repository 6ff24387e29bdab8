"""Which source file the current thread is working on, so that a library warning raised meanwhile
(pydicom's, about a malformed value) can be reported with the file's name (the CLI does)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_state = threading.local()


@contextmanager
def reading(name: str) -> Iterator[None]:
    """Within the block, :func:`current_source` is ``name``."""
    previous = getattr(_state, "name", None)
    _state.name = name
    try:
        yield
    finally:
        _state.name = previous


def current_source() -> str | None:
    """The file the current thread is reading or writing, if known."""
    return getattr(_state, "name", None)
