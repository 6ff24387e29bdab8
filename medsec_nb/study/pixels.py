"""Pixel processing (as pydicom's ``pixels`` package does for files): the stored sample type, the
output type of a series, bit-depth correction and the modality rescale, done in place on
decrypted buffers; the pydicom path for everything that is not raw monochrome samples."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.pixels.processing import apply_modality_lut

from .index import Image


def stored_dtype(img: Image) -> np.dtype:
    """The little-endian integer type of the stored samples."""
    kind = "i" if img["pixel_representation"] == 1 else "u"
    return np.dtype(f"<{kind}{img['bits_allocated'] // 8}")


def output_dtype(imgs: list[Image]) -> np.dtype:
    """Integer when every rescale is integral and the range fits, else float64 (as pydicom)."""
    if all(i["slope"] == 1.0 and i["intercept"] == 0.0 for i in imgs) and len({stored_dtype(i) for i in imgs}) == 1:
        return stored_dtype(imgs[0])
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


def to_output(raw: np.ndarray, img: Image, target: np.ndarray, *, in_place: bool) -> None:
    """Stored samples ``raw`` as output values in ``target``: the bits above ``bits_stored``
    cleared (sign-extended), then the modality rescale. ``in_place``: ``raw`` is ``target``."""
    if img["bits_stored"] < img["bits_allocated"]:
        shift = img["bits_allocated"] - img["bits_stored"]
        np.left_shift(raw, shift, out=raw)
        np.right_shift(raw, shift, out=raw)
    if target.dtype.kind == "f":
        np.multiply(raw, img["slope"], out=target, dtype=np.float64)
        target += img["intercept"]
    elif not in_place:
        np.add(raw, int(img["intercept"]), out=target, dtype=target.dtype, casting="unsafe")
    elif img["intercept"]:
        target += target.dtype.type(int(img["intercept"]))


def instance_array(ds: pydicom.Dataset) -> np.ndarray:
    """A decoded instance as (frames, rows, columns[, samples]) with the modality rescale applied
    (pydicom's decoders; any pixel encoding)."""
    arr = apply_modality_lut(ds.pixel_array, ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    tail = arr.shape[-3:] if int(ds.get("SamplesPerPixel", 1)) > 1 else arr.shape[-2:]
    return arr.reshape((frames, *tuple(tail)))
