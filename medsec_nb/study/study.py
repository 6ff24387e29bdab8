"""Study and Series: decrypted views of a container, in memory only.

``open_study`` authenticates the header and index; instances are decrypted when asked
for. ``Series.volume()`` decrypts pixel values straight into the output array on two
threads (AES-GCM, SHA-256 and NumPy release the GIL), without parsing any header.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.pixels import apply_modality_lut
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from tqdm.auto import tqdm

from ..access.gate import Access, open_audited
from ..access.policy import Policy
from ..access.reveal import check_justification, element_at
from ..audit import AuditLog
from ..container._reader import Container
from ..container.format import plaintext_length
from ..core.errors import MedsecError, StudyClosedError
from ..deid.redacted import redacted
from ..keys.identity import Identity, Passphrase, Recipient
from ..notebook import registry
from ..saveguard import fingerprints as guard

#: Decrypting threads per study unless ``open_study(..., threads=)`` says otherwise.
DEFAULT_THREADS = 2
_PREFETCH = 4


def _threads(n: int | None) -> int:
    if n is None:
        return DEFAULT_THREADS
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a whole number >= 1, not {n!r}")
    return n


_ENCODINGS = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}


def _parse(data: bytes | bytearray, *, stop_before_pixels: bool = False) -> pydicom.Dataset:
    ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=stop_before_pixels)
    ds.buffer = None  # pydicom keeps the source buffer otherwise (a second copy of the file)
    if "TransferSyntaxUID" not in ds.file_meta and ds.original_encoding in _ENCODINGS:
        # a file without File Meta (pydicom's OT-PAL-8-face.dcm): the syntax its encoding shows,
        # in memory only, so that its pixels can be decoded
        ds.file_meta.TransferSyntaxUID = _ENCODINGS[ds.original_encoding]
    return redacted(ds)


def _assemble(entry: dict[str, Any], meta: bytearray, pixels: bytes | None) -> pydicom.Dataset:
    """The instance as pydicom would read it from the original file, without copying the pixel
    value through a parser: the metadata is parsed, then Pixel Data is attached as the raw
    element pydicom itself would have produced (encapsulated data is parsed whole)."""
    t, v = entry.get("pixel_tag_offset"), entry.get("pixel_value_offset")
    if pixels is None or t is None:
        return _parse(meta)
    head = bytes(meta[t:v])
    implicit = v - t == 8
    order = "big" if head[:2] in (b"\x7f\xe0",) else "little"
    length = int.from_bytes(head[4:8] if implicit else head[8:12], order)
    if length == 0xFFFFFFFF:
        return _parse(b"".join((meta[:v], pixels, meta[v:])))
    del meta[t:v]
    ds = _parse(meta)
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


def _slice_order(entries: list[dict[str, Any]]) -> list[int]:
    """Indices sorted by position along the slice normal, then instance number, then UID."""
    normal = None
    for e in entries:
        o = e.get("orientation")
        if o:
            normal = [float(v) for v in np.cross(o[:3], o[3:])]
            break

    def key(k: int) -> tuple:
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


def _stored_dtype(img: dict[str, Any]) -> np.dtype:
    kind = "i" if img["pixel_representation"] == 1 else "u"
    return np.dtype(f"<{kind}{img['bits_allocated'] // 8}")


def _output_dtype(imgs: list[dict[str, Any]]) -> np.dtype:
    """Integer when every rescale is integral and the range fits, else float64 (as pydicom)."""
    if all(i["slope"] == 1.0 and i["intercept"] == 0.0 for i in imgs) and len({_stored_dtype(i) for i in imgs}) == 1:
        return _stored_dtype(imgs[0])
    if all(i["slope"] == 1.0 and float(i["intercept"]).is_integer() for i in imgs):
        lo = min((-(1 << (i["bits_stored"] - 1)) if i["pixel_representation"] else 0) + i["intercept"] for i in imgs)
        hi = max(
            ((1 << (i["bits_stored"] - 1)) - 1 if i["pixel_representation"] else (1 << i["bits_stored"]) - 1)
            + i["intercept"]
            for i in imgs
        )
        for dt in (np.int16, np.int32, np.int64):
            if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
                return np.dtype(dt)
    return np.dtype(np.float64)


class Series:
    """One series of a study: instances sorted by position, then instance number."""

    def __init__(self, study: Study, indices: list[int]):
        self._study = study
        entries = study._box.entries
        self._idx = [indices[k] for k in _slice_order([entries[i] for i in indices])]
        first = entries[self._idx[0]]
        self.uid: str = first["series"]
        self.modality: str = first.get("modality", "")
        self.number: float | None = first.get("series_number")

    def __len__(self) -> int:
        return len(self._idx)

    def _label(self) -> str:
        """``series[k]``, its place in the study: error texts reach audit records, which carry
        no attribute values (no UIDs)."""
        return f"series[{self._study.series.index(self)}]"

    def _entry(self, i: int) -> tuple[Container, int, dict[str, Any]]:
        box = self._study._open_box()
        if not -len(self._idx) <= i < len(self._idx):
            raise IndexError(f"series has {len(self._idx)} instances; no instance {i}")
        k = self._idx[i]
        return box, k, box.entries[k]

    def __getitem__(self, i: int) -> pydicom.Dataset:
        """Instance ``i`` as a pydicom Dataset, decrypted in memory."""
        box, k, e = self._entry(i)
        return _assemble(e, *box.instance_parts(k))

    def header(self, i: int) -> pydicom.Dataset:
        """Instance ``i`` without Pixel Data (elements after it kept); no pixel bytes are decrypted."""
        box, k, e = self._entry(i)
        meta = box.meta_bytes(k)
        t, v = e.get("pixel_tag_offset"), e.get("pixel_value_offset")
        if t is not None:
            del meta[t:v]  # drop the Pixel Data element header; its value is not in ``meta``
        return _parse(meta, stop_before_pixels=t is None)

    def reveal(self, i: int, keyword: str, justification: str | None = None) -> str:
        """The raw value of one identifying element of instance ``i`` (e.g. "PatientName", or a
        nested one: "OtherPatientIDsSequence[0].PatientID"), if the policy allows ``reveal-tag``
        for this purpose; the reveal and its ``justification`` (at least ``MIN_JUSTIFICATION``
        characters when given), not the value, are recorded in the audit log. Displays stay redacted."""
        box, _k, _ = self._entry(i)
        access = self._study._access
        detail = {"tag": keyword, "instance": int(i)}
        if justification is not None:
            detail["justification"] = check_justification(justification)
        access.authorize("reveal-tag", "reveal-tag", detail)
        elem = element_at(self.header(i), keyword)
        if elem is None:
            raise MedsecError(f"{box.path}: instance {i} has no element {keyword!r}")
        value = str(elem.value)
        access.record("reveal-tag", detail=detail)
        return value

    def redactor(self, i: int = 0, **kwargs):
        """A tag table of instance ``i`` with actions, options, overrides and audited reveal;
        see ``medsec_nb.notebook.tag_redactor``."""
        from ..notebook.tag_redactor import TagRedactor

        return TagRedactor(self, i, **kwargs)

    def __iter__(self) -> Iterator[pydicom.Dataset]:
        """Every instance in order (an audited bulk read); the next ones are decrypted ahead
        on worker threads."""
        box = self._study._open_box()
        access = self._study._access
        access.record("decrypt-series", instances=len(self), detail={"mode": "iterate"})
        try:
            yield from self._iter(box)
        except Exception as exc:
            access.record(
                "decrypt-series",
                "failure",
                instances=len(self),
                detail={"mode": "iterate", "error": type(exc).__name__},
            )
            raise

    def _iter(self, box: Container) -> Iterator[pydicom.Dataset]:
        with ThreadPoolExecutor(self._study.threads) as pool:
            pending = [pool.submit(box.instance_parts, k) for k in self._idx[:_PREFETCH]]
            try:
                for n in range(len(self._idx)):
                    meta, pixels = pending[n].result()
                    pending[n] = None
                    self._study._open_box()  # closed meanwhile: prefetched plaintext is dropped
                    if n + _PREFETCH < len(self._idx):
                        pending.append(pool.submit(box.instance_parts, self._idx[n + _PREFETCH]))
                    yield _assemble(box.entries[self._idx[n]], meta, pixels)
            finally:
                for f in pending:
                    if f is not None:
                        f.cancel()

    def volume(self, progress: bool | None = None) -> np.ndarray:
        """Pixel data of the whole series, shape (z, y, x), modality rescale applied (an
        audited bulk read: returned only once recorded).

        The dtype is the stored integer type when slope is 1 and the intercept integral
        (int16 Hounsfield units for most CT), else float64 as pydicom's apply_modality_lut.
        """
        return self._study._access.audited("decrypt-series", lambda: self._volume(progress), instances=len(self))

    def _volume(self, progress: bool | None) -> np.ndarray:
        box = self._study._open_box()
        entries = [box.entries[k] for k in self._idx]
        imgs = [e.get("image") for e in entries]
        if any(i is None for i in imgs):
            raise MedsecError(f"{box.path}: {self._label()} has instances without pixel data")
        shapes = {(i["rows"], i["columns"], i["samples"]) for i in imgs}
        if len(shapes) > 1:
            raise MedsecError(
                f"{box.path}: {self._label()} mixes image sizes {sorted(shapes)}; "
                "read its instances one by one with series[i]"
            )
        show = progress is not False and len(self._idx) > 1
        bar = tqdm(total=len(self._idx), unit="slice", desc="decrypt", disable=None if show else True)
        try:
            if all(i["native"] for i in imgs):
                return self._native_volume(entries, imgs, bar)
            return self._pydicom_volume(bar)
        finally:
            bar.close()

    def _native_volume(self, entries: list[dict[str, Any]], imgs: list[dict[str, Any]], bar: tqdm) -> np.ndarray:
        box = self._study._open_box()
        rows, cols = imgs[0]["rows"], imgs[0]["columns"]
        starts = np.cumsum([0] + [i["frames"] for i in imgs])
        out_dt = _output_dtype(imgs)
        chunk = box.header.body.chunk_size
        vol = np.empty((int(starts[-1]), rows, cols), dtype=out_dt)

        def one(n: int) -> None:
            k, img = self._idx[n], imgs[n]
            target = vol[starts[n] : starts[n + 1]]
            st = _stored_dtype(img)
            need = target.size * st.itemsize
            direct = st == out_dt and plaintext_length(entries[n]["pixels"]["length"], chunk) == need
            if direct:
                box.pixel_view(k, memoryview(target.reshape(-1)).cast("B"))
                raw = target
            else:  # a view of this thread's scratch buffer, consumed before its next use
                raw = np.frombuffer(box.pixel_view(k), dtype=st, count=target.size).reshape(target.shape)
            if img["bits_stored"] < img["bits_allocated"]:
                shift = img["bits_allocated"] - img["bits_stored"]
                np.left_shift(raw, shift, out=raw)
                np.right_shift(raw, shift, out=raw)
            if out_dt.kind == "f":
                np.multiply(raw, img["slope"], out=target, dtype=np.float64)
                target += img["intercept"]
            elif not direct:
                np.add(raw, int(img["intercept"]), out=target, dtype=out_dt, casting="unsafe")
            elif img["intercept"]:
                target += out_dt.type(int(img["intercept"]))
            bar.update()

        try:
            if self._study.threads == 1:
                for n in range(len(self._idx)):
                    one(n)
            else:
                with ThreadPoolExecutor(self._study.threads) as pool:
                    for _ in pool.map(one, range(len(self._idx))):
                        pass
        except BaseException:
            vol.fill(0)
            raise
        return vol

    def _pydicom_volume(self, bar: tqdm) -> np.ndarray:
        arrays = []
        for n, ds in enumerate(self):
            try:
                arr = apply_modality_lut(ds.pixel_array, ds)
            except Exception as exc:  # pydicom's decoders raise many types; their texts may quote values
                raise MedsecError(
                    f"{self._study.path}: {self._label()} instance {n}: pixel data cannot be "
                    f"decoded ({type(exc).__name__}); read it with series[{n}]"
                ) from None
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            tail = arr.shape[-3:] if int(ds.get("SamplesPerPixel", 1)) > 1 else arr.shape[-2:]
            arrays.append(arr.reshape((frames,) + tuple(tail)))
            bar.update()
        return np.concatenate(arrays, axis=0)

    @property
    def geometry(self):
        """Spacing, origin and direction of the series (see ``medsec_nb.study.geometry``)."""
        from .geometry import series_geometry

        return series_geometry(self)

    def view(self, **kwargs):
        """A slice viewer widget (slider, window/level presets); see ``medsec_nb.notebook.widgets``."""
        from ..notebook.widgets import SliceViewer

        return SliceViewer(self, **kwargs)

    def _repr_html_(self) -> str:
        from ..notebook.display import series_html

        return series_html(self)

    def _repr_pretty_(self, p, cycle: bool) -> None:
        from ..notebook.display import series_text

        p.text(series_text(self))

    def __repr__(self) -> str:
        return (
            f"<Series {self.modality or '?'} #{self.number if self.number is not None else '?'}: {len(self)} instances>"
        )


class Study:
    """A decrypted-on-demand view of a container. Use ``with open_study(...) as study:``.

    ``threads``: how many threads decrypt a bulk read (``volume()``, iteration)."""

    def __init__(self, box: Container, access: Access, *, threads: int | None = None):
        self._box = box
        self._access = access
        self.threads = _threads(threads)
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(box.entries):
            groups.setdefault(e["series"], []).append(i)
        series = [Series(self, idx) for idx in groups.values()]
        series.sort(key=lambda s: (s.number is None, s.number or 0.0, s.uid))
        self.series: list[Series] = series

    def _open_box(self) -> Container:
        if self._box.closed:
            raise StudyClosedError(f"{self._box.path}: study is closed; open it again to read")
        return self._box

    @property
    def path(self) -> str:
        return str(self._box.path)

    @property
    def purpose(self) -> str:
        """The purpose of use this study was opened for (recorded with every access)."""
        return self._access.purpose

    @property
    def signer(self) -> str | None:
        """Key id of the verified producer signature, or None if unsigned."""
        return self._box.signer

    @property
    def key_id(self) -> str:
        """Key id of the identity that opened the study ("passphrase" for a passphrase)."""
        return self._box.key_id

    @property
    def instance_count(self) -> int:
        return sum(len(s) for s in self.series)

    @property
    def closed(self) -> bool:
        return self._box.closed

    def close(self) -> None:
        """Drop the keys and index; later access raises StudyClosedError."""
        self._box.close()
        guard.withdraw(self)
        registry.withdrawn(self)

    def export_deidentified(self, output: str | os.PathLike | None = None, **kwargs: Any):
        """De-identify this study (PS3.15 Basic Profile plus ``options``) to a DICOM folder or, with
        ``recipients``, a new container; audited, atomic, leak-scanned. Keyword arguments and the
        returned conformance report: ``medsec_nb.deid_export.export_deidentified``."""
        from .export import export_deidentified

        return export_deidentified(self, output, **kwargs)

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repr_html_(self) -> str:
        from ..notebook.display import study_html

        return study_html(self)

    def _repr_pretty_(self, p, cycle: bool) -> None:
        from ..notebook.display import study_text

        p.text(study_text(self))

    def __repr__(self) -> str:
        if self.closed:
            return f"<Study {os.path.basename(self.path)} (closed)>"
        return (
            f"<Study {os.path.basename(self.path)}: {len(self.series)} series, "
            f"{self.instance_count} instances, signer {self.signer or 'none'}>"
        )


def open_study(
    path: str | os.PathLike,
    identity: Identity | str | os.PathLike | None = None,
    passphrase: Passphrase = None,
    *,
    purpose: str | None = None,
    purpose_text: str | None = None,
    require_signer: Recipient | str | os.PathLike | None = None,
    identity_passphrase: Passphrase = None,
    audit_log: AuditLog | str | os.PathLike | None = None,
    policy: Policy | str | os.PathLike | None = None,
    threads: int | None = None,
) -> Study:
    """Open an encrypted study with a private key (``identity``) or the study ``passphrase``.

    ``purpose`` (required, or ``$MEDSEC_PURPOSE``): the purpose of use, e.g. TREAT, HRESCH, EDU.
    The access policy is asked before any key is unwrapped, and the opening is recorded in the
    audit log (``audit_log``, else ``$MEDSEC_AUDIT_LOG``, else the user's data folder).
    ``identity`` may be a path to a ``.key`` file; ``identity_passphrase`` unlocks it.
    ``require_signer`` (a public key) refuses studies not signed by that key.
    ``threads``: decrypting threads per bulk read (default :data:`DEFAULT_THREADS`).
    """
    threads = _threads(threads)  # a bad value fails before anything is unlocked
    box, access = open_audited(
        path,
        op="open",
        purpose=purpose,
        purpose_text=purpose_text,
        identity=identity,
        passphrase=passphrase,
        require_signer=require_signer,
        identity_passphrase=identity_passphrase,
        audit_log=audit_log,
        policy=policy,
    )
    study = Study(box, access, threads=threads)
    guard.publish(study)
    registry.opened(study)
    return study
