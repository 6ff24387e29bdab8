"""Synthetic multi-slice studies built from pydicom's bundled (fake-patient) test files.

No real patient data: the template is pydicom's ``CT_small.dcm`` unless another file is given.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def synthesize_datasets(
    n_slices: int = 20,
    template: str | os.PathLike | None = None,
    rows: int | None = None,
    columns: int | None = None,
    *,
    thickness: float = 1.25,
    reverse_instance_numbers: bool = False,
) -> list[pydicom.Dataset]:
    """``n_slices`` instances of one new study/series, in memory (nothing is written to disk).

    Pixel data is the template's, resized to ``rows`` x ``columns`` and shifted per slice;
    positions step by ``thickness`` mm along z. With ``reverse_instance_numbers`` the
    instance numbers run against the positions (to exercise sorting). Encrypt the result
    with ``medsec_nb.container.writer.encrypt_datasets``.
    """
    src = pydicom.dcmread(template or get_testdata_file("CT_small.dcm"))
    base = src.pixel_array
    rows, columns = rows or base.shape[0], columns or base.shape[1]
    reps = (-(-rows // base.shape[0]), -(-columns // base.shape[1]))
    base = np.repeat(np.repeat(base, reps[0], axis=0), reps[1], axis=1)[:rows, :columns]
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    z0 = float(src.ImagePositionPatient[2]) if "ImagePositionPatient" in src else 0.0
    sy, sx = (float(v) for v in src.get("PixelSpacing", [1.0, 1.0]))
    spacing = [round(sy * src.Rows / rows, 6), round(sx * src.Columns / columns, 6)]  # same field of view
    out = []
    for k in range(n_slices):
        ds = copy.deepcopy(src)  # each instance its own elements (they are kept, not saved one by one)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Rows, ds.Columns = rows, columns
        ds.PixelSpacing = spacing
        ds.InstanceNumber = n_slices - k if reverse_instance_numbers else k + 1
        pos = list(ds.get("ImagePositionPatient", [0.0, 0.0, 0.0]))
        ds.ImagePositionPatient = [pos[0], pos[1], round(z0 + k * thickness, 4)]
        ds.SliceLocation = round(z0 + k * thickness, 4)
        ds.SliceThickness = thickness
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelData = np.roll(base, k, axis=1).astype(base.dtype).tobytes()
        out.append(ds)
    return out


#: The chest phantom's anatomy, in mm on DICOM's patient axes (x towards the patient's left, y towards
#: the back, z from the middle of the series): centre and semi-axes of each lung (an ellipsoid), the
#: body's semi-axes (an elliptical cylinder), the spine's centre and radius (a cylinder along z), and
#: the mean HU of each tissue.
PHANTOM_LUNGS = (((-75.0, -10.0, 0.0), (58.0, 78.0, 82.0)), ((78.0, -10.0, -4.0), (52.0, 72.0, 76.0)))  # right, left
PHANTOM_BODY = (160.0, 115.0)
PHANTOM_SPINE = ((0.0, 80.0), 15.0)
PHANTOM_HU = {"air": -1000.0, "soft tissue": 40.0, "lung": -850.0, "bone": 700.0}


def synthesize_chest_phantom(
    n_slices: int = 40, size: int = 192, *, spacing: float = 2.0, thickness: float = 5.0, seed: int = 0
) -> list[pydicom.Dataset]:
    """A chest-like CT series in memory (``CT_small.dcm``'s header, new UIDs) whose anatomy is known:
    air around an elliptical body of soft tissue, two ellipsoidal lungs and a cylindrical spine
    (``PHANTOM_*``), each tissue its mean HU plus Gaussian noise (``seed``). ``size`` x ``size``
    pixels of ``spacing`` mm, ``n_slices`` of ``thickness`` mm; the lungs lie wholly inside when
    ``n_slices * thickness`` exceeds 160 mm. Nothing is written to disk."""
    datasets = synthesize_datasets(n_slices, rows=size, columns=size, thickness=thickness)
    rng = np.random.default_rng(seed)
    half = (size - 1) * spacing / 2
    y, x = np.mgrid[0:size, 0:size] * spacing - half
    body = (x / PHANTOM_BODY[0]) ** 2 + (y / PHANTOM_BODY[1]) ** 2 <= 1
    (sx, sy), radius = PHANTOM_SPINE
    spine = (x - sx) ** 2 + (y - sy) ** 2 <= radius**2
    for k, ds in enumerate(datasets):
        z = (k - (n_slices - 1) / 2) * thickness
        lungs = np.zeros_like(body)
        for (cx, cy, cz), (a, b, c) in PHANTOM_LUNGS:
            lungs |= ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / c) ** 2 <= 1
        hu = np.where(body, PHANTOM_HU["soft tissue"], PHANTOM_HU["air"]) + rng.normal(0, 10, body.shape)
        hu[lungs] = PHANTOM_HU["lung"] + rng.normal(0, 30, int(lungs.sum()))
        hu[spine] = PHANTOM_HU["bone"] + rng.normal(0, 50, int(spine.sum()))
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        stored = np.clip(np.rint((np.maximum(hu, -1024.0) - intercept) / slope), -32768, 32767).astype(np.int16)
        ds.PixelRepresentation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 16, 15
        ds.PixelSpacing = [spacing, spacing]
        ds.ImagePositionPatient = [-half, -half, round(z, 4)]
        ds.SliceLocation = round(z, 4)
        ds.PixelData = stored.tobytes()
    return datasets


def synthesize_series(
    out_dir: str | os.PathLike,
    n_slices: int = 20,
    template: str | os.PathLike | None = None,
    rows: int | None = None,
    columns: int | None = None,
    *,
    thickness: float = 1.25,
    reverse_instance_numbers: bool = False,
) -> list[Path]:
    """Write ``synthesize_datasets(...)`` to ``out_dir`` as plaintext files; return their paths.

    Files are named in an order unrelated to instance numbers or positions. For tests and
    benchmarks that need a source folder; notebooks use ``synthesize_datasets`` instead.
    """
    datasets = synthesize_datasets(
        n_slices, template, rows, columns, thickness=thickness, reverse_instance_numbers=reverse_instance_numbers
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(n_slices).permutation(n_slices)
    paths = []
    for k, ds in enumerate(datasets):
        path = out / f"IM{int(order[k]):05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
