"""Label overlays: a boolean or integer label volume drawn as translucent colours over a slice.

``label_mask`` checks a mask against the series' volume shape, ``label_colours`` gives each
label a colour, ``composite`` blends them over an 8-bit slice and ``legend_html`` lists them.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np

#: Label 1, 2, ... take these colours in turn (matplotlib's tab10, as 8-bit RGB).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
#: Largest label value accepted (the colour table has one row per value).
MAX_LABEL = 65535


def label_mask(mask: object, shape: tuple[int, int, int]) -> np.ndarray:
    """``mask`` as a boolean or unsigned label volume of ``shape`` (z, y, x); ValueError otherwise."""
    a = np.asarray(mask)
    if a.shape != tuple(shape):
        raise ValueError(f"mask shape {a.shape} does not match the series volume {tuple(shape)} (z, y, x)")
    if a.dtype == np.bool_:
        return a
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"mask must be boolean or integer labels, not {a.dtype}")
    if a.size and (int(a.min()) < 0 or int(a.max()) > MAX_LABEL):
        raise ValueError(f"mask labels must lie in 0..{MAX_LABEL}")
    return a


def labels_present(mask: np.ndarray) -> list[int]:
    """The non-zero label values in ``mask`` (a boolean mask has label 1)."""
    if mask.dtype == np.bool_:
        return [1] if mask.any() else []
    counts = np.zeros(int(mask.max(initial=0)) + 1, np.int64)
    for plane in mask.reshape(-1, *mask.shape[-2:]):  # slice by slice: no volume-sized copy
        counts += np.bincount(plane.reshape(-1), minlength=len(counts))
    return [int(v) for v in np.flatnonzero(counts) if v]


def label_colours(labels: list[int]) -> dict[int, tuple[int, int, int]]:
    """Label value -> RGB, from ``PALETTE`` by value (label k always gets the same colour)."""
    return {k: PALETTE[(k - 1) % len(PALETTE)] for k in labels}


def colour_table(colours: Mapping[int, tuple[int, int, int]]) -> np.ndarray:
    """A (max label + 1, 3) uint8 lookup table; row 0 (background) and unlisted labels are black."""
    table = np.zeros((max(colours, default=0) + 1, 3), np.uint8)
    for k, rgb in colours.items():
        table[k] = rgb
    return table


def composite(shown: np.ndarray, labels: np.ndarray, table: np.ndarray, opacity: float) -> np.ndarray:
    """RGB (rows, columns, 3) of the 8-bit grey or RGB ``shown`` with each labelled pixel blended
    towards its colour: ``round((1 - opacity) * pixel + opacity * colour)``; label 0 left as is."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in 0..1, not {opacity}")
    rgb = np.repeat(shown[..., None], 3, axis=2) if shown.ndim == 2 else shown.copy()
    where = labels.astype(bool, copy=False)
    if where.any():
        values = labels[where].astype(np.intp) if labels.dtype != np.bool_ else np.ones(int(where.sum()), np.intp)
        colour = table[np.minimum(values, len(table) - 1)].astype(np.float32)
        blended = rgb[where].astype(np.float32) * np.float32(1.0 - opacity) + colour * np.float32(opacity)
        rgb[where] = (blended + np.float32(0.5)).astype(np.uint8)
    return rgb


def legend_html(colours: Mapping[int, tuple[int, int, int]], names: Mapping[int, str] | None = None) -> str:
    """One swatch per label with its value and name (HTML-escaped)."""
    items = []
    for k, (r, g, b) in sorted(colours.items()):
        name = (names or {}).get(k)
        text = html.escape(f"{k} {name}" if name else str(k))
        swatch = f'<span style="display:inline-block;width:1em;height:1em;background:#{r:02x}{g:02x}{b:02x}"></span>'
        items.append(f'<span style="margin-right:1em">{swatch} {text}</span>')
    return "".join(items)
