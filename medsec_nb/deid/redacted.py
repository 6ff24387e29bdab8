"""Redacted display of DICOM datasets: every text and HTML form of a dataset shows identifying
values as the visible ``REDACTED`` marker (:mod:`medsec_nb.deid.redaction`); the values stay
reachable by explicit attribute access (``ds.PatientName``). All HTML is escaped."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Protocol, cast, overload

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import FileDataset
from pydicom.tag import TagType

from .redaction import REDACTED, redacted_items

_PIXEL_DATA = 0x7FE00010
NOTE = "identifying values are redacted in every display"
_MARK_HTML = (
    '<span class="medsec-redacted" style="background:#333;color:#fff;padding:0 .3em;'
    f'border-radius:2px">{escape(REDACTED)}</span>'
)
TAG_HEAD = ("tag", "keyword", "value")


def _cell(value: str) -> str:
    return _MARK_HTML if value == REDACTED else escape(value)


def html_table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    th = "".join(f"<th style='text-align:left'>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def text_table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    rows = [list(head)] + [list(r) for r in rows]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def _dataset_parts(ds: pydicom.Dataset) -> tuple[str, list[tuple[str, str, str]]]:
    items = list(redacted_items(ds))
    if _PIXEL_DATA in ds:
        items.append(("(7FE0,0010)", "PixelData", "<pixel data, not shown>"))
    kind = "Dataset" if isinstance(ds, FileDataset) else "Sequence item"
    return f"{kind} ({len(items)} elements, identifying values redacted)", items


def dataset_text(ds: pydicom.Dataset) -> str:
    """Top-level elements of ``ds`` through the redaction rules, one per line."""
    title, items = _dataset_parts(ds)
    return "\n".join([title, *text_table(TAG_HEAD, items)])


def dataset_html(ds: pydicom.Dataset) -> str:
    """HTML form of :func:`dataset_text`."""
    title, items = _dataset_parts(ds)
    return f"<div class='medsec-dataset'><b>{escape(title)}</b>{html_table(TAG_HEAD, items)}</div>"


class _Printer(Protocol):
    """The part of IPython's pretty printer that ``_repr_pretty_`` uses."""

    def text(self, obj: str) -> None: ...


class _Redacting(pydicom.Dataset):
    """Base of the redacted datasets: every display form is redacted, sequence items and slices too."""

    @overload
    def __getitem__(self, key: slice) -> pydicom.Dataset: ...

    @overload
    def __getitem__(self, key: TagType) -> DataElement: ...

    def __getitem__(self, key: slice | TagType) -> pydicom.Dataset | DataElement:
        value = super().__getitem__(key)
        if isinstance(value, pydicom.Dataset):  # a slice of the dataset
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

    def _repr_pretty_(self, p: _Printer, cycle: bool) -> None:
        p.text(dataset_text(self))


class RedactedDataset(_Redacting, FileDataset):
    """A parsed instance whose repr, str and rich displays are redacted; values stay accessible."""


class RedactedItem(_Redacting):
    """A sequence item (or slice) of a :class:`RedactedDataset`, displayed the same way."""


def redacted(ds: pydicom.Dataset) -> RedactedDataset | RedactedItem:
    """Make ``ds`` display redacted, in place (its class changes; its contents do not)."""
    if isinstance(ds, (RedactedDataset, RedactedItem)):
        return ds
    if type(ds) is FileDataset:
        ds.__class__ = RedactedDataset
        return cast(RedactedDataset, ds)  # the class just set
    if type(ds) is pydicom.Dataset:
        ds.__class__ = RedactedItem
        return cast(RedactedItem, ds)
    raise TypeError(f"cannot redact a {type(ds).__name__}; expected a pydicom Dataset or FileDataset")
