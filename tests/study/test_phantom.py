"""``testdata.synthesize_chest_phantom``: a CT series made in memory whose anatomy is known, read back
through a container in Hounsfield units with its geometry (what the CT analysis notebook measures)."""

from __future__ import annotations

import numpy as np

from medsec_nb import open_study
from medsec_nb.container.writer import encrypt_datasets
from medsec_nb.testdata import PHANTOM_BODY, PHANTOM_HU, PHANTOM_LUNGS, synthesize_chest_phantom


def test_the_phantom_s_tissues_and_lung_volumes_come_back_in_hu_and_mm(tmp_path, identities):
    datasets = synthesize_chest_phantom(n_slices=36, size=96, spacing=4.0, thickness=5.0)
    path = encrypt_datasets(datasets, tmp_path / "chest.msec", [identities.x25519], progress=False)
    with open_study(path, identities.x25519, audit_log=tmp_path / "audit.jsonl") as study:
        (series,) = study.series
        volume, geometry = series.volume(progress=False), series.geometry
    assert volume.shape == geometry.shape == (36, 96, 96)
    assert geometry.spacing == (5.0, 4.0, 4.0)
    centre = volume[18, 48]  # the middle row of the middle slice: air, body, lungs, body, air
    assert abs(float(centre[:3].mean()) - PHANTOM_HU["air"]) < 30
    y, x = np.mgrid[0:96, 0:96] * 4.0 - 95 * 4.0 / 2
    inside = (x / PHANTOM_BODY[0]) ** 2 + (y / PHANTOM_BODY[1]) ** 2 < 0.95  # not the air around the body
    lung = (volume < -400) & inside
    measured = lung.sum() * np.prod(geometry.spacing) / 1000
    expected = sum(4 / 3 * np.pi * a * b * c for _, (a, b, c) in PHANTOM_LUNGS) / 1000
    assert abs(measured - expected) / expected < 0.05, (measured, expected)
    assert abs(float(volume[lung].mean()) - PHANTOM_HU["lung"]) < 5
    assert abs(float(volume[volume > 300].mean()) - PHANTOM_HU["bone"]) < 10
