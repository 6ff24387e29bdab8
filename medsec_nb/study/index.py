"""The container index as the study layer reads it: one typed entry per instance
(docs/FORMAT.md, "Index"), and the order of instances in a series."""

from __future__ import annotations

from typing import TypedDict

import numpy as np


class Segment(TypedDict, total=False):
    """Where an instance's metadata or pixel segment lies in the payload."""

    offset: int
    length: int
    sha256: str  # signed containers only


class Image(TypedDict):
    """Pixel facts of an instance, read once when the study was encrypted."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str | None
    slope: float
    intercept: float
    native: bool  # raw little-endian monochrome samples without a Modality LUT


class IndexEntry(TypedDict, total=False):
    """One instance of the index. ``sop``, ``study``, ``series``, ``path`` and ``meta`` are always
    there; the rest may be missing or null in containers from other writers."""

    path: str
    sop: str
    sop_class: str | None
    study: str
    series: str
    series_number: float | None
    instance_number: float | None
    modality: str | None
    position: list[float] | None
    orientation: list[float] | None
    transfer_syntax: str | None
    size: int
    meta: Segment
    pixels: Segment | None
    pixel_tag_offset: int | None
    pixel_value_offset: int | None
    image: Image | None


def slice_order(entries: list[IndexEntry]) -> list[int]:
    """Indices of ``entries`` sorted by position along the slice normal, then instance number, then UID."""
    normal = None
    for e in entries:
        o = e.get("orientation")
        if o:
            normal = [float(v) for v in np.cross(o[:3], o[3:])]
            break

    def key(k: int) -> tuple[bool, float, bool, float, str]:
        e = entries[k]
        pos = e.get("position")
        dist = (
            pos[0] * normal[0] + pos[1] * normal[1] + pos[2] * normal[2]
            if pos is not None and normal is not None
            else None
        )
        inst = e.get("instance_number")
        return (dist is None, dist or 0.0, inst is None, inst or 0.0, e["sop"])

    return sorted(range(len(entries)), key=key)
