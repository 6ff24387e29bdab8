"""Reading a source study folder: each DICOM file split into metadata and pixel-value bytes.

A file's bytes ``F`` are stored as two plaintext segments, ``meta = F[:v] + F[v+n:]`` and
``pixels = F[v:v+n]`` where ``v, n`` are the offset and length of the top-level Pixel Data
value, so metadata can be read without decrypting pixels and pixels can be decrypted
straight into an array.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pydicom
from pydicom.encaps import generate_fragments
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..core.errors import SourceError
from ..core.reading import reading

# (7FE0,0010) Pixel Data, (7FE0,0008) Float and (7FE0,0009) Double Float Pixel Data, LE and BE
_PIXEL_TAGS = {
    b"\xe0\x7f\x10\x00",
    b"\x7f\xe0\x00\x10",
    b"\xe0\x7f\x08\x00",
    b"\x7f\xe0\x00\x08",
    b"\xe0\x7f\x09\x00",
    b"\x7f\xe0\x00\x09",
}
_NATIVE_LE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0"


@dataclass
class SourceInstance:
    """One source file, parsed enough to index and split it."""

    data: bytes
    entry: dict[str, Any]  # the index entry, without segment locations
    value_offset: int  # Pixel Data value position in ``data`` (== len(data) if none)
    value_length: int
    header: pydicom.Dataset | None = None  # the parsed header (no pixels), for checks before storing; not stored

    @property
    def meta(self) -> bytes:
        v, n = self.value_offset, self.value_length
        return self.data[:v] + self.data[v + n :] if n else self.data

    @property
    def pixels(self) -> memoryview:
        v, n = self.value_offset, self.value_length
        return memoryview(self.data)[v : v + n]


def list_source_files(src: str | os.PathLike[str]) -> list[Path]:
    """Every non-hidden regular file under ``src`` (or ``src`` itself), in a stable order."""
    src = Path(src)
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise SourceError(f"{src}: no such file or folder")
    files = sorted(
        p for p in src.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts)
    )
    if not files:
        raise SourceError(f"{src}: folder holds no files")
    return files


def _number(value: Any, default: float | None = None) -> float | None:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _floats(value: Any, n: int) -> list[float] | None:
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _image(ds: pydicom.Dataset, ts: str, value_length: int, float_pixels: bool) -> dict[str, Any] | None:
    if "Rows" not in ds or "Columns" not in ds or "BitsAllocated" not in ds:
        return None
    rows, cols, ba = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    frames = int(_number(ds.get("NumberOfFrames"), 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    rescale = ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None
    # The fast path decodes raw little-endian monochrome samples itself; anything else
    # (compressed, big endian, colour, packed bits, a Modality LUT) goes through pydicom.
    native = (
        ts in _NATIVE_LE
        and not float_pixels
        and samples == 1
        and ba in (8, 16, 32)
        and "ModalityLUTSequence" not in ds
        and value_length >= rows * cols * frames * ba // 8
    )
    return {
        "rows": rows,
        "columns": cols,
        "frames": frames,
        "samples": samples,
        "bits_allocated": ba,
        "bits_stored": int(ds.get("BitsStored", ba)),
        "pixel_representation": int(ds.get("PixelRepresentation", 0)),
        "photometric": str(ds.get("PhotometricInterpretation", "")),
        # as pydicom's apply_modality_lut: the rescale applies only when both attributes are present
        "slope": _number(ds.get("RescaleSlope"), 1.0) if rescale else 1.0,
        "intercept": _number(ds.get("RescaleIntercept"), 0.0) if rescale else 0.0,
        "native": native,
    }


def _pixel_value_span(data: bytes, tag_offset: int, implicit: bool, little: bool, where: str) -> tuple[int, int]:
    if data[tag_offset : tag_offset + 4] not in _PIXEL_TAGS:
        raise SourceError(f"{where}: could not locate the Pixel Data element")
    end = "<" if little else ">"
    if implicit:
        head = 8
        length = int.from_bytes(data[tag_offset + 4 : tag_offset + 8], "little")
    else:
        head = 12
        length = int.from_bytes(data[tag_offset + 8 : tag_offset + 12], "little" if little else "big")
    start = tag_offset + head
    if length != 0xFFFFFFFF:
        if start + length > len(data):
            raise SourceError(f"{where}: Pixel Data runs past the end of the file (truncated?)")
        return start, length
    buf = io.BytesIO(data)
    buf.seek(start)
    try:
        for _ in generate_fragments(buf, endianness=end):
            pass
    except (ValueError, EOFError) as exc:
        raise SourceError(f"{where}: malformed encapsulated Pixel Data ({exc})") from None
    stop = buf.tell()
    if data[stop - 4 : stop] != _SEQ_DELIMITER or stop + 4 > len(data):
        raise SourceError(f"{where}: encapsulated Pixel Data has no sequence delimiter (truncated?)")
    return start, stop + 4 - start


def _check_complete(ds: pydicom.Dataset, size: int, path: Path | str) -> None:
    """The last element of a dataset without Pixel Data must end exactly at the end of the file."""
    tags = list(ds.keys())
    if not tags:
        raise SourceError(f"{path}: holds no data elements")
    last = ds.get_item(tags[-1])
    length, tell = getattr(last, "length", None), getattr(last, "value_tell", None)
    if length is None or tell is None or length == 0xFFFFFFFF:
        return
    if tell + length != size:
        raise SourceError(
            f"{path}: file ends {'inside' if tell + length > size else 'after'} its last "
            "element (truncated or corrupt DICOM file)"
        )


def read_source_instance(path: Path, rel: str) -> SourceInstance:
    """Read and split one file; raise SourceError naming it when it is not a usable instance."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror})") from None
    return split_instance(data, rel, path)


def split_instance(data: bytes, rel: str, path: Path | str) -> SourceInstance:
    """Split the bytes of one DICOM file (named ``path`` in errors and warnings) for storage as ``rel``."""
    with reading(str(path)):
        return _split(data, rel, path)


def _split(data: bytes, rel: str, path: Path | str) -> SourceInstance:
    buf = io.BytesIO(data)
    try:
        try:
            ds = pydicom.dcmread(buf, stop_before_pixels=True)
        except InvalidDicomError:
            buf.seek(0)
            ds = pydicom.dcmread(buf, stop_before_pixels=True, force=True)
    except Exception as exc:  # pydicom raises many types on garbage input
        raise SourceError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None
    tag_offset = buf.tell()
    for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not str(ds.get(kw, "") or "").strip():
            raise SourceError(f"{path}: not a DICOM instance (no {kw})")
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    implicit = ds.original_encoding[0] if ds.original_encoding[0] is not None else True
    little = ds.original_encoding[1] if ds.original_encoding[1] is not None else True
    has_image = "Rows" in ds and "Columns" in ds
    if ts == DeflatedExplicitVRLittleEndian:
        v, n = len(data), 0  # the dataset is deflated as a whole: stored unsplit
        has_pixels = has_image
    elif tag_offset < len(data):
        v, n = _pixel_value_span(data, tag_offset, implicit, little, str(path))
        has_pixels = True
    else:
        v, n = len(data), 0
        has_pixels = False
        if has_image:
            raise SourceError(f"{path}: has image attributes but no Pixel Data (truncated file?)")
        _check_complete(ds, len(data), path)
    float_pixels = bool(n) and data[tag_offset : tag_offset + 4] not in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")
    try:  # a malformed attribute (e.g. an empty Rows: int(None)) is the file's fault, named as such
        entry = {
            "path": rel,
            "sop": str(ds.SOPInstanceUID),
            "sop_class": str(ds.get("SOPClassUID", "")),
            "study": str(ds.StudyInstanceUID),
            "series": str(ds.SeriesInstanceUID),
            "series_number": _number(ds.get("SeriesNumber")),
            "modality": str(ds.get("Modality", "")),
            "instance_number": _number(ds.get("InstanceNumber")),
            "position": _floats(ds.get("ImagePositionPatient"), 3),
            "orientation": _floats(ds.get("ImageOrientationPatient"), 6),
            "transfer_syntax": ts,
            "size": len(data),
            "pixel_tag_offset": tag_offset if n else None,
            "pixel_value_offset": v if n else None,
            "image": _image(ds, ts, n, float_pixels) if has_pixels else None,
        }
    except (TypeError, ValueError, AttributeError):
        raise SourceError(f"{path}: malformed image attributes") from None
    return SourceInstance(data, entry, v, n, ds)


def iter_source_instances(src: str | os.PathLike[str], files: list[Path]) -> Iterator[SourceInstance]:
    """Yield every file of a study folder split for storage; one study per container."""
    src = Path(src)
    base = src if src.is_dir() else src.parent

    def read() -> Iterator[tuple[SourceInstance, str]]:
        for path in files:
            rel = str(PurePosixPath(*path.relative_to(base).parts))
            yield read_source_instance(path, rel), str(path)

    return one_study(read(), str(files[0]) if files else str(src))


def one_study(instances: Iterable[tuple[SourceInstance, str]], first: str) -> Iterator[SourceInstance]:
    """Pass ``(instance, where)`` pairs through, refusing a second study or a repeated SOP Instance UID."""
    study = None
    seen: dict[str, str] = {}
    for inst, where in instances:
        e = inst.entry
        if study is None:
            study = e["study"]
        elif e["study"] != study:
            raise SourceError(
                f"{where}: belongs to another study than {first} "
                "(a container holds one study; encrypt each study separately)"
            )
        if e["sop"] in seen:
            raise SourceError(f"{where}: same SOP Instance UID as {seen[e['sop']]} (duplicate instance)")
        seen[e["sop"]] = where
        yield inst


def dataset_bytes(ds: pydicom.Dataset) -> bytes:
    """The DICOM file bytes of an in-memory dataset (Part 10, with File Meta), made in memory."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def iter_memory_instances(items: Iterable[pydicom.Dataset | bytes]) -> Iterator[SourceInstance]:
    """Split in-memory instances (datasets or Part 10 bytes) for storage, named ``IM00001.dcm``, ...;
    one study per container. Nothing is written to disk."""

    def split() -> Iterator[tuple[SourceInstance, str]]:
        for k, item in enumerate(items, 1):
            rel = f"IM{k:05d}.dcm"
            where = f"instance {k}"
            data = item if isinstance(item, bytes) else dataset_bytes(item)
            yield split_instance(data, rel, where), where

    return one_study(split(), "instance 1")
