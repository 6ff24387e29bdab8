"""Window/level functions and the ``SliceViewer`` widget, with ipywidgets' test comm.

The viewer's rendered PNG is decoded and compared pixel for pixel with the windowed slice
(square pixels render 1:1), and the comm messages are inspected to see what leaves the kernel.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

import medsec_nb
from medsec_nb.notebook.widgets import (
    AUTO,
    WINDOW_PRESETS,
    SliceViewer,
    apply_window,
    auto_window,
    close_viewers,
    instance_pixels,
    png_bytes,
)
from medsec_nb.testdata import synthesize_series

pytestmark = pytest.mark.usefixtures("widget_comm")


@pytest.fixture(scope="module")
def square(tmp_path_factory, identities) -> tuple[Path, list[pydicom.Dataset]]:
    """Five 128 x 128 CT slices with square pixels (rendered 1:1), encrypted; plain copies sorted by z."""
    base = tmp_path_factory.mktemp("viewer")
    files = synthesize_series(base / "src", n_slices=5)
    dest = base / "ct.msec"
    medsec_nb.encrypt_study(base / "src", dest, recipients=[identities.x25519], progress=False)
    plain = sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
    return dest, plain


@pytest.fixture
def study(square, identities):
    with medsec_nb.open_study(square[0], identity=identities.x25519) as st:
        yield st


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return apply_modality_lut(ds.pixel_array, ds)


def _png(value) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(bytes(value))))


def _same_grey(png, expected: np.ndarray) -> bool:
    """The rendered PNG shows ``expected`` (matplotlib's grey colormap may round a level down by one)."""
    shown = _png(png).astype(int)
    return shown.shape == expected.shape and int(np.abs(shown - expected).max()) <= 1


def _sent_images(comm) -> list[bytes]:
    """Binary payloads (the PNGs) an Image widget pushed through its comm."""
    return [bytes(b) for _, kw in comm.messages for b in (kw.get("buffers") or [])]


# -- plain functions ----------------------------------------------------------------------------


def test_presets_are_the_usual_ct_windows():
    assert WINDOW_PRESETS == {"lung": (1500, -600), "bone": (2000, 300), "soft tissue": (400, 40), "brain": (80, 40)}


def test_apply_window_follows_the_dicom_linear_function():
    x = np.array([-1000.0, -160.5, -160.0, 39.5, 40.0, 239.0, 239.5, 3000.0])
    out = apply_window(x, 400, 40)
    # y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255, clipped to 0..255 and rounded
    expected = np.clip(((x - 39.5) / 399 + 0.5) * 255, 0, 255)
    assert out.dtype == np.uint8 and np.array_equal(out, np.floor(expected + 0.5).astype(np.uint8))
    assert out[0] == 0 and out[-1] == 255 and out[3] == 128
    img = np.arange(-1024, 1024, dtype=np.int16).reshape(32, 64)
    assert apply_window(img, 2000, 300).shape == (32, 64)
    assert np.all(np.diff(apply_window(img.ravel(), 1500, -600).astype(int)) >= 0)


def test_apply_window_of_width_one_is_a_threshold_and_smaller_is_refused():
    assert apply_window(np.array([9.0, 9.5, 10.0]), 1, 10).tolist() == [0, 0, 255]
    with pytest.raises(ValueError):
        apply_window(np.zeros(3), 0.5, 0)


@pytest.mark.parametrize("shape", [(3, 5), (4, 2, 3)])
def test_png_bytes_round_trips_through_pillow(shape):
    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(_png(png_bytes(pixels)), pixels)
    assert np.array_equal(_png(png_bytes(np.asfortranarray(pixels))), pixels)  # any memory layout


def test_auto_window_spans_the_central_percentiles():
    ramp = np.linspace(-1000, 1000, 512 * 512).reshape(512, 512)
    width, level = auto_window(ramp)
    assert width == pytest.approx(1960, rel=0.01) and level == pytest.approx(0, abs=5)
    assert auto_window(np.full((8, 8), 7.0)) == (1.0, 7.0)


def test_instance_pixels_are_pydicom_values(study, square):
    for i, ds in enumerate(square[1]):
        arr = instance_pixels(study.series[0], i)
        assert arr.shape == (1, 128, 128) and np.array_equal(arr[0], _hu(ds))


# -- the viewer ---------------------------------------------------------------------------------


def test_viewer_starts_in_the_middle_and_renders_the_windowed_slice(study, square):
    v = study.series[0].view(preset="soft tissue")
    assert isinstance(v, SliceViewer)
    assert (v.slider.min, v.slider.max, v.slider.value) == (0, 4, 2)
    assert list(v.window.options) == [AUTO, *WINDOW_PRESETS]
    assert v.status.value == "slice 3/5 \u00b7 W 400 L 40"
    assert _same_grey(v.image.value, apply_window(_hu(square[1][2]), 400, 40))
    v.close()


def test_slider_step_sends_one_new_image_and_keeps_a_bounded_cache(study, square):
    v = SliceViewer(study.series[0], index=0, preset="bone", cache_size=2)
    before = len(_sent_images(v.image.comm))
    v.slider.value = 3
    sent = _sent_images(v.image.comm)[before:]
    assert len(sent) == 1 and _same_grey(sent[0], apply_window(_hu(square[1][3]), 2000, 300))
    assert v.status.value.startswith("slice 4/5")
    v.slider.value = 4
    v.slider.value = 1
    assert list(v._cache) == [4, 1]  # least recently used instance dropped
    v.slider.value = 4  # a hit: moved to the end, nothing decrypted
    assert list(v._cache) == [1, 4]
    v.close()


def test_preset_change_and_auto(study, square):
    v = SliceViewer(study.series[0], index=1, preset="lung")
    assert _same_grey(v.image.value, apply_window(_hu(square[1][1]), 1500, -600))
    v.window.value = AUTO
    width, level = auto_window(_hu(square[1][1]))
    assert v.status.value == f"slice 2/5 \u00b7 W {width:g} L {level:g}"
    assert _same_grey(v.image.value, apply_window(_hu(square[1][1]), width, level))
    v.close()


def test_close_drops_pixels_figure_and_comms(study):
    v = study.series[0].view()
    children = [v.slider, v.window, v.image, v.status]
    image_comm = v.image.comm
    v.close()
    assert v.closed and not v._cache and v._canvas is None
    assert bytes(v.image.value) == b"" and _sent_images(image_comm)[-1] == b""  # the frontend's copy blanked
    assert v.comm is None and all(c.comm is None for c in children)
    assert repr(v) == "SliceViewer(CT #1, closed)"
    v.close()  # twice is harmless


def test_closing_the_study_closes_and_empties_its_viewers(square, identities):
    """The viewer follows the study's close event (the study layer does not know viewers)."""
    st = medsec_nb.open_study(square[0], identity=identities.x25519)
    v, other = st.series[0].view(), st.series[0].view()
    assert v._cache and not v.closed
    st.close()
    assert v.closed and other.closed and not v._cache and not other._cache
    v.slider.value = 0  # a closed viewer decrypts nothing
    assert not v._cache and close_viewers(st) == 0


def test_viewer_repr_and_bad_arguments(study):
    v = study.series[0].view(index=99)
    assert v.slider.value == 4 and repr(v) == "SliceViewer(CT #1, slice 5/5, auto)"
    v.close()
    with pytest.raises(ValueError, match="unknown preset"):
        study.series[0].view(preset="liver")


def _single_file_study(name: str, tmp_path: Path, ident) -> tuple[medsec_nb.Study, pydicom.Dataset]:
    path = get_testdata_file(name)
    if path is None:  # pragma: no cover - only without pydicom-data
        pytest.skip(f"{name} needs the pydicom-data package")
    (tmp_path / "src").mkdir()
    pydicom.dcmread(path).save_as(tmp_path / "src" / name)
    medsec_nb.encrypt_study(tmp_path / "src", tmp_path / "s.msec", recipients=[ident.public], progress=False)
    return medsec_nb.open_study(tmp_path / "s.msec", identity=ident), pydicom.dcmread(path)


def test_multi_frame_instance_has_one_slider_step_per_frame(tmp_path, identities):
    st, ds = _single_file_study("emri_small.dcm", tmp_path, identities.x25519)
    with st:
        v = st.series[0].view(index=7, preset="brain")
        assert v.slider.max == 9
        assert _same_grey(v.image.value, apply_window(_hu(ds)[7], 80, 40))
        v.close()


def test_colour_instance_is_shown_as_is(tmp_path, identities):
    st, ds = _single_file_study("SC_rgb.dcm", tmp_path, identities.x25519)
    with st:
        v = st.series[0].view()
        assert v.status.value == "slice 1/1"
        assert np.array_equal(_png(v.image.value), ds.pixel_array)
        v.close()


def test_series_without_images_cannot_be_viewed(tmp_path, identities):
    (tmp_path / "src").mkdir()
    pydicom.dcmread(get_testdata_file("rtplan.dcm")).save_as(tmp_path / "src" / "plan.dcm")
    medsec_nb.encrypt_study(
        tmp_path / "src", tmp_path / "p.msec", recipients=[identities.x25519.public], progress=False
    )
    with medsec_nb.open_study(tmp_path / "p.msec", identity=identities.x25519) as st:
        with pytest.raises(medsec_nb.MedsecError, match="holds no images"):
            st.series[0].view()
