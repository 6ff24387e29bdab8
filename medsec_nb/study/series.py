"""A series of an opened study: its instances in order, decrypted on demand; bulk reads audited."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NoReturn, cast

import numpy as np
import pydicom
from tqdm.auto import tqdm

from ..access.reveal import check_justification, element_at
from ..container._reader import Container
from ..container.format import plaintext_length
from ..core.errors import MedsecError
from . import faces
from .index import Image, IndexEntry, Segment, slice_order
from .instances import assemble, parse
from .pixels import instance_array, output_dtype, stored_dtype, to_output

if TYPE_CHECKING:
    from .geometry import Geometry
    from .study import Study

_PREFETCH = 4


def _index(box: Container) -> list[IndexEntry]:
    """The container's index entries, typed as the study layer reads them (the reader checked
    that ``sop``, ``study``, ``series``, ``path`` and the segments are there)."""
    return cast("list[IndexEntry]", box.entries)


class Series:
    """One series of a study: instances sorted by position, then instance number."""

    def __init__(self, study: Study, indices: list[int]):
        self._study = study
        entries = _index(study._container())
        self._idx = [indices[k] for k in slice_order([entries[i] for i in indices])]
        first = entries[self._idx[0]]
        self.uid: str = first["series"]
        self.modality: str | None = first.get("modality", "")
        self.number: float | None = first.get("series_number")

    def __len__(self) -> int:
        return len(self._idx)

    @property
    def study(self) -> Study:
        """The study this series belongs to."""
        return self._study

    @property
    def entries(self) -> list[IndexEntry]:
        """The index entries of the instances, in series order (StudyClosedError once closed)."""
        entries = _index(self._study._container())
        return [entries[k] for k in self._idx]

    def _label(self) -> str:
        """``series[k]``, its place in the study: error texts reach audit records, which carry
        no attribute values (no UIDs)."""
        return f"series[{self._study.series.index(self)}]"

    def _entry(self, i: int) -> tuple[Container, int, IndexEntry]:
        box = self._study._container()
        if not -len(self._idx) <= i < len(self._idx):
            raise IndexError(f"series has {len(self._idx)} instances; no instance {i}")
        k = self._idx[i]
        return box, k, _index(box)[k]

    def __getitem__(self, i: int) -> pydicom.Dataset:
        """Instance ``i`` as a pydicom Dataset, decrypted in memory."""
        box, k, e = self._entry(i)
        return assemble(e, *box.instance_parts(k))

    def header(self, i: int) -> pydicom.Dataset:
        """Instance ``i`` without Pixel Data (elements after it kept); no pixel bytes are decrypted."""
        box, k, e = self._entry(i)
        meta = box.meta_bytes(k)
        t, v = e.get("pixel_tag_offset"), e.get("pixel_value_offset")
        if t is not None:
            del meta[t:v]  # drop the Pixel Data element header; its value is not in ``meta``
        return parse(meta, stop_before_pixels=t is None)

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

    def pixels(self, i: int) -> np.ndarray:
        """Instance ``i``'s pixels as (frames, rows, columns[, samples]), modality rescale applied
        (one instance decrypted, then decoded by pydicom)."""
        ds = self[i]
        try:
            return instance_array(ds)
        except Exception as exc:  # pydicom's decoders raise many types; their texts may quote values
            raise MedsecError(
                f"{self._study.path}: {self._label()} instance {i}: pixel data cannot be decoded ({type(exc).__name__})"
            ) from None

    def redactor(self, i: int = 0, **kwargs: Any) -> Any:
        """A tag table of instance ``i`` with actions, options, overrides and audited reveal (a
        Jupyter widget the notebook layer provides: ``medsec_nb.notebook.tag_redactor``)."""
        return faces.make("redactor", self, i, **kwargs)

    def __iter__(self) -> Iterator[pydicom.Dataset]:
        """Every instance in order (an audited bulk read); the next ones are decrypted ahead
        on worker threads."""
        box = self._study._container()
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
            pending = deque(pool.submit(box.instance_parts, k) for k in self._idx[:_PREFETCH])
            try:
                for n in range(len(self._idx)):
                    meta, pixels = pending.popleft().result()  # not kept once taken
                    self._study._container()  # closed meanwhile: prefetched plaintext is dropped
                    if n + _PREFETCH < len(self._idx):
                        pending.append(pool.submit(box.instance_parts, self._idx[n + _PREFETCH]))
                    yield assemble(_index(box)[self._idx[n]], meta, pixels)
            finally:
                for f in pending:
                    f.cancel()

    def volume(self, progress: bool | None = None) -> np.ndarray:
        """Pixel data of the whole series, shape (z, y, x), modality rescale applied (an
        audited bulk read: returned only once recorded).

        The dtype is the stored integer type when slope is 1 and the intercept integral
        (int16 Hounsfield units for most CT), else float64 as pydicom's apply_modality_lut.
        """
        return self._study._access.audited("decrypt-series", lambda: self._volume(progress), instances=len(self))

    def _volume(self, progress: bool | None) -> np.ndarray:
        box = self._study._container()
        index = _index(box)
        entries = [index[k] for k in self._idx]
        found = [e.get("image") for e in entries]
        if any(i is None for i in found):
            raise MedsecError(f"{box.path}: {self._label()} has instances without pixel data")
        imgs = cast("list[Image]", found)
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

    def _native_volume(self, entries: list[IndexEntry], imgs: list[Image], bar: tqdm[NoReturn]) -> np.ndarray:
        box = self._study._container()
        rows, cols = imgs[0]["rows"], imgs[0]["columns"]
        starts = np.cumsum([0] + [i["frames"] for i in imgs])
        out_dt = output_dtype(imgs)
        chunk = box.header.body.chunk_size
        vol = np.empty((int(starts[-1]), rows, cols), dtype=out_dt)

        def one(n: int) -> None:
            k, img = self._idx[n], imgs[n]
            target = vol[starts[n] : starts[n + 1]]
            st = stored_dtype(img)
            need = target.size * st.itemsize
            seg = cast(Segment, entries[n]["pixels"])  # native samples are a pixel segment
            direct = st == out_dt and plaintext_length(seg["length"], chunk) == need
            if direct:
                box.pixel_view(k, target.reshape(-1).data.cast("B"))
                raw = target
            else:  # a view of this thread's scratch buffer, consumed before its next use
                raw = np.frombuffer(box.pixel_view(k), dtype=st, count=target.size).reshape(target.shape)
            to_output(raw, img, target, in_place=direct)
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

    def _pydicom_volume(self, bar: tqdm[NoReturn]) -> np.ndarray:
        arrays = []
        for n, ds in enumerate(self):
            try:
                arrays.append(instance_array(ds))
            except Exception as exc:  # pydicom's decoders raise many types; their texts may quote values
                raise MedsecError(
                    f"{self._study.path}: {self._label()} instance {n}: pixel data cannot be "
                    f"decoded ({type(exc).__name__}); read it with series[{n}]"
                ) from None
            bar.update()
        return np.concatenate(arrays, axis=0)

    @property
    def geometry(self) -> Geometry:
        """Spacing, origin and direction of the series (see ``medsec_nb.study.geometry``)."""
        from .geometry import series_geometry

        return series_geometry(self)

    def view(self, **kwargs: Any) -> Any:
        """A slice viewer (axial, coronal and sagittal planes, window/level presets, ``mask=`` label
        overlay, orientation labels, scale bar, value under the pointer): a Jupyter widget the
        notebook layer provides (``medsec_nb.notebook.widgets.SliceViewer``)."""
        return faces.make("view", self, **kwargs)

    def __repr__(self) -> str:
        return (
            f"<Series {self.modality or '?'} #{self.number if self.number is not None else '?'}: {len(self)} instances>"
        )
