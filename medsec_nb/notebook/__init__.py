"""The notebook face: magics, redacted rich displays, the slice viewer and tag table, the kernel
study registry, kernel hardening.

Importing this package wires it to the study layer, which knows nothing of Jupyter: the
registry follows study open and close events, ``Series.view()`` and ``Series.redactor()``
get their widgets, and :func:`register_displays` puts the redacted study and series tables in
IPython's display formatters. The package root does this in any IPython session
(``import medsec_nb`` or ``%load_ext medsec_nb``).
"""

from __future__ import annotations

from typing import Any

from ..study import Series, Study, events, faces
from . import registry
from .display import series_html, series_text, study_html, study_text


def _view(series: Series, **kwargs: Any) -> Any:
    from .widgets import SliceViewer

    return SliceViewer(series, **kwargs)


def _redactor(series: Series, i: int = 0, **kwargs: Any) -> Any:
    from .tag_redactor import TagRedactor

    return TagRedactor(series, i, **kwargs)


def register_displays(ip: Any) -> None:
    """Make IPython ``ip`` show studies and series as redacted tables (HTML and text)."""
    formatters = ip.display_formatter.formatters
    formatters["text/html"].for_type(Study, study_html)
    formatters["text/html"].for_type(Series, series_html)
    formatters["text/plain"].for_type(Study, lambda obj, p, cycle: p.text(study_text(obj)))
    formatters["text/plain"].for_type(Series, lambda obj, p, cycle: p.text(series_text(obj)))


def close_study(study_id: str) -> bool:
    """Close the study this kernel published in the registry as ``study_id`` (the lab panel's
    Close button; the server calls this): as ``%unload_secure_study`` when the magics bound it,
    else the study and its widgets. False if no such study is open here."""
    study = registry.lookup(study_id)
    if study is None:
        return False
    from .magics import unload_bound

    unload_bound(study)
    return True


faces.provide("view", _view)
faces.provide("redactor", _redactor)
events.subscribe(opened=registry.opened, closed=registry.withdrawn)

__all__ = ["close_study", "register_displays"]
