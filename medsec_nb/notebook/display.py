"""Redacted rich display (HTML and text) of studies and series (datasets: ``deid.redacted``).

Every value shown goes through :mod:`medsec_nb.deid.redaction`: identifying values appear as the
visible ``REDACTED`` marker, sequences and bulk data are summarised, UIDs of the study
and series tables are not shown. Raw values stay reachable by explicit attribute access
(``ds.PatientName``); only their display is redacted. All HTML is escaped.
"""

from __future__ import annotations

import os
from html import escape
from typing import TYPE_CHECKING

from ..core.errors import MedsecError
from ..deid.redacted import NOTE, TAG_HEAD, html_table, text_table
from ..deid.redaction import redacted_items

if TYPE_CHECKING:
    from ..study import Series, Study
    from ..study.index import IndexEntry


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else str(value)


def _image_size(entries: list[IndexEntry]) -> str:
    sizes = sorted({(e["image"]["rows"], e["image"]["columns"]) for e in entries if e.get("image")})
    return ", ".join(f"{r} x {c}" for r, c in sizes) or "-"


# -- study ------------------------------------------------------------------------------------

_STUDY_HEAD = ("#", "modality", "series", "instances", "image size")


def _study_parts(study: Study) -> tuple[str, str, list[tuple[str, ...]]]:
    name = os.path.basename(study.path)
    if study.closed:
        return f"Study {name} (closed)", "", []
    title = f"Study {name}: {len(study.series)} series, {study.instance_count} instances"
    facts = (
        f"opened with {study.key_id}; signer {study.signer or 'none (unsigned)'}; "
        f"purpose {study.purpose or 'not given'}"
    )
    rows = [
        (str(n), s.modality or "-", _number(s.number), str(len(s)), _image_size(s.entries))
        for n, s in enumerate(study.series)
    ]
    return title, facts, rows


def study_text(study: Study) -> str:
    """Plain-text summary of a study: series table, key id, signer, purpose; no UIDs, no PHI."""
    title, facts, rows = _study_parts(study)
    if not facts:
        return title
    return "\n".join([title, facts, *text_table(_STUDY_HEAD, rows), NOTE])


def study_html(study: Study) -> str:
    """HTML form of :func:`study_text`."""
    title, facts, rows = _study_parts(study)
    if not facts:
        return f"<div class='medsec-study'><b>{escape(title)}</b></div>"
    return (
        f"<div class='medsec-study'><b>{escape(title)}</b><br><small>{escape(facts)}</small>"
        f"{html_table(_STUDY_HEAD, rows)}<small>{escape(NOTE)}</small></div>"
    )


# -- series -----------------------------------------------------------------------------------


def _series_parts(series: Series) -> tuple[str, list[tuple[str, str, str]]]:
    head = f"Series {series.modality or '?'} #{_number(series.number)}"
    if series.study.closed:
        return f"{head} (study closed)", []
    summary = f"{head}: {len(series)} instances, {_image_size(series.entries)}"
    try:
        g = series.geometry
        summary += ", spacing (z, y, x) " + " x ".join(f"{v:g}" for v in g.spacing) + " mm"
        summary += " (uneven slice gaps)" if g.uneven else ""
    except MedsecError:  # no image in the series
        pass
    return summary, list(redacted_items(series.header(0)))


def series_text(series: Series) -> str:
    """Series summary, then the first instance's header with identifying values redacted."""
    summary, items = _series_parts(series)
    if not items:
        return summary
    return "\n".join([summary, "first instance header:", *text_table(TAG_HEAD, items), NOTE])


def series_html(series: Series) -> str:
    """HTML form of :func:`series_text`."""
    summary, items = _series_parts(series)
    if not items:
        return f"<div class='medsec-series'><b>{escape(summary)}</b></div>"
    return (
        f"<div class='medsec-series'><b>{escape(summary)}</b><details><summary>first instance header"
        f"</summary>{html_table(TAG_HEAD, items)}</details><small>{escape(NOTE)}</small></div>"
    )
