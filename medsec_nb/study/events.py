"""Study events: faces follow studies without the study layer knowing them.

A face (the notebook's kernel registry, the save guard's publisher, viewers) subscribes with
:func:`subscribe`; :func:`open_study` emits ``opened`` once a study is open and recorded,
:meth:`Study.close` emits ``closed``. A subscriber that fails only warns: the study stays open
(or closed) and its records stand.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .study import Study

Listener = Callable[["Study"], None]

_lock = threading.Lock()
_opened: list[Listener] = []
_closed: list[Listener] = []


def subscribe(opened: Listener | None = None, closed: Listener | None = None) -> None:
    """Call ``opened(study)`` after every open and ``closed(study)`` after every close (each
    function once, however often it is subscribed)."""
    with _lock:
        if opened is not None and opened not in _opened:
            _opened.append(opened)
        if closed is not None and closed not in _closed:
            _closed.append(closed)


def unsubscribe(opened: Listener | None = None, closed: Listener | None = None) -> None:
    with _lock:
        if opened in _opened:
            _opened.remove(opened)
        if closed in _closed:
            _closed.remove(closed)


def _emit(listeners: list[Listener], study: Study, what: str) -> None:
    with _lock:
        todo = list(listeners)
    for listener in todo:
        try:
            listener(study)
        except Exception as exc:  # a face's failure must not undo an open or a close
            warnings.warn(
                f"medsec-nb: a listener for studies being {what} failed ({type(exc).__name__}: {exc})",
                RuntimeWarning,
                stacklevel=3,
            )


def emit_opened(study: Study) -> None:
    _emit(_opened, study, "opened")


def emit_closed(study: Study) -> None:
    _emit(_closed, study, "closed")
