"""The viewer's label overlay, planes, orientation labels and scale bar.

Plain functions are tested on arrays and known geometries; the widget on a generated CT series
encrypted in memory (``synthesize_datasets`` + ``encrypt_datasets``: no plaintext file), its
rendered PNG compared pixel for pixel with the expected composite (square pixels render 1:1).
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

import medsec_nb
from medsec_nb.container.writer import encrypt_datasets
from medsec_nb.notebook.overlay import (
    PALETTE,
    colour_table,
    composite,
    label_colours,
    label_mask,
    labels_present,
    legend_html,
)
from medsec_nb.notebook.planes import (
    aspect,
    direction_letters,
    orientation_labels,
    pixel_at,
    plane,
    plane_name,
    reslice,
    scale_bar_mm,
    voxel_at,
)
from medsec_nb.notebook.render import MAX_DISPLAY, Canvas
from medsec_nb.notebook.widgets import WINDOW_PRESETS, SliceViewer, apply_window
from medsec_nb.testdata import synthesize_datasets

pytestmark = pytest.mark.usefixtures("widget_comm")


@pytest.fixture(scope="module")
def ct(tmp_path_factory, identities):
    """Five 128 x 128 CT slices (square pixels), encrypted from memory; the plain datasets by z."""
    datasets = synthesize_datasets(5)
    dest = encrypt_datasets(
        datasets, tmp_path_factory.mktemp("viewer") / "ct.msec", [identities.x25519.public], progress=False
    )
    return dest, sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))


@pytest.fixture
def study(ct, identities):
    with medsec_nb.open_study(ct[0], identity=identities.x25519) as st:
        yield st


def _hu(ds) -> np.ndarray:
    return apply_modality_lut(ds.pixel_array, ds)


def _png(value) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(bytes(value))))


# -- overlay functions ------------------------------------------------------------------------------


def test_composite_blends_labelled_pixels_towards_their_colour():
    grey = np.array([[0, 100], [200, 255]], np.uint8)
    labels = np.array([[0, 1], [2, 0]], np.uint8)
    table = colour_table({1: (255, 0, 0), 2: (0, 0, 255)})
    out = composite(grey, labels, table, 0.5)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [0, 0, 0] and out[1, 1].tolist() == [255, 255, 255]  # label 0: grey as is
    assert out[0, 1].tolist() == [178, 50, 50]  # round(0.5 * 100 + 0.5 * 255) = 178 (177.5 up)
    assert out[1, 0].tolist() == [100, 100, 228]
    assert np.array_equal(composite(grey, labels, table, 0.0), np.repeat(grey[..., None], 3, axis=2))
    assert composite(grey, labels.astype(bool), table, 1.0)[1, 0].tolist() == [255, 0, 0]  # True is label 1
    with pytest.raises(ValueError, match="opacity"):
        composite(grey, labels, table, 1.5)


def test_label_mask_checks_shape_type_and_range():
    shape = (2, 3, 4)
    assert label_mask(np.zeros(shape, bool), shape).dtype == np.bool_
    assert label_mask(np.zeros(shape, np.int32).tolist(), shape).shape == shape  # any array-like
    with pytest.raises(ValueError, match=r"mask shape \(3, 3, 4\) does not match the series volume \(2, 3, 4\)"):
        label_mask(np.zeros((3, 3, 4), bool), shape)
    with pytest.raises(ValueError, match="boolean or integer"):
        label_mask(np.zeros(shape, np.float32), shape)
    with pytest.raises(ValueError, match="0..65535"):
        label_mask(np.full(shape, -1, np.int16), shape)


def test_labels_present_colours_and_legend():
    mask = np.zeros((2, 3, 4), np.uint16)
    mask[0, 0, 0], mask[1, 2, 3] = 3, 12
    assert labels_present(mask) == [3, 12] and labels_present(mask > 0) == [1] and labels_present(mask == 99) == []
    colours = label_colours([3, 12])
    assert colours == {3: PALETTE[2], 12: PALETTE[1]}  # by value: label k keeps its colour
    legend = legend_html(colours, {3: "lung <left>"})
    r, g, b = PALETTE[2]
    assert f"#{r:02x}{g:02x}{b:02x}" in legend and "3 lung &lt;left&gt;" in legend and ">12<" not in legend
    assert " 12</span>" in legend


# -- plane functions --------------------------------------------------------------------------------

#: A coronal acquisition: rows run to the patient's left, columns to the feet, slices to the back.
CORONAL_IOP = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
CORONAL_DIRECTION = ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0), (1.0, 0.0, 0.0))  # normal, column, row (z, y, x)
AXIAL_DIRECTION = ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def test_planes_of_an_axial_acquisition_put_the_head_up_and_the_patients_right_on_the_left():
    spacing = (2.5, 0.5, 0.7)
    axial, coronal, sagittal = (plane(a, AXIAL_DIRECTION, spacing) for a in (0, 1, 2))
    assert [p.name for p in (axial, coronal, sagittal)] == ["axial", "coronal", "sagittal"]
    assert orientation_labels(axial) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert orientation_labels(coronal) == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    assert orientation_labels(sagittal) == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    assert (axial.spacing, coronal.spacing, sagittal.spacing) == ((0.5, 0.7), (2.5, 0.7), (2.5, 0.5))
    assert aspect(coronal) == pytest.approx(2.5 / 0.7) and aspect(axial) == pytest.approx(0.5 / 0.7)
    vol = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    assert np.array_equal(reslice(vol, axial, 1), vol[1])
    assert np.array_equal(reslice(vol, coronal, 2), vol[::-1, 2, :])  # head (last slice) at the top
    assert np.array_equal(reslice(vol, sagittal, 4), vol[::-1, :, 4])
    assert np.shares_memory(reslice(vol, sagittal, 4), vol)  # a view, not a copy
    with pytest.raises(ValueError, match="axis 0, 1 or 2"):
        plane(3, AXIAL_DIRECTION, spacing)


def test_planes_of_a_coronal_acquisition_are_named_and_turned_from_its_orientation():
    spacing = (2.0, 0.8, 0.6)  # z (slices, along y), y (rows, to the feet), x (columns)
    acquired, axial, sagittal = (plane(a, CORONAL_DIRECTION, spacing) for a in (0, 1, 2))
    assert (acquired.name, axial.name, sagittal.name) == ("coronal", "axial", "sagittal")
    assert orientation_labels(acquired) == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    assert orientation_labels(axial) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert orientation_labels(sagittal) == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    assert sagittal.spacing == (0.8, 2.0) and axial.spacing == (2.0, 0.6)
    vol = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    assert np.array_equal(reslice(vol, axial, 1), vol[:, 1, :])  # slices run to the back: already down
    assert np.array_equal(reslice(vol, sagittal, 2), vol[:, :, 2].T)  # rows (to the feet) down the screen


@pytest.mark.parametrize("direction", [AXIAL_DIRECTION, CORONAL_DIRECTION])
def test_voxel_at_undoes_reslice(direction):
    vol = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    for axis in (0, 1, 2):
        p = plane(axis, direction, (1.0, 1.0, 1.0))
        for k in range(vol.shape[axis]):
            cut = reslice(vol, p, k)
            for row, column in np.ndindex(*cut.shape):
                assert vol[voxel_at(p, vol.shape, k, row, column)] == cut[row, column]


def test_direction_letters_name_oblique_directions_strongest_first():
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    assert direction_letters((c, s, 0.0)) == "LP" and direction_letters((-s, -c, 0.0)) == "AR"
    assert direction_letters((0.1, -0.2, 0.97)) == "S"  # small components left out
    assert direction_letters((0.0, 0.0, -1.0)) == "I"
    assert plane_name((0.3, 0.2, -0.93)) == "axial" and plane_name((-0.9, 0.4, 0.1)) == "sagittal"
    rotated = ((0.0, 0.0, 1.0), (-s, c, 0.0), (c, s, 0.0))  # axial slices turned 30 degrees about z
    assert orientation_labels(plane(0, rotated, (1.0, 1.0, 1.0))) == {
        "top": "AL",
        "bottom": "PR",
        "left": "RA",
        "right": "LP",
    }


def test_scale_bar_and_pixel_under_the_pointer():
    assert scale_bar_mm(128 * 0.661468) == 20 and scale_bar_mm(500) == 100 and scale_bar_mm(3) == 0.5
    assert scale_bar_mm(40, fraction=0.5) == 20
    with pytest.raises(ValueError, match="positive width"):
        scale_bar_mm(0)
    assert pixel_at((5, 128), (9, 128), 127.9, 8.9) == (4, 127)
    assert pixel_at((5, 128), (9, 128), 0, 0) == (0, 0) and pixel_at((5, 128), (10, 64), 33, 4) == (2, 66)
    assert pixel_at((5, 128), (9, 128), -1, 3) is None and pixel_at((5, 128), (9, 128), 3, 9) is None


def test_canvas_repeats_rows_for_the_aspect_and_scales_large_images_down():
    frame = np.arange(2 * 3, dtype=np.uint8).reshape(2, 3) * 40
    tall = Canvas(frame.shape, 2.0)
    assert tall.shown == (4, 3) and np.array_equal(_png(tall.png(frame)), np.repeat(frame, 2, axis=0))
    flat = Canvas((4, 3), 0.5)
    quad = np.arange(12, dtype=np.uint8).reshape(4, 3)
    assert flat.shown == (2, 3) and np.array_equal(_png(flat.png(quad)), quad[[1, 3]])
    rgb = np.dstack([frame, frame // 2, 255 - frame])
    assert np.array_equal(_png(Canvas(rgb.shape, 1.0).png(rgb)), rgb)
    big = Canvas((3 * MAX_DISPLAY, 64), 1.0)  # through an antialiasing figure, a third of the size
    shown = _png(big.png(np.full((3 * MAX_DISPLAY, 64), 200, np.uint8)))
    assert big.shown == shown.shape == (MAX_DISPLAY, 21) and np.abs(shown.astype(int) - 200).max() <= 1


# -- the widget -------------------------------------------------------------------------------------


def test_view_with_a_mask_draws_the_overlay_and_a_legend(study, ct):
    mask = np.zeros((5, 128, 128), np.uint8)
    mask[2, 10:40, 20:60] = 1
    mask[2, 80:90, 80:120] = 2
    mask[3, 0:5, 0:5] = 2
    v = study.series[0].view(preset="soft tissue", mask=mask, labels={1: "lung", 2: "bone"}, opacity=0.5)
    assert isinstance(v, SliceViewer) and v.slider.value == 2
    windowed = apply_window(_hu(ct[1][2]), 400, 40)
    expected = composite(windowed, mask[2], colour_table(label_colours([1, 2])), 0.5)
    shown = _png(v.image.value)
    assert np.array_equal(shown, expected)
    inside, outside = shown[20, 30], shown[100, 10]
    assert len(set(outside.tolist())) == 1 and len(set(inside.tolist())) == 3  # grey; tinted
    assert "1 lung" in v.legend.value and "2 bone" in v.legend.value
    v.slider.value = 0  # a slice without labels shows the plain grey image
    assert np.array_equal(_png(v.image.value), np.repeat(apply_window(_hu(ct[1][0]), 400, 40)[..., None], 3, 2))
    v.close()
    assert v._mask is None


def test_boolean_mask_and_bad_masks(study):
    v = study.series[0].view(mask=np.ones((5, 128, 128), bool))
    assert "1</span>" in v.legend.value and study.series[0].view().legend.value == ""
    v.close()
    with pytest.raises(ValueError, match="does not match the series volume"):
        study.series[0].view(mask=np.ones((128, 128), bool))
    with pytest.raises(ValueError, match="opacity"):
        study.series[0].view(mask=np.ones((5, 128, 128), bool), opacity=2)


def _hu_volume(datasets) -> np.ndarray:
    return np.stack([_hu(d) for d in datasets])


def _mouse(v, x, y, kind="mousemove"):
    v.events._handle_mouse_msg(None, {"event": kind, "type": kind, "dataX": x, "dataY": y}, None)


def test_axial_view_has_orientation_labels_scale_bar_and_the_value_under_the_cursor(study, ct):
    v = study.series[0].view(preset="soft tissue")
    assert [label for label, _ in v.plane_select.options] == ["axial", "coronal", "sagittal"]
    assert {k: e.value for k, e in v.edges.items()} == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert v._volume is None  # the acquired plane decrypts instance by instance
    mm = scale_bar_mm(128 * float(ct[1][0].PixelSpacing[1]))
    px = round(mm / float(ct[1][0].PixelSpacing[1]))
    assert mm == 20 and f"width:{px}px" in v.scale.value and "20 mm" in v.scale.value
    hu, ds = _hu(ct[1][2]), ct[1][2]
    _mouse(v, 30, 12)
    dy, dx = (float(d) for d in ds.PixelSpacing)
    x0, y0, z0 = (float(c) for c in ds.ImagePositionPatient)
    where = f"({x0 + 30 * dx:.1f}, {y0 + 12 * dy:.1f}, {z0:.1f}) mm"  # column 30 along x, row 12 along y
    assert v.cursor.value == f"\u00b7 {float(hu[12, 30]):g} HU at row 12, column 30 \u00b7 {where}"
    _mouse(v, 200, 12)
    assert v.cursor.value == ""
    _mouse(v, 30, 12)
    _mouse(v, 30, 12, "mouseleave")
    assert v.cursor.value == ""
    v.close()
    assert v.events.comm is None


def test_coronal_and_sagittal_planes_decrypt_the_volume_once_with_the_right_aspect(study, ct):
    hu = _hu_volume(ct[1])
    mask = np.zeros((5, 128, 128), bool)
    mask[:, 60:70, 60:70] = True
    v = study.series[0].view(preset="bone", mask=mask)

    def bulk_reads() -> int:
        return sum(r["action"] == "decrypt-series" for r in study.audit_log.records())

    before = bulk_reads()
    v.plane_select.value = 1
    assert v.plane.name == "coronal" and (v.slider.max, v.slider.value) == (127, 63)
    assert v._volume is not None and np.array_equal(v._shown, hu[::-1, 63, :])
    assert {k: e.value for k, e in v.edges.items()} == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    dz, dx = 1.25, float(ct[1][0].PixelSpacing[1])
    shown = _png(v.image.value)
    assert shown.shape == (round(5 * dz / dx), 128, 3)  # 5 slices of 1.25 mm over 128 columns of 0.66 mm
    width, level = WINDOW_PRESETS["bone"]
    expected_top = composite(
        apply_window(hu[4, 63], width, level)[None], mask[4:5, 63], colour_table({1: PALETTE[0]}), 0.4
    )
    assert np.abs(shown[0].astype(int) - expected_top[0]).max() <= 1  # the head's slice on top, overlay resliced too
    assert v.status.value.startswith("slice 64/128")
    _mouse(v, 5, shown.shape[0] - 1)  # bottom row: the first (lowest) slice
    assert f"\u00b7 {float(hu[0, 63, 5]):g} HU at row 4, column 5 \u00b7 (" in v.cursor.value
    lowest = ct[1][0]
    assert v.cursor.value.endswith(f", {float(lowest.ImagePositionPatient[2]):.1f}) mm")  # z of the first slice
    v.plane_select.value = 2
    assert v.plane.name == "sagittal" and np.array_equal(v._shown, hu[::-1, :, 63])
    assert v.edges["left"].value == "A" and v.edges["right"].value == "P"
    v.slider.value = 10
    assert np.array_equal(v._shown, hu[::-1, :, 10])
    v.plane_select.value = 0  # back to the acquired plane: read from the volume now, nothing decrypted
    assert np.array_equal(v._shown, hu[2]) and not v._cache
    assert repr(v) == "SliceViewer(CT #1, slice 3/5, bone)"
    assert bulk_reads() == before + 1  # one audited volume read for every plane
    v.close()
    assert v._volume is None and v._shown is None


def test_a_viewer_can_open_on_a_resliced_plane_and_names_bad_planes(study, ct):
    v = SliceViewer(study.series[0], plane="sagittal", index=3)
    assert v.plane.name == "sagittal" and v.slider.value == 3 and v._volume is not None
    assert repr(v).startswith("SliceViewer(CT #1, sagittal slice 4/128")
    v.close()
    with pytest.raises(ValueError, match="unknown plane 'oblique'.*axial, coronal, sagittal"):
        study.series[0].view(plane="oblique")


def test_a_coronal_acquisition_is_labelled_from_its_orientation(tmp_path, identities):
    datasets = synthesize_datasets(4, rows=32, columns=40)
    for k, ds in enumerate(datasets):
        ds.ImageOrientationPatient = list(CORONAL_IOP)
        ds.ImagePositionPatient = [0.0, 3.0 * k, 0.0]
    dest = encrypt_datasets(datasets, tmp_path / "cor.msec", [identities.x25519.public], progress=False)
    with medsec_nb.open_study(dest, identity=identities.x25519) as st:
        v = st.series[0].view()
        assert [label for label, _ in v.plane_select.options] == ["coronal", "axial", "sagittal"]
        assert {k: e.value for k, e in v.edges.items()} == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
        v.plane_select.value = 2
        assert {k: e.value for k, e in v.edges.items()} == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
        hu = _hu_volume(datasets)
        assert v._shown.shape == (32, 4) and np.array_equal(v._shown, hu[:, :, 19].T)
        v.close()


def test_a_volume_that_cannot_be_read_leaves_the_viewer_on_its_plane(study, ct, monkeypatch):
    v = study.series[0].view(preset="lung")
    shown = bytes(v.image.value)

    def refuse(self, progress=None):
        raise medsec_nb.MedsecError("series[0] instance 3: pixel data cannot be decoded (ValueError)")

    monkeypatch.setattr(type(study.series[0]), "volume", refuse)
    v.plane_select.value = 1
    assert v.plane.axis == 0 and v.plane_select.value == 0 and v.slider.max == 4
    assert v.status.value == "MedsecError: series[0] instance 3: pixel data cannot be decoded (ValueError)"
    assert bytes(v.image.value) == shown and v._volume is None
    v.close()


def test_a_multi_frame_instance_is_resliced_across_its_frames(tmp_path, identities):
    """pydicom's emri_small.dcm: one MR instance of 10 frames of 64 x 64 (its dataset is read in
    memory and encrypted from there)."""
    ds = pydicom.dcmread(get_testdata_file("emri_small.dcm"))
    dest = encrypt_datasets([ds], tmp_path / "mr.msec", [identities.x25519.public], progress=False)
    with medsec_nb.open_study(dest, identity=identities.x25519) as st:
        v = st.series[0].view(plane="coronal", preset="brain")
        frames = _hu(ds)
        assert v.slider.max == 63 and np.array_equal(v._shown, frames[::-1, 31, :])
        _mouse(v, 3, 0)
        assert v.cursor.value.startswith(f"\u00b7 {float(frames[-1, 31, 3]):g} at row 0, column 3")  # MR: no HU
        v.close()
