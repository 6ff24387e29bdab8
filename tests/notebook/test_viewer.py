"""The viewer's label overlay, planes, orientation labels and scale bar.

Plain functions are tested on arrays and known geometries; the widget on a generated CT series
encrypted in memory (``synthesize_datasets`` + ``encrypt_datasets``: no plaintext file), its
rendered PNG compared pixel for pixel with the expected composite (square pixels render 1:1).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
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
from medsec_nb.notebook.widgets import SliceViewer, apply_window
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
