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
