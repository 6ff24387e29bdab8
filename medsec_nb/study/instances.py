"""Instances from decrypted segments: pydicom datasets as pydicom would read them from the
original files, displayed redacted (:mod:`medsec_nb.deid.redacted`)."""

from __future__ import annotations

import io
from typing import Literal

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..deid.redacted import redacted
from .index import IndexEntry

_ENCODINGS = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}


def parse(data: bytes | bytearray, *, stop_before_pixels: bool = False) -> pydicom.Dataset:
    """Decrypted instance bytes (or a header) as a pydicom dataset, displayed redacted."""
    ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=stop_before_pixels)
    ds.buffer = None  # pydicom keeps the source buffer otherwise (a second copy of the file)
    if "TransferSyntaxUID" not in ds.file_meta and ds.original_encoding in _ENCODINGS:
        # a file without File Meta (pydicom's OT-PAL-8-face.dcm): the syntax its encoding shows,
        # in memory only, so that its pixels can be decoded
        ds.file_meta.TransferSyntaxUID = _ENCODINGS[ds.original_encoding]
    return redacted(ds)


def assemble(entry: IndexEntry, meta: bytearray, pixels: bytes | None) -> pydicom.Dataset:
    """The instance as pydicom would read it from the original file, without copying the pixel
    value through a parser: the metadata is parsed, then Pixel Data is attached as the raw
    element pydicom itself would have produced (encapsulated data is parsed whole)."""
    t, v = entry.get("pixel_tag_offset"), entry.get("pixel_value_offset")
    if pixels is None or t is None or v is None:  # no Pixel Data element: ``meta`` is the whole file
        return parse(meta)
    head = bytes(meta[t:v])
    implicit = v - t == 8
    order: Literal["big", "little"] = "big" if head[:2] in (b"\x7f\xe0",) else "little"
    length = int.from_bytes(head[4:8] if implicit else head[8:12], order)
    if length == 0xFFFFFFFF:
        return parse(b"".join((meta[:v], pixels, meta[v:])))
    del meta[t:v]
    ds = parse(meta)
    tag = (int.from_bytes(head[0:2], order) << 16) | int.from_bytes(head[2:4], order)
    ds[tag] = RawDataElement(
        Tag(tag),
        None if implicit else head[4:6].decode("ascii"),
        length,
        pixels,
        v,
        implicit,
        order == "little",
        True,
        False,
    )
    return ds
