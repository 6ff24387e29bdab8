"""Planes through a series volume: reslicing, pixel spacing, orientation labels, scale bars.

A plane is named by the array axis it cuts across: axis 0 shows the acquired slices
``volume[k]`` as stored, axes 1 and 2 are reslices (``volume[:, k, :]``, ``volume[:, :, k]``).
``plane_name`` says which anatomical plane each is from the series' direction cosines
(``Geometry.direction``, DICOM LPS), so a sagittal acquisition's axis 0 is "sagittal", and
``orientation_labels`` which patient directions lie at the screen's edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Vector = tuple[float, float, float]
#: Patient directions (DICOM LPS) of +x, +y, +z and their opposites.
_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))
#: A direction cosine smaller than this adds no letter to an oblique label.
OBLIQUE_MIN = 0.25
_NICE = (1.0, 2.0, 5.0)


@dataclass(frozen=True)
class Plane:
    """How array axis ``axis`` of a volume is shown."""

    axis: int  #: the array axis the plane cuts across (0, 1 or 2)
    name: str  #: "axial", "coronal" or "sagittal"
    rows: int  #: the array axis shown down the screen (the other one runs across)
    flip: bool  #: rows shown in reverse (resliced planes only)
    down: Vector  #: patient direction of increasing screen rows
    right: Vector  #: patient direction of increasing screen columns
    spacing: tuple[float, float]  #: mm between shown rows, columns


def plane_name(normal: Vector) -> str:
    """ "sagittal", "coronal" or "axial": the patient axis (x, y or z) ``normal`` is closest to."""
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def plane(axis: int, direction: tuple[Vector, ...], spacing: Vector) -> Plane:
    """The plane across array ``axis`` of a volume with ``direction`` (rows: patient unit vectors of
    axes z, y, x) and ``spacing`` (mm along z, y, x).

    The acquired plane (axis 0) is shown as stored. A resliced plane puts the in-plane axis
    closest to head-feet (closest to front-back for an axial plane) down the screen, the head
    (the front) at the top."""
    if axis not in (0, 1, 2):
        raise ValueError(f"a plane cuts across axis 0, 1 or 2, not {axis}")
    name = plane_name(direction[axis])
    if axis == 0:
        return Plane(0, name, 1, False, direction[1], direction[2], (spacing[1], spacing[2]))
    want = np.array((0.0, 1.0, 0.0) if name == "axial" else (0.0, 0.0, -1.0))  # down: posterior, else inferior
    in_plane = [a for a in (0, 1, 2) if a != axis]
    rows = max(in_plane, key=lambda a: abs(float(np.dot(direction[a], want))))
    cols = in_plane[0] if rows == in_plane[1] else in_plane[1]
    flip = float(np.dot(direction[rows], want)) < 0
    d = direction[rows]
    down = (-d[0], -d[1], -d[2]) if flip else d
    return Plane(axis, name, rows, flip, down, direction[cols], (spacing[rows], spacing[cols]))


def reslice(volume: np.ndarray, p: Plane, k: int) -> np.ndarray:
    """Position ``k`` of plane ``p`` as a (rows, columns) view of ``volume`` (z, y, x); no copy."""
    at: list[slice | int] = [slice(None)] * 3
    at[p.axis] = k
    cut = volume[tuple(at)]
    if p.rows > min(a for a in (0, 1, 2) if a != p.axis):
        cut = cut.T
    return cut[::-1] if p.flip else cut


def voxel_at(p: Plane, shape: tuple[int, int, int], k: int, row: int, column: int) -> tuple[int, int, int]:
    """The (z, y, x) index in a volume of ``shape`` shown at (``row``, ``column``) of position ``k``
    of plane ``p`` (``reslice`` undone)."""
    index = [0, 0, 0]
    index[p.axis] = k
    index[p.rows] = shape[p.rows] - 1 - row if p.flip else row
    index[3 - p.axis - p.rows] = column
    return index[0], index[1], index[2]


def aspect(p: Plane) -> float:
    """Height of a shown pixel over its width (matplotlib's ``aspect``)."""
    return p.spacing[0] / p.spacing[1]


def direction_letters(v: Vector) -> str:
    """Patient direction letters of unit vector ``v`` (LPS), strongest first, e.g. "L", "AS";
    components under ``OBLIQUE_MIN`` are left out."""
    order = sorted(range(3), key=lambda i: -abs(v[i]))
    return "".join(_LETTERS[i][0 if v[i] > 0 else 1] for i in order if abs(v[i]) >= OBLIQUE_MIN)


def orientation_labels(p: Plane) -> dict[str, str]:
    """The patient directions at the ``top``, ``bottom``, ``left`` and ``right`` edges of plane ``p``."""
    down, right = p.down, p.right
    return {
        "top": direction_letters((-down[0], -down[1], -down[2])),
        "bottom": direction_letters(down),
        "left": direction_letters((-right[0], -right[1], -right[2])),
        "right": direction_letters(right),
    }


def scale_bar_mm(width_mm: float, fraction: float = 0.25) -> float:
    """The longest 1, 2 or 5 x 10^n mm that fits in ``fraction`` of ``width_mm``."""
    limit = width_mm * fraction
    if limit <= 0:
        raise ValueError(f"a scale bar needs a positive width, not {width_mm} mm")
    power = 10.0 ** np.floor(np.log10(limit))
    return max(n * power for n in _NICE if n * power <= limit * (1 + 1e-9))


def pixel_at(shape: tuple[int, int], shown: tuple[int, int], x: float, y: float) -> tuple[int, int] | None:
    """The (row, column) of a (rows, columns) ``shape`` array under point (``x``, ``y``) of its
    rendering of ``shown`` (rows, columns) pixels; None outside."""
    if not (0 <= x < shown[1] and 0 <= y < shown[0]):
        return None
    return int(y * shape[0] / shown[0]), int(x * shape[1] / shown[1])
