"""Redacted rich display (HTML and text) of studies, series and DICOM datasets.

Every value shown goes through :mod:`medsec_nb.redaction`: identifying values appear as the
visible ``REDACTED`` marker, sequences and bulk data are summarised, UIDs of the study
and series tables are not shown. Raw values stay reachable by explicit attribute access
(``ds.PatientName``); only their display is redacted. All HTML is escaped.
"""

from __future__ import annotations

import os
from html import escape
from typing import TYPE_CHECKING, Any, Iterable

import pydicom
from pydicom.dataset import FileDataset

from .errors import MedsecError
from .redaction import REDACTED, redacted_items

if TYPE_CHECKING:
    from .study import Series, Study

_PIXEL_DATA = 0x7FE00010
_NOTE = "identifying values are redacted in every display"
_MARK_HTML = ('<span class="medsec-redacted" style="background:#333;color:#fff;padding:0 .3em;'
              f'border-radius:2px">{escape(REDACTED)}</span>')


def _cell(value: str) -> str:
    return _MARK_HTML if value == REDACTED else escape(value)


def _table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    th = "".join(f"<th style='text-align:left'>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{_cell(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _text_table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    rows = [list(head)] + [list(r) for r in rows]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else str(value)


def _image_size(entries: list[dict[str, Any]]) -> str:
    sizes = sorted({(e["image"]["rows"], e["image"]["columns"]) for e in entries if e.get("image")})
    return ", ".join(f"{r} x {c}" for r, c in sizes) or "-"


def _series_entries(series: Series) -> list[dict[str, Any]]:
    box = series._study._open_box()
    return [box.entries[k] for k in series._idx]


# -- study ------------------------------------------------------------------------------------

_STUDY_HEAD = ("#", "modality", "series", "instances", "image size")


def _study_parts(study: Study) -> tuple[str, str, list[tuple[str, ...]]]:
    name = os.path.basename(study.path)
    if study.closed:
        return f"Study {name} (closed)", "", []
    title = f"Study {name}: {len(study.series)} series, {study.instance_count} instances"
    facts = (f"opened with {study.key_id}; signer {study.signer or 'none (unsigned)'}; "
             f"purpose {study.purpose or 'not given'}")
    rows = [(str(n), s.modality or "-", _number(s.number), str(len(s)), _image_size(_series_entries(s)))
            for n, s in enumerate(study.series)]
    return title, facts, rows


def study_text(study: Study) -> str:
    """Plain-text summary of a study: series table, key id, signer, purpose; no UIDs, no PHI."""
    title, facts, rows = _study_parts(study)
    if not facts:
        return title
    return "\n".join([title, facts, *_text_table(_STUDY_HEAD, rows), _NOTE])


def study_html(study: Study) -> str:
    """HTML form of :func:`study_text`."""
    title, facts, rows = _study_parts(study)
    if not facts:
        return f"<div class='medsec-study'><b>{escape(title)}</b></div>"
    return (f"<div class='medsec-study'><b>{escape(title)}</b><br><small>{escape(facts)}</small>"
            f"{_table(_STUDY_HEAD, rows)}<small>{escape(_NOTE)}</small></div>")


# -- series -----------------------------------------------------------------------------------

_TAG_HEAD = ("tag", "keyword", "value")


def _series_parts(series: Series) -> tuple[str, list[tuple[str, str, str]]]:
    head = f"Series {series.modality or '?'} #{_number(series.number)}"
    if series._study.closed:
        return f"{head} (study closed)", []
    summary = f"{head}: {len(series)} instances, {_image_size(_series_entries(series))}"
    try:
        g = series.geometry
        summary += ", spacing (z, y, x) " + " x ".join(f"{v:g}" for v in g.spacing) + " mm"
        summary += " (uneven slice gaps)" if g.uneven else ""
    except MedsecError:       # no image in the series
        pass
    return summary, list(redacted_items(series.header(0)))


def series_text(series: Series) -> str:
    """Series summary, then the first instance's header with identifying values redacted."""
    summary, items = _series_parts(series)
    if not items:
        return summary
    return "\n".join([summary, "first instance header:", *_text_table(_TAG_HEAD, items), _NOTE])


def series_html(series: Series) -> str:
    """HTML form of :func:`series_text`."""
    summary, items = _series_parts(series)
    if not items:
        return f"<div class='medsec-series'><b>{escape(summary)}</b></div>"
    return (f"<div class='medsec-series'><b>{escape(summary)}</b><details><summary>first instance header"
            f"</summary>{_table(_TAG_HEAD, items)}</details><small>{escape(_NOTE)}</small></div>")


# -- datasets ---------------------------------------------------------------------------------

def _dataset_parts(ds: pydicom.Dataset) -> tuple[str, list[tuple[str, str, str]]]:
    items = list(redacted_items(ds))
    if _PIXEL_DATA in ds:
        items.append(("(7FE0,0010)", "PixelData", "<pixel data, not shown>"))
    kind = "Dataset" if isinstance(ds, FileDataset) else "Sequence item"
    return f"{kind} ({len(items)} elements, identifying values redacted)", items


def dataset_text(ds: pydicom.Dataset) -> str:
    """Top-level elements of ``ds`` through the redaction rules, one per line."""
    title, items = _dataset_parts(ds)
    return "\n".join([title, *_text_table(_TAG_HEAD, items)])


def dataset_html(ds: pydicom.Dataset) -> str:
    """HTML form of :func:`dataset_text`."""
    title, items = _dataset_parts(ds)
    return f"<div class='medsec-dataset'><b>{escape(title)}</b>{_table(_TAG_HEAD, items)}</div>"


class _Redacting:
    """Mixin for pydicom datasets: every display form is redacted, sequence items and slices too."""

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if isinstance(value, pydicom.Dataset):                 # a slice of the dataset
            return redacted(value)
        if value.VR == "SQ":
            for item in value.value:
                redacted(item)
        return value

    def __str__(self) -> str:
        return dataset_text(self)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return dataset_html(self)

    def _repr_pretty_(self, p, cycle: bool) -> None:
        p.text(dataset_text(self))


class RedactedDataset(_Redacting, FileDataset):
    """A parsed instance whose repr, str and rich displays are redacted; values stay accessible."""


class RedactedItem(_Redacting, pydicom.Dataset):
    """A sequence item (or slice) of a :class:`RedactedDataset`, displayed the same way."""


def redacted(ds: pydicom.Dataset) -> RedactedDataset | RedactedItem:
    """Make ``ds`` display redacted, in place (its class changes; its contents do not)."""
    if isinstance(ds, _Redacting):
        return ds
    if type(ds) is FileDataset:
        ds.__class__ = RedactedDataset
    elif type(ds) is pydicom.Dataset:
        ds.__class__ = RedactedItem
    else:
        raise TypeError(f"cannot redact a {type(ds).__name__}; expected a pydicom Dataset or FileDataset")
    return ds
