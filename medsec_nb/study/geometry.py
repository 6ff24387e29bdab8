"""Voxel geometry of a series, from the encrypted index and the first instance's header.

Axes follow ``Series.volume()``: (z, y, x) = (slice, row, column). Positions and
orientation come from the index (no pixel data decrypted); PixelSpacing, SliceThickness
and SpacingBetweenSlices from the first header.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom

from ..core.errors import MedsecError

if TYPE_CHECKING:
    from .series import Series

#: Relative and absolute tolerance (mm) on slice gaps before a series counts as unevenly spaced.
GAP_RTOL, GAP_ATOL = 0.01, 1e-3


@dataclass(frozen=True)
class Geometry:
    """Where the voxels of ``volume()`` are in patient coordinates (DICOM LPS, mm)."""

    shape: tuple[int, int, int]  #: (z, y, x), as ``volume().shape`` for monochrome images
    spacing: tuple[float, float, float]  #: mm between voxel centres along z, y, x
    origin: tuple[float, float, float]  #: patient (x, y, z) of voxel [0, 0, 0]
    direction: tuple[tuple[float, float, float], ...]  #: row i: patient unit vector of array axis i (z, y, x)
    uneven: bool  #: slice gaps differ (or repeat): ``spacing[0]`` is their median
    z_source: str  #: "positions", "SpacingBetweenSlices", "SliceThickness" or "default"

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping a voxel index (z, y, x, 1) to patient (x, y, z, 1)."""
        a = np.eye(4)
        a[:3, :3] = (np.asarray(self.direction) * np.asarray(self.spacing)[:, None]).T
        a[:3, 3] = self.origin
        return a


def _attr(ds: pydicom.Dataset, keyword: str) -> Any:
    """A top-level attribute, else the one in the shared functional groups' Pixel Measures."""
    if keyword in ds:
        return ds.get(keyword)
    try:
        return ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].get(keyword)
    except (AttributeError, IndexError, KeyError):
        return None


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def _xyz(values: Iterable[Any]) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return x, y, z


def _z_spacing(
    positions: list[list[float] | None], normal: np.ndarray, header: pydicom.Dataset, one_frame_each: bool
) -> tuple[float, bool, str]:
    if one_frame_each and len(positions) > 1 and all(p is not None for p in positions):
        gaps = np.diff(np.asarray(positions, dtype=np.float64) @ normal)
        step = float(np.median(gaps))
        if step > GAP_ATOL:
            uneven = bool(np.any(np.abs(gaps - step) > max(GAP_RTOL * step, GAP_ATOL)))
            return step, uneven, "positions"
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        v = _positive(_attr(header, keyword))
        if v is not None:
            return v, False, keyword
    return 1.0, False, "default"


def series_geometry(series: Series) -> Geometry:
    """Shape, spacing, origin and direction of ``series`` (a :class:`medsec_nb.Series`)."""
    images = [(i, e, img) for i, e in enumerate(series.entries) if (img := e.get("image"))]
    if not images:
        raise MedsecError(f"{series.study.path}: series {series.modality or '?'} #{series.number} holds no images")
    first, _, img = images[0]
    header = series.header(first)
    entries = [e for _, e, _ in images]
    frames = sum(i["frames"] for _, _, i in images)
    orientation = next((e["orientation"] for e in entries if e.get("orientation")), None) or [
        float(v) for v in header.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])
    ]
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row_dir, col_dir)
    positions = [e.get("position") for e in entries]
    dz, uneven, source = _z_spacing(positions, normal, header, frames == len(entries))
    ps = _attr(header, "PixelSpacing") or header.get("ImagerPixelSpacing") or [1.0, 1.0]
    dy, dx = (_positive(v) or 1.0 for v in ps)
    origin = positions[0] or [float(v) for v in header.get("ImagePositionPatient", [0.0, 0.0, 0.0])]
    return Geometry(
        shape=(frames, img["rows"], img["columns"]),
        spacing=(dz, dy, dx),
        origin=_xyz(origin),
        direction=(_xyz(normal), _xyz(col_dir), _xyz(row_dir)),
        uneven=uneven,
        z_source=source,
    )
