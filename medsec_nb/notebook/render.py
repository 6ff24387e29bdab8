"""Rendering for the viewer: window/level, 8-bit frames to PNG bytes at a pixel aspect.

Plain functions without Jupyter: ``apply_window`` (the DICOM linear VOI function), ``auto_window``,
``png_bytes`` and ``Canvas``, which draws frames in memory (NumPy, or a matplotlib Agg figure
without pyplot to scale large images down); nothing is written to disk.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

#: name -> (width, level) in Hounsfield units.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (1500.0, -600.0),
    "bone": (2000.0, 300.0),
    "soft tissue": (400.0, 40.0),
    "brain": (80.0, 40.0),
}
AUTO = "auto"
#: Longest displayed side in screen pixels; larger images are scaled down.
MAX_DISPLAY = 1024
_DPI = 100


def apply_window(array: np.ndarray, width: float, level: float) -> np.ndarray:
    """Map values to 0..255 with the DICOM linear VOI function (PS3.3 C.11.2.1.2.1)."""
    if width < 1:
        raise ValueError(f"window width must be at least 1, not {width}")
    a = np.asarray(array, dtype=np.float32)
    if width == 1:
        return np.where(a > level - 0.5, 255, 0).astype(np.uint8)
    out = a - np.float32(level - 0.5)
    out *= np.float32(1.0 / (width - 1))
    out += np.float32(0.5)
    np.clip(out, 0.0, 1.0, out=out)
    out *= np.float32(255.0)
    out += np.float32(0.5)
    return out.astype(np.uint8)


def auto_window(array: np.ndarray) -> tuple[float, float]:
    """(width, level) spanning the 1st to 99th percentile of ``array`` (sampled on a grid)."""
    step = max(1, int(np.sqrt(array.size / 65536)))
    lo, hi = np.percentile(array[::step, ::step], (1.0, 99.0))
    return max(float(hi - lo), 1.0), float(hi + lo) / 2.0


def png_bytes(pixels: np.ndarray) -> bytes:
    """8-bit greyscale (rows, columns) or RGB (rows, columns, 3) pixels as a PNG (no filter, zlib level 1:
    about twice as fast as Pillow's adaptive filtering, for a slightly larger file)."""
    rows, cols = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    lines = np.zeros((rows, 1 + pixels[0].size), np.uint8)  # each line: filter byte 0, then samples
    lines[:, 1:] = pixels.reshape(rows, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", cols, rows, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(lines.tobytes(), 1))
        + chunk(b"IEND", b"")
    )


def colour_to_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    top = float(frame.max()) or 1.0
    return (np.clip(frame, 0, None) * (255.0 / top)).astype(np.uint8)


class Canvas:
    """Draws 8-bit frames (grey or RGB) of one ``shape`` to PNG bytes, each pixel ``aspect`` times
    as high as wide.

    Up to ``MAX_DISPLAY`` pixels on the long side, rows are repeated nearest-neighbour in NumPy
    (the values as they are, no figure); a larger image is scaled down by a matplotlib Agg figure
    with antialiasing, whose grey colormap may round a level down by one.
    """

    def __init__(self, shape: tuple[int, ...], aspect: float):
        rows, cols = shape[0] * aspect, shape[1]
        scale = min(1.0, MAX_DISPLAY / max(rows, cols))
        self.shape, self.aspect = shape, aspect
        self._rows: np.ndarray | None = None
        self._figure: tuple[FigureCanvasAgg, AxesImage] | None = None
        if scale == 1.0:
            height = max(1, round(rows))
            if height != shape[0]:
                self._rows = np.minimum(((np.arange(height) + 0.5) * (shape[0] / height)).astype(np.intp), shape[0] - 1)
            self.shown = (height, cols)  #: rows and columns of the PNG
            return
        canvas = FigureCanvasAgg(Figure(figsize=(cols * scale / _DPI, rows * scale / _DPI), dpi=_DPI))
        width, height = canvas.get_width_height()
        self.shown = (height, width)
        ax = canvas.figure.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        image = ax.imshow(
            np.zeros(shape, np.uint8), cmap="gray", vmin=0, vmax=255, aspect="auto", interpolation="antialiased"
        )
        self._figure = canvas, image

    def png(self, frame: np.ndarray) -> bytes:
        if self._figure is None:
            return png_bytes(frame if self._rows is None else frame[self._rows])
        canvas, image = self._figure
        image.set_data(frame)
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba())
        return png_bytes(rgba[..., 0] if frame.ndim == 2 else rgba[..., :3])
