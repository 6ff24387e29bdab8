#!/usr/bin/env python
"""Notebook-layer benchmark (issue 4, "Performance").

    python bench/bench_notebook.py [--slices 300] [--rounds 15] [--steps 30]

1. ``%load_secure_study`` + ``ct.series[0].volume()`` run as one IPython cell, against
   ``open_study`` + ``volume()`` called directly (bound: ratio <= 1.05).
2. One ``SliceViewer`` slider step on a 512x512 slice that is not cached (decrypt the
   instance, parse it, modality rescale, window/level, drawing (rows repeated in NumPy for the
   aspect; a matplotlib figure only to scale an image larger than ``MAX_DISPLAY`` down), PNG
   encoding, widget update) against a bare matplotlib ``set_data`` + ``draw`` of the already decrypted slice
   on a figure of the same size (bound: ratio <= 1.5).
3. The same step with a label overlay (``view(mask=...)``) against a bare matplotlib redraw of
   the slice with a translucent label image on top (both ``set_data`` + ``draw``; bound 1.5).
4. A coronal step (the volume decrypted once, when the plane is chosen: its time is printed)
   against a bare ``set_data`` + ``draw`` of the same reslice on a figure of the viewer's size
   (bound 1.5).

Same process, routes alternated from round to round after an untimed warm-up; each ratio is
the median over rounds of the per-round ratio. Both load routes write the same audit records
(to a temporary data folder; periodic audit checkpoints are off, so that one landing in one
route does not count against it). Widget messages go to ipywidgets' default
no-kernel comm (nothing is sent), so (2) measures the kernel side of a step only.
Exits 0 unless something breaks (``--strict``: 1 when a bound fails).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from IPython.core.interactiveshell import InteractiveShell
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pairs import paired_rounds  # bench/pairs.py (the script's folder is on sys.path)

import medsec_nb
from medsec_nb.notebook.planes import reslice
from medsec_nb.notebook.widgets import WINDOW_PRESETS, SliceViewer, instance_pixels
from medsec_nb.testdata import synthesize_series

BOUNDS = {"load": 1.05, "step": 1.5, "overlay": 1.5, "coronal": 1.5}


def bench_load(shell: InteractiveShell, study: Path, key: Path, rounds: int) -> list[tuple[float, float]]:
    """(magic, direct) seconds per round."""
    cell = (
        f"%load_secure_study {study} --identity {key} --purpose HRESCH --as ct\n"
        "vol = ct.series[0].volume(progress=False)"
    )

    def magic() -> None:
        res = shell.run_cell(cell, store_history=False)
        res.raise_error()

    def direct() -> None:
        st = medsec_nb.open_study(study, identity=key, purpose="HRESCH")
        shell.user_ns["vol"] = st.series[0].volume(progress=False)
        shell.user_ns["st"] = st

    def drop() -> None:
        shell.run_cell("%unload_secure_study", store_history=False)
        for name in ("vol", "st"):
            obj = shell.user_ns.pop(name, None)
            if isinstance(obj, medsec_nb.Study):
                obj.close()

    return paired_rounds(magic, direct, rounds, after=lambda _: drop())


def bench_step(study: Path, key: Path, rounds: int, steps: int, overlay: bool = False) -> list[tuple[float, float]]:
    """(viewer step, bare set_data + draw) seconds per step, per round; with ``overlay`` both
    draw a label mask over the slice."""
    width, level = WINDOW_PRESETS["soft tissue"]
    with medsec_nb.open_study(study, identity=key, purpose="HRESCH") as st:
        series = st.series[0]
        n = len(series)
        shape = series.geometry.shape
        mask = None
        if overlay:  # two labels, a disc and a band, on every slice
            yy, xx = np.mgrid[: shape[1], : shape[2]]
            plane = ((yy - shape[1] // 2) ** 2 + (xx - shape[2] // 3) ** 2 < (shape[1] // 6) ** 2).astype(np.uint8)
            plane[shape[1] // 8 : shape[1] // 5] = 2
            mask = np.broadcast_to(plane, shape)
        viewer = SliceViewer(series, index=0, preset="soft tissue", cache_size=8, mask=mask)
        arrays = [instance_pixels(series, i)[0] for i in range(steps)]
        rows, cols = arrays[0].shape
        fig = Figure(figsize=(cols / 100, rows / 100), dpi=100)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        image = ax.imshow(
            arrays[0], cmap="gray", vmin=level - width / 2, vmax=level + width / 2, interpolation="nearest"
        )
        labels = None
        if mask is not None:
            labels = ax.imshow(
                np.ma.masked_equal(mask[0], 0), cmap="tab10", vmin=1, vmax=10, alpha=0.4, interpolation="nearest"
            )
        canvas.draw()
        start = 1

        def step() -> None:
            nonlocal start
            for k in range(steps):  # every step lands on an instance that is not cached
                viewer.slider.value = (start + k) % n
            start += steps

        def bare() -> None:
            for k, a in enumerate(arrays):
                image.set_data(a)
                if labels is not None:
                    labels.set_data(np.ma.masked_equal(mask[k], 0))
                canvas.draw()

        out = paired_rounds(step, bare, rounds, per=steps)
        viewer.close()
    return out


def bench_coronal(study: Path, key: Path, rounds: int, steps: int) -> list[tuple[float, float]]:
    """(viewer coronal step, bare set_data + draw of the same reslice) seconds per step, per round."""
    width, level = WINDOW_PRESETS["soft tissue"]
    with medsec_nb.open_study(study, identity=key, purpose="HRESCH") as st:
        viewer = SliceViewer(st.series[0], index=0, preset="soft tissue")
        t = time.perf_counter()
        viewer.plane_select.value = 1  # decrypts the volume (an audited bulk read) and draws
        print(
            f"coronal plane chosen (volume decrypted, first reslice drawn) in {(time.perf_counter() - t) * 1e3:.0f} ms"
        )
        assert viewer._volume is not None and viewer._canvas is not None
        volume, p, n = viewer._volume, viewer.plane, viewer.slider.max + 1
        cuts = [reslice(volume, p, k) for k in range(steps)]
        rows, cols = viewer._canvas.shown  # the bare figure draws the PNG's size
        fig = Figure(figsize=(cols / 100, rows / 100), dpi=100)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        image = ax.imshow(
            cuts[0],
            cmap="gray",
            vmin=level - width / 2,
            vmax=level + width / 2,
            aspect="auto",
            interpolation="antialiased",
        )
        canvas.draw()
        start = 1

        def step() -> None:
            nonlocal start
            for k in range(steps):
                viewer.slider.value = (start + k) % n
            start += steps

        def bare() -> None:
            for c in cuts:
                image.set_data(c)
                canvas.draw()

        out = paired_rounds(step, bare, rounds, per=steps)
        viewer.close()
    return out


def _report(title: str, pairs: list[tuple[float, float]], bound: float, unit: float, unit_name: str) -> bool:
    ratio = statistics.median(a / b for a, b in pairs)
    a, b = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    ok = ratio <= bound
    print(
        f"{title}: {a * unit:.1f} {unit_name} vs {b * unit:.1f} {unit_name}; median ratio {ratio:.3f} "
        f"(ratio of medians {a / b:.3f}), bound {bound} -> {'PASS' if ok else 'FAIL'}"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=30, help="slider steps per round")
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="medsec-bench-nb-") as tmp:
        tmp = Path(tmp)
        os.environ["MEDSEC_DATA_DIR"] = str(tmp / "data")  # the audit log, not the user's
        os.environ["MEDSEC_AUDIT_CHECKPOINT_EVERY"] = "0"  # no periodic checkpoint landing in one route
        os.environ.pop("MEDSEC_AUDIT_LOG", None)
        t = time.perf_counter()
        synthesize_series(tmp / "src", args.slices, rows=512, columns=512)
        ident = medsec_nb.generate_identity("x25519")
        key, _ = medsec_nb.save_identity(ident, tmp / "analyst")
        study = tmp / "ct.msec"
        medsec_nb.encrypt_study(tmp / "src", study, recipients=[ident.public], progress=False)
        print(
            f"{args.slices} slices of 512x512 built and encrypted in {time.perf_counter() - t:.1f} s; "
            f"{args.rounds} rounds, Python {sys.version.split()[0]}"
        )
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "medsec_nb.notebook.magics")
        ok = _report(
            "magic load + volume() vs open_study + volume()",
            bench_load(shell, study, key, args.rounds),
            BOUNDS["load"],
            1e3,
            "ms",
        )
        ok &= _report(
            "view() slider step vs bare set_data + draw",
            bench_step(study, key, args.rounds, args.steps),
            BOUNDS["step"],
            1e3,
            "ms",
        )
        ok &= _report(
            "view(mask=...) slider step vs bare set_data + draw with a label image",
            bench_step(study, key, args.rounds, args.steps, overlay=True),
            BOUNDS["overlay"],
            1e3,
            "ms",
        )
        ok &= _report(
            "view() coronal step vs bare set_data + draw",
            bench_coronal(study, key, args.rounds, args.steps),
            BOUNDS["coronal"],
            1e3,
            "ms",
        )
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
