"""Slice viewer: axial, coronal and sagittal planes of a series, window/level presets, a label
overlay, orientation labels, a millimetre scale bar and the value under the cursor.

The plain functions work without Jupyter: rendering in ``notebook.render`` (``apply_window``,
``auto_window``, ``png_bytes``, importable from here too), planes in ``notebook.planes``,
overlays in ``notebook.overlay``. ``SliceViewer`` decrypts one instance at a time for the
acquired plane (a small LRU of decrypted instances) and the whole volume, once, for the others;
it draws each frame in memory (``render.Canvas``: nothing written to disk), shows the PNG in an
``ipywidgets.Image`` and reads the pointer with ipyevents. ``close()`` drops the cache, the
volume and the canvas.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import ipywidgets as w
import numpy as np
from ipyevents import Event

from ..core.errors import MedsecError
from ..study import events
from . import planes
from .overlay import colour_table, composite, label_colours, label_mask, labels_present, legend_html
from .render import AUTO, MAX_DISPLAY, WINDOW_PRESETS, Canvas, apply_window, auto_window, colour_to_uint8, png_bytes

__all__ = [
    "AUTO",
    "MAX_DISPLAY",
    "WINDOW_PRESETS",
    "SliceViewer",
    "apply_window",
    "auto_window",
    "close_viewers",
    "instance_pixels",
    "png_bytes",
]

if TYPE_CHECKING:
    from ..study import Series, Study

_VIEWERS: weakref.WeakSet[SliceViewer] = weakref.WeakSet()


def instance_pixels(series: Series, i: int) -> np.ndarray:
    """Instance ``i`` of ``series`` as (frames, rows, columns[, samples]), modality rescale applied."""
    return series.pixels(i)


def _reslicable(series: Series) -> bool:
    """Every image of ``series`` is monochrome and of one size (so its volume can be resliced)."""
    images = [e["image"] for e in series.entries if e.get("image")]
    return len({(i["rows"], i["columns"]) for i in images}) == 1 and all(i["samples"] == 1 for i in images)


def _edge(text: str = "") -> w.Label:
    return w.Label(text, layout=w.Layout(justify_content="center", align_self="center"))


class SliceViewer(w.VBox):
    """Axial, coronal and sagittal planes of a series with window/level presets, a label overlay,
    orientation labels, a millimetre scale bar and the value under the cursor.

    The acquired plane decrypts one instance at a time (a small LRU); the other planes need the
    whole volume, decrypted once (an audited ``Series.volume()``) when one is first chosen."""

    _open = False  # until __init__ completes (ipywidgets calls close() from __del__)

    def __init__(
        self,
        series: Series,
        *,
        index: int | None = None,
        preset: str = AUTO,
        cache_size: int = 8,
        mask: object = None,
        labels: Mapping[int, str] | None = None,
        opacity: float = 0.4,
        plane: str | None = None,
    ):
        """``index``: first position shown (default: the middle one); ``preset``: a WINDOW_PRESETS
        name or "auto"; ``cache_size``: decrypted instances kept in memory; ``mask``: a boolean or
        integer label array of the volume's shape (z, y, x), drawn in colour at ``opacity`` with a
        legend (``labels``: names of label values); ``plane``: "axial", "coronal" or "sagittal"
        (default: the acquired plane)."""
        if preset != AUTO and preset not in WINDOW_PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose {AUTO!r} or one of {', '.join(WINDOW_PRESETS)}")
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity must lie in 0..1, not {opacity}")
        self._frames = [
            (i, f) for i, e in enumerate(series.entries) if e.get("image") for f in range(e["image"]["frames"])
        ]
        if not self._frames:
            raise MedsecError(f"{series.study.path}: series {series.modality or '?'} #{series.number} holds no images")
        self._series = series
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(1, cache_size)
        geometry = series.geometry
        self._shape = geometry.shape
        self._affine = geometry.affine  # voxel (z, y, x, 1) -> patient (x, y, z, 1), for the pointer
        axes = (0, 1, 2) if _reslicable(series) else (0,)
        self._planes = [planes.plane(a, geometry.direction, geometry.spacing) for a in axes]
        names = [
            p.name if [q.name for q in self._planes].count(p.name) == 1 else f"{p.name} {p.axis}" for p in self._planes
        ]
        if plane is not None and plane not in names:
            raise ValueError(f"unknown plane {plane!r} for this series; choose one of {', '.join(names)}")
        self._plane = self._planes[names.index(plane) if plane else 0]
        self._volume: np.ndarray | None = None
        self._shown: np.ndarray | None = None  # the values on screen, for the cursor readout
        self._mask = None if mask is None else label_mask(mask, geometry.shape)
        colours = label_colours(labels_present(self._mask)) if self._mask is not None else {}
        self._table = colour_table(colours)
        self._opacity = opacity
        self._canvas: Canvas | None = None
        self._quiet = False
        self._open = True
        last = self._shape[self._plane.axis] - 1
        self.slider = w.IntSlider(
            value=last // 2 if index is None else min(max(index, 0), last),
            min=0,
            max=last,
            description="slice",
            continuous_update=True,
            layout=w.Layout(min_width="300px"),
        )
        self.window = w.Dropdown(options=[AUTO, *WINDOW_PRESETS], value=preset, description="window")
        self.plane_select = w.Dropdown(options=list(zip(names, axes)), value=self._plane.axis, description="plane")
        self.image = w.Image(format="png")
        self.edges = {side: _edge() for side in ("top", "bottom", "left", "right")}
        self.scale = w.HTML()
        self.legend = w.HTML(legend_html(colours, labels) if self._mask is not None else "")
        self.status = w.Label()
        self.cursor = w.Label()
        self.events = Event(
            source=self.image,
            watched_events=["mousemove", "mouseleave"],
            xy_coordinate_system="data",
            throttle_or_debounce="throttle",
            wait=40,
        )
        self.events.on_dom_event(self._on_mouse)
        self._boxes = [
            w.HBox([self.slider, self.window, self.plane_select], layout=w.Layout(flex_flow="row wrap")),
            w.HBox([self.edges["left"], self.image, self.edges["right"]]),
            w.HBox([self.status, self.cursor]),
        ]
        middle = w.VBox(
            [self.edges["top"], self._boxes[1], self.edges["bottom"], self.scale], layout=w.Layout(width="max-content")
        )
        self._boxes.append(middle)
        super().__init__([self._boxes[0], middle, self.legend, self._boxes[2]])
        self.slider.observe(self._redraw, "value")
        self.window.observe(self._redraw, "value")
        self.plane_select.observe(self._choose_plane, "value")
        _VIEWERS.add(self)
        self._show_plane()
        if self._plane.axis != 0:
            self._load_volume()
        self._redraw()

    @property
    def closed(self) -> bool:
        return not self._open

    @property
    def plane(self) -> planes.Plane:
        """The plane shown."""
        return self._plane

    @contextmanager
    def _held(self) -> Iterator[None]:
        """Changes made inside do not redraw."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def _show_plane(self) -> None:
        for side, text in planes.orientation_labels(self._plane).items():
            self.edges[side].value = text

    def _load_volume(self) -> None:
        if self._volume is None:
            self._volume = self._series.volume(progress=False)
            self._cache.clear()  # the volume holds every instance now

    def _choose_plane(self, change: object = None) -> None:
        if self.closed or self._quiet:
            return
        chosen = self._planes[self.plane_select.value]
        try:
            if chosen.axis != 0:
                self._load_volume()
        except MedsecError as exc:  # e.g. the volume cannot be decoded: stay on the plane shown
            with self._held():
                self.plane_select.value = self._plane.axis
            self.status.value = f"{type(exc).__name__}: {exc}"
            return
        self._plane = chosen
        with self._held():  # one redraw, below, not one per change
            last = self._shape[chosen.axis] - 1
            self.slider.max = last
            self.slider.value = last // 2
        self._show_plane()
        self._redraw()

    def _frame(self, pos: int) -> np.ndarray:
        if self._volume is not None:
            return planes.reslice(self._volume, self._plane, pos)
        inst, frame = self._frames[pos]
        pixels = self._cache.get(inst)
        if pixels is None:
            pixels = instance_pixels(self._series, inst)
            self._cache[inst] = pixels
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(inst)
        return pixels[frame]

    def _redraw(self, change: object = None) -> None:
        if self.closed or self._quiet:
            return
        pos = self.slider.value
        try:
            self._series.study.require_open()  # raises once the study is closed, even on a cache hit
            frame = self._frame(pos)
        except MedsecError as exc:  # e.g. the study was closed: drop what we hold
            self._cache.clear()
            self._volume = self._shown = None
            self.status.value = f"{type(exc).__name__}: {exc}"
            return
        text = f"slice {pos + 1}/{self._shape[self._plane.axis]}"
        if frame.ndim == 2:
            width, level = WINDOW_PRESETS.get(self.window.value) or auto_window(frame)
            shown = apply_window(frame, width, level)
            text += f" \u00b7 W {width:g} L {level:g}"
        else:
            shown = colour_to_uint8(frame)
        if self._mask is not None:
            shown = composite(shown, planes.reslice(self._mask, self._plane, pos), self._table, self._opacity)
        aspect = planes.aspect(self._plane)
        if self._canvas is None or self._canvas.shape != shown.shape or self._canvas.aspect != aspect:
            self._canvas = Canvas(shown.shape, aspect)
            self._show_scale(self._canvas)
        self._shown = frame
        self.image.value = self._canvas.png(shown)
        self.status.value = text

    def _show_scale(self, canvas: Canvas) -> None:
        cols, col_mm = canvas.shape[1], self._plane.spacing[1]
        mm = planes.scale_bar_mm(cols * col_mm)
        px = round(mm / col_mm * canvas.shown[1] / cols)
        self.scale.value = (
            f'<div style="width:{px}px;border-bottom:3px solid currentColor;text-align:center">{mm:g} mm</div>'
        )

    def _on_mouse(self, event: dict[str, object]) -> None:
        if self.closed or self._shown is None or self._canvas is None:
            return
        x, y = event.get("dataX"), event.get("dataY")
        at = None
        if event.get("type") == "mousemove" and isinstance(x, (int, float)) and isinstance(y, (int, float)):
            at = planes.pixel_at(self._shown.shape[:2], self._canvas.shown, x, y)
        if at is None:
            self.cursor.value = ""
            return
        value = self._shown[at]
        unit = " HU" if self._series.modality == "CT" and np.ndim(value) == 0 else ""
        shown = f"{float(value):g}{unit}" if np.ndim(value) == 0 else str(np.asarray(value).tolist())
        voxel = planes.voxel_at(self._plane, self._shape, self.slider.value, *at)
        x, y, z = (self._affine @ (*voxel, 1.0))[:3]
        self.cursor.value = f"\u00b7 {shown} at row {at[0]}, column {at[1]} \u00b7 ({x:.1f}, {y:.1f}, {z:.1f}) mm"

    def close(self) -> None:
        """Drop the decrypted cache, volume and figure, blank the image and close the widgets."""
        if self.closed:
            return
        self._open = False
        self._cache.clear()
        self._canvas = None  # the only reference to a figure and the pixels it holds
        self._volume = self._shown = self._mask = None
        self.image.value = b""
        self.status.value = "closed"
        self.cursor.value = ""
        _VIEWERS.discard(self)
        self.events.close()
        widgets = [
            self.slider,
            self.window,
            self.plane_select,
            self.image,
            self.scale,
            self.legend,
            self.status,
            self.cursor,
        ]
        for child in [*widgets, *self.edges.values(), *self._boxes]:
            child.close()
        super().close()

    def __repr__(self) -> str:
        s = self._series
        if self.closed:
            where = "closed"
        else:
            n = self._shape[self._plane.axis]
            plane = "" if self._plane.axis == 0 else f"{self._plane.name} "
            where = f"{plane}slice {self.slider.value + 1}/{n}, {self.window.value}"
        number = "?" if s.number is None else f"{s.number:g}"
        return f"SliceViewer({s.modality or '?'} #{number}, {where})"


def close_viewers(study: Study) -> int:
    """Close every open viewer of ``study``; return how many were closed."""
    mine = [v for v in list(_VIEWERS) if v._series.study is study]
    for v in mine:
        v.close()
    return len(mine)


events.subscribe(closed=close_viewers)  # a closed study's viewers drop what they hold
