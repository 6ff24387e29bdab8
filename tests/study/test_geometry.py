"""``Series.geometry``: spacing, origin and direction from the index and the first header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import medsec_nb
from medsec_nb.study.geometry import Geometry
from medsec_nb.testdata import synthesize_series


def _encrypt(folder: Path, dest: Path, ident) -> Path:
    medsec_nb.encrypt_study(folder, dest, recipients=[ident.public], progress=False)
    return dest


def _geometry(folder: Path, tmp_path: Path, ident) -> Geometry:
    with medsec_nb.open_study(_encrypt(folder, tmp_path / "g.msec", ident), identity=ident) as st:
        return st.series[0].geometry


def test_axial_series(signed_container, series_source, identities):
    with medsec_nb.open_study(signed_container, identity=identities.x25519) as st:
        g = st.series[0].geometry
        vol = st.series[0].volume(progress=False)
    src = sorted((pydicom.dcmread(f) for f in series_source.files), key=lambda d: float(d.ImagePositionPatient[2]))
    assert g.shape == vol.shape == (6, 64, 80)
    assert g.spacing == pytest.approx((1.25, *map(float, src[0].PixelSpacing)))
    assert g.origin == pytest.approx(tuple(map(float, src[0].ImagePositionPatient)))
    assert np.allclose(g.direction, [[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    assert not g.uneven and g.z_source == "positions"
    for k, ds in enumerate(src):  # the affine puts every slice's first voxel at its position
        assert g.affine @ np.array([k, 0, 0, 1]) == pytest.approx([*map(float, ds.ImagePositionPatient), 1])
    dy, dx = map(float, src[0].PixelSpacing)
    corner = np.asarray(g.affine @ [0, 63, 79, 1])[:3] - np.asarray(g.origin)
    assert corner == pytest.approx([79 * dx, 63 * dy, 0])


def test_oblique_series_spacing_is_measured_along_the_normal(tmp_path, identities):
    files = synthesize_series(tmp_path / "src", n_slices=5, rows=16, columns=16, thickness=2.0)
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    row, col = np.array([1.0, 0, 0]), np.array([0, c, s])
    normal = np.cross(row, col)
    for f in files:
        ds = pydicom.dcmread(f)
        k = ds.InstanceNumber - 1
        ds.ImageOrientationPatient = [*row, *col]
        ds.ImagePositionPatient = [float(v) for v in np.array([10.0, -20.0, 5.0]) + 3.0 * k * normal]
        ds.save_as(f, enforce_file_format=True)
    g = _geometry(tmp_path / "src", tmp_path, identities.x25519)
    assert g.spacing[0] == pytest.approx(3.0) and g.z_source == "positions" and not g.uneven
    assert np.allclose(g.direction, [normal, col, row])
    assert g.origin == pytest.approx((10.0, -20.0, 5.0))


def test_uneven_gaps_are_flagged(tmp_path, identities):
    files = synthesize_series(tmp_path / "src", n_slices=6, rows=8, columns=8)
    middle = next(f for f in files if pydicom.dcmread(f).InstanceNumber == 3)
    middle.unlink()
    g = _geometry(tmp_path / "src", tmp_path, identities.x25519)
    assert g.uneven and g.shape[0] == 5 and g.spacing[0] == pytest.approx(1.25)


@pytest.mark.parametrize(
    "drop, expected",
    [
        ((), (5.0, "SpacingBetweenSlices")),
        (("SpacingBetweenSlices",), (2.5, "SliceThickness")),
        (("SpacingBetweenSlices", "SliceThickness"), (1.0, "default")),
    ],
)
def test_single_slice_falls_back_to_header_spacing(tmp_path, identities, drop, expected):
    [f] = synthesize_series(tmp_path / "src", n_slices=1, rows=8, columns=8, thickness=2.5)
    ds = pydicom.dcmread(f)  # CT_small's SpacingBetweenSlices is 5
    for kw in drop:
        delattr(ds, kw)
    ds.save_as(f, enforce_file_format=True)
    g = _geometry(tmp_path / "src", tmp_path, identities.x25519)
    assert (g.spacing[0], g.z_source) == expected and not g.uneven


def test_multi_frame_uses_spacing_between_slices(tmp_path, identities):
    path = get_testdata_file("emri_small.dcm")
    if path is None:  # pragma: no cover - only without pydicom-data
        pytest.skip("emri_small.dcm needs the pydicom-data package")
    (tmp_path / "src").mkdir()
    pydicom.dcmread(path).save_as(tmp_path / "src" / "mf.dcm")
    g = _geometry(tmp_path / "src", tmp_path, identities.x25519)
    assert g.shape == (10, 64, 64)
    # emri_small has SpacingBetweenSlices 1.2, no pixel spacing and no position
    assert g.spacing == (1.2, 1.0, 1.0) and g.z_source == "SpacingBetweenSlices" and g.origin == (0.0, 0.0, 0.0)


def test_series_without_images_is_a_clear_error(tmp_path, identities):
    (tmp_path / "src").mkdir()
    pydicom.dcmread(get_testdata_file("rtplan.dcm")).save_as(tmp_path / "src" / "plan.dcm")
    with (
        medsec_nb.open_study(
            _encrypt(tmp_path / "src", tmp_path / "p.msec", identities.x25519), identity=identities.x25519
        ) as st,
        pytest.raises(medsec_nb.MedsecError, match="holds no images"),
    ):
        st.series[0].geometry
