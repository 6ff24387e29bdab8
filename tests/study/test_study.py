"""Round trips through the container with real DICOM files, and the Study / Series API.

Issue 2: ``open_study`` returns a ``Study``; ``study.series`` lists ``Series`` in a stable
order; ``series[i]`` is the i-th instance (sorted by position, then instance number) as a
pydicom Dataset; ``series.header(i)`` the same instance without pixel data;
``series.volume()`` the stacked pixel array with the modality rescale applied, shape
(z, y, x); ``with open_study(...)`` releases everything on exit. ``decrypt_study`` gives the
original files back byte for byte; ``add_recipients`` leaves the payload untouched.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut
from pydicom.tag import Tag
from pydicom.uid import generate_uid

import medsec_nb
from conftest import FAST_LOG_N, PASSPHRASE
from medsec_nb import MedsecError, StudyClosedError, open_study
from medsec_nb.container.header import read_header
from medsec_nb.testdata import synthesize_series

PIXEL_DATA = Tag(0x7FE0, 0x0010)

#: pydicom's bundled files (the ones from pydicom-data are fetched from the installed package).
ROUND_TRIP_FILES = [
    "CT_small.dcm",  # explicit VR little endian, rescale slope/intercept, trailing padding
    "MR_small.dcm",  # explicit VR little endian, no rescale
    "MR_small_implicit.dcm",  # implicit VR little endian
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "MR_small_RLE.dcm",  # RLE lossless (encapsulated)
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless (encapsulated)
    "JPEG2000.dcm",  # JPEG 2000, 1024 x 256
    "emri_small.dcm",  # multi-frame (10 frames), 12 of 16 bits stored
    "emri_small_RLE.dcm",  # multi-frame RLE
    "SC_rgb.dcm",  # colour, 3 samples per pixel
    "image_dfl.dcm",  # deflated explicit VR little endian
    "rtplan.dcm",  # no pixel data at all
]


def _testdata(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:  # pragma: no cover - only without the pydicom-data package
        pytest.skip(f"{name} is not available (needs the pydicom-data package)")
    return Path(path)


@dataclass(frozen=True)
class Single:
    name: str
    original: Path  # pydicom's file (never written to)
    source: Path  # the folder that was encrypted
    box: Path  # its container


@pytest.fixture(scope="module", params=ROUND_TRIP_FILES)
def single(request, tmp_path_factory, identities) -> Single:
    """Each file copied alone into a study folder and encrypted to the x25519 identity."""
    name = request.param
    original = _testdata(name)
    base = tmp_path_factory.mktemp(name.replace(".", "_"))
    src = base / "study"
    src.mkdir()
    shutil.copyfile(original, src / name)
    box = medsec_nb.encrypt_study(src, base / "study.msec", [identities.x25519], progress=False)
    return Single(name, original, src, box)


def _reference_volume(ds: pydicom.Dataset) -> np.ndarray:
    """pydicom's pixel array with the modality LUT, as (frames, rows, columns[, samples])."""
    arr = apply_modality_lut(ds.pixel_array, ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    shape = (frames, int(ds.Rows), int(ds.Columns))
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        shape += (int(ds.SamplesPerPixel),)
    return arr.reshape(shape)


def _assert_same_volume(vol: np.ndarray, ref: np.ndarray) -> None:
    assert vol.shape == ref.shape
    assert vol.dtype.isnative
    if ref.dtype.kind in "iu":
        # no rescale: exactly pydicom's integer type (in native byte order)
        assert vol.dtype == ref.dtype.newbyteorder("="), (vol.dtype, ref.dtype)
    else:
        # pydicom gives float64 whenever a rescale is present; an integer result is fine when
        # every value is the same number (documented: int when slope 1 and intercept integral)
        assert vol.dtype.kind in "iuf", vol.dtype
    assert np.array_equal(vol, ref), "volume differs from pydicom's apply_modality_lut(pixel_array)"


# --------------------------------------------------------------------------- single-file round trips


def test_instance_equals_original(single, identities):
    orig = pydicom.dcmread(single.original)
    with open_study(single.box, identities.x25519) as study:
        assert len(study.series) == 1 and study.instance_count == 1
        s = study.series[0]
        assert len(s) == 1 and s.uid == orig.SeriesInstanceUID
        for ds in (s[0], s[-1], next(iter(s))):
            assert ds == orig
            assert ds.file_meta == orig.file_meta
            assert ds.preamble == orig.preamble
            if PIXEL_DATA in orig:
                assert ds.PixelData == orig.PixelData
            else:
                assert PIXEL_DATA not in ds
        with pytest.raises(IndexError):
            s[1]


def test_header_is_the_instance_without_pixel_data(single, identities):
    """``header(i)`` is the full read minus Pixel Data: every other element, including those
    stored after the pixels (here: Data Set Trailing Padding in CT_small / MR_small)."""
    expected = pydicom.dcmread(single.original)
    if PIXEL_DATA in expected:
        del expected[PIXEL_DATA]
    with open_study(single.box, identities.x25519) as study:
        h = study.series[0].header(0)
    assert PIXEL_DATA not in h
    assert sorted(h.keys()) == sorted(expected.keys())
    assert h == expected and h.file_meta == expected.file_meta
    # and, element by element, what pydicom's own stop_before_pixels read gives
    for elem in pydicom.dcmread(single.original, stop_before_pixels=True):
        assert h[elem.tag] == elem


def test_volume_matches_pydicom(single, identities):
    orig = pydicom.dcmread(single.original)
    with open_study(single.box, identities.x25519) as study:
        s = study.series[0]
        if PIXEL_DATA not in orig:
            with pytest.raises(MedsecError) as ei:
                s.volume(progress=False)
            assert str(single.box) in str(ei.value)
            return
        try:
            ref = _reference_volume(orig)
        except (RuntimeError, NotImplementedError, ImportError) as exc:  # no decoder plugin installed
            assert s[0].PixelData == orig.PixelData, exc
            return
        _assert_same_volume(s.volume(progress=False), ref)


def test_decrypt_reproduces_the_file_byte_for_byte(single, identities, tmp_path):
    out = tmp_path / "export"
    written = medsec_nb.decrypt_study(single.box, out, identities.x25519, progress=False)
    assert written == [out / single.name]
    assert (out / single.name).read_bytes() == single.original.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == [single.name]


def _with_elements_after_pixel_data(folder: Path) -> Path:
    """MR_small with a private block and a Digital Signatures Sequence after Pixel Data."""
    ds = pydicom.dcmread(_testdata("MR_small.dcm"))
    block = ds.private_block(0x7FE1, "MEDSEC TEST", create=True)
    block.add_new(0x01, "LO", "private value after the pixels")
    item = pydicom.Dataset()
    item.MACIDNumber = 1
    item.DigitalSignatureUID = generate_uid()
    ds.DigitalSignaturesSequence = [item]
    path = folder / "trailing.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert max(pydicom.dcmread(path).keys()) > PIXEL_DATA
    return path


@pytest.mark.parametrize("which", ["CT_small.dcm", "private_and_signature_after_pixels"])
def test_header_keeps_the_elements_after_pixel_data(which, identities, tmp_path):
    """``header(i)`` is "the same instance without pixel data": elements stored after Pixel
    Data (Data Set Trailing Padding, Digital Signatures Sequence, private groups 7FE1+) are
    part of the instance and are in the (already decrypted) metadata segment."""
    src = tmp_path / "src"
    src.mkdir()
    if which == "CT_small.dcm":
        path = src / which
        shutil.copyfile(_testdata(which), path)
    else:
        path = _with_elements_after_pixel_data(src)
    box = medsec_nb.encrypt_study(src, tmp_path / "s.msec", [identities.x25519], progress=False)
    full = pydicom.dcmread(path)
    with open_study(box, identities.x25519) as study:
        h = study.series[0].header(0)
    assert PIXEL_DATA not in h
    missing = [str(t) for t in full.keys() if t != PIXEL_DATA and t not in h]  # noqa: SIM118 (tags, not elements)
    assert not missing, f"header(0) lost elements: {missing}"
    for elem in full:
        if elem.tag != PIXEL_DATA:
            assert h[elem.tag] == elem


# --------------------------------------------------------------------------- multi-slice series


def _datasets(paths) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in paths]


def _normal(ds) -> np.ndarray:
    o = [float(v) for v in ds.ImageOrientationPatient]
    return np.cross(o[:3], o[3:])


def _expected_order(datasets) -> list[str]:
    """SOP UIDs sorted by position along the slice normal, then instance number."""

    def key(ds):
        pos = ds.get("ImagePositionPatient")
        dist = float(np.dot([float(v) for v in pos], _normal(ds))) if pos is not None else None
        return (dist is None, dist or 0.0, int(ds.InstanceNumber))

    return [ds.SOPInstanceUID for ds in sorted(datasets, key=key)]


def _rewrite(paths, fn) -> None:
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        fn(k, ds)
        ds.save_as(p, enforce_file_format=True)


def _check_series(box: Path, identity, datasets, expected_sops) -> None:
    by_sop = {ds.SOPInstanceUID: ds for ds in datasets}
    with open_study(box, identity) as study:
        assert len(study.series) == 1
        s = study.series[0]
        assert len(s) == len(expected_sops)
        assert [s.header(i).SOPInstanceUID for i in range(len(s))] == expected_sops
        assert [s[i].SOPInstanceUID for i in range(len(s))] == expected_sops
        assert [ds.SOPInstanceUID for ds in s] == expected_sops
        for i, sop in enumerate(expected_sops):
            assert s[i] == by_sop[sop]
        ref = np.concatenate([_reference_volume(by_sop[sop]) for sop in expected_sops])
        _assert_same_volume(s.volume(progress=False), ref)


def test_series_sorted_by_position_not_instance_number(tmp_path, identities):
    paths = synthesize_series(tmp_path / "src", n_slices=7, rows=32, columns=48, reverse_instance_numbers=True)
    box = medsec_nb.encrypt_study(tmp_path / "src", tmp_path / "s.msec", [identities.x25519], progress=False)
    datasets = _datasets(paths)
    expected = _expected_order(datasets)
    zs = {ds.SOPInstanceUID: float(ds.ImagePositionPatient[2]) for ds in datasets}
    inst = {ds.SOPInstanceUID: int(ds.InstanceNumber) for ds in datasets}
    assert [zs[s] for s in expected] == sorted(zs.values())
    assert [inst[s] for s in expected] == sorted(inst.values(), reverse=True)  # the fixture's point
    _check_series(box, identities.x25519, datasets, expected)


def test_equal_positions_are_ordered_by_instance_number(tmp_path, identities):
    paths = synthesize_series(tmp_path / "src", n_slices=6, rows=16, columns=16)
    numbers = [5, 2, 6, 1, 4, 3]

    def pairs(k, ds):  # slices 0/1, 2/3, 4/5 share a position
        pos = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1], 10.0 - 2.5 * (k // 2)]
        ds.InstanceNumber = numbers[k]

    _rewrite(paths, pairs)
    box = medsec_nb.encrypt_study(tmp_path / "src", tmp_path / "s.msec", [identities.x25519], progress=False)
    datasets = _datasets(paths)
    expected = _expected_order(datasets)
    assert [int(d.InstanceNumber) for d in sorted(datasets, key=lambda d: expected.index(d.SOPInstanceUID))] == [
        3,
        4,
        1,
        6,
        2,
        5,
    ]
    _check_series(box, identities.x25519, datasets, expected)


def test_without_positions_instances_are_ordered_by_instance_number(tmp_path, identities):
    paths = synthesize_series(tmp_path / "src", n_slices=5, rows=16, columns=16)
    numbers = [3, 5, 1, 4, 2]

    def no_position(k, ds):
        del ds.ImagePositionPatient
        ds.InstanceNumber = numbers[k]

    _rewrite(paths, no_position)
    box = medsec_nb.encrypt_study(tmp_path / "src", tmp_path / "s.msec", [identities.x25519], progress=False)
    datasets = _datasets(paths)
    expected = [d.SOPInstanceUID for d in sorted(datasets, key=lambda d: int(d.InstanceNumber))]
    _check_series(box, identities.x25519, datasets, expected)


def test_oblique_series_is_ordered_along_the_slice_normal(tmp_path, identities):
    """A sagittal series: the position that matters is x, not z."""
    paths = synthesize_series(tmp_path / "src", n_slices=5, rows=16, columns=16, reverse_instance_numbers=True)
    xs = [4.0, -8.0, 12.0, 0.0, -2.0]

    def sagittal(k, ds):
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [xs[k], -100.0, 50.0 + 7.0 * k]  # z deliberately in the other order

    _rewrite(paths, sagittal)
    box = medsec_nb.encrypt_study(tmp_path / "src", tmp_path / "s.msec", [identities.x25519], progress=False)
    datasets = _datasets(paths)
    expected = _expected_order(datasets)
    # row (0, 1, 0) x column (0, 0, -1) = normal (-1, 0, 0): ascending along the normal is descending x
    assert np.allclose(_normal(datasets[0]), [-1, 0, 0])
    x_of = {d.SOPInstanceUID: float(d.ImagePositionPatient[0]) for d in datasets}
    assert [x_of[s] for s in expected] == sorted(xs, reverse=True)
    _check_series(box, identities.x25519, datasets, expected)


def test_signed_series_volume_and_instances(signed_container, series_source, identities):
    datasets = _datasets(series_source.files)
    _check_series(signed_container, identities.x25519, datasets, _expected_order(datasets))


def test_volume_of_a_series_with_mixed_image_sizes_is_a_clear_error(tmp_path, identities):
    """A localizer of another size filed in the same series: ``volume()`` cannot stack it and
    must say so with a MedsecError naming the file (not a NumPy traceback); the instances stay
    readable one by one."""
    paths = synthesize_series(tmp_path / "src", n_slices=4, rows=16, columns=16)

    def smaller_first(k, ds):
        if k == 0:
            ds.Rows, ds.Columns = 8, 12
            ds.PixelData = ds.PixelData[: 8 * 12 * 2]

    _rewrite(paths, smaller_first)
    box = medsec_nb.encrypt_study(tmp_path / "src", tmp_path / "s.msec", [identities.x25519], progress=False)
    with open_study(box, identities.x25519) as study:
        s = study.series[0]
        assert sorted(s[i].Rows for i in range(len(s))) == [8, 16, 16, 16]
        with pytest.raises(MedsecError) as ei:
            s.volume(progress=False)
        assert str(box) in str(ei.value)


@pytest.mark.parametrize("present", ["RescaleSlope", "RescaleIntercept"])
def test_volume_with_only_one_rescale_attribute_matches_pydicom(present, tmp_path, identities):
    """Only one of Rescale Slope / Intercept present: pydicom applies no rescale. The volume
    must not depend on which code path (native little endian or pydicom) decodes it: the
    little-endian file and the same data saved big endian give the same volume as pydicom."""
    from pydicom.uid import ExplicitVRBigEndian

    paths = synthesize_series(tmp_path / "src", n_slices=3, rows=16, columns=16)

    def one_attribute(k, ds):
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
        del ds[(present == "RescaleSlope" and "RescaleIntercept") or "RescaleSlope"]

    _rewrite(paths, one_attribute)
    big = tmp_path / "big"
    big.mkdir()
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        ds.PixelData = np.frombuffer(ds.PixelData, "<i2").astype(">i2").tobytes()
        pydicom.dcmwrite(big / p.name, ds, little_endian=False, implicit_vr=False, force_encoding=True)
        assert np.array_equal(pydicom.dcmread(big / p.name).pixel_array, pydicom.dcmread(p).pixel_array)
    datasets = _datasets(paths)
    ref = np.concatenate(
        [
            _reference_volume(ds)
            for ds in sorted(datasets, key=lambda d: _expected_order(datasets).index(d.SOPInstanceUID))
        ]
    )
    vols = {}
    for name, folder in (("little", tmp_path / "src"), ("big", big)):
        box = medsec_nb.encrypt_study(folder, tmp_path / f"{name}.msec", [identities.x25519], progress=False)
        with open_study(box, identities.x25519) as study:
            vols[name] = study.series[0].volume(progress=False)
    assert np.array_equal(vols["big"], ref), "pydicom path"
    assert np.array_equal(vols["little"], ref), (
        f"native path applies {present} alone: {vols['little'].ravel()[:3]} vs pydicom {ref.ravel()[:3]}"
    )


# --------------------------------------------------------------------------- multi-series studies


def _multi_series_study(folder: Path) -> dict[str, int | None]:
    """One study, four series: numbers 3, 1, 2 and one without a number; returns uid -> number."""
    study = generate_uid()
    numbers = {}
    for k, number in enumerate([3, 1, 2, None]):
        paths = synthesize_series(folder / f"s{k}", n_slices=3, rows=16, columns=16)
        series = generate_uid()

        def move(_, ds, number=number, series=series):
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = series
            if number is None:
                del ds.SeriesNumber
            else:
                ds.SeriesNumber = number

        _rewrite(paths, move)
        numbers[series] = number
    return numbers


def _listing(box: Path, identity) -> list[tuple[str, list[str]]]:
    with open_study(box, identity) as study:
        return [(s.uid, [s.header(i).SOPInstanceUID for i in range(len(s))]) for s in study.series]


def test_multi_series_order_is_by_series_number_and_stable(tmp_path, identities):
    numbers = _multi_series_study(tmp_path / "src")
    box1 = medsec_nb.encrypt_study(tmp_path / "src", tmp_path / "a.msec", [identities.x25519], progress=False)
    listing = _listing(box1, identities.x25519)
    assert [numbers[uid] for uid, _ in listing] == [1, 2, 3, None]
    assert _listing(box1, identities.x25519) == listing  # reopening

    # the same files under other names and folders (another file order) give the same study
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for k, p in enumerate(sorted((tmp_path / "src").rglob("*.dcm"), reverse=True)):
        shutil.copyfile(p, shuffled / f"{k:03d}_{p.parent.name}.dcm")
    box2 = medsec_nb.encrypt_study(shuffled, tmp_path / "b.msec", [identities.p256], progress=False)
    assert _listing(box2, identities.p256) == listing

    with open_study(box1, identities.x25519) as study:
        assert study.instance_count == 12
        assert [len(s) for s in study.series] == [3, 3, 3, 3]
        assert all(s.volume(progress=False).shape == (3, 16, 16) for s in study.series)

    # the export gives back the folder tree (sub-folders per series), byte for byte
    out = tmp_path / "export"
    medsec_nb.decrypt_study(box1, out, identities.x25519, progress=False)
    want = {str(p.relative_to(tmp_path / "src")): p.read_bytes() for p in (tmp_path / "src").rglob("*.dcm")}
    got = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == want


# --------------------------------------------------------------------------- lifecycle


def test_with_block_closes_the_study(signed_container, identities):
    with open_study(signed_container, identities.x25519) as study:
        s = study.series[0]
        first = s[0]
        running = iter(s)  # an iteration started while open ...
        next(running)
        assert not study.closed
    assert study.closed
    accesses = {
        "iteration started before close": lambda: next(running),  # ... continued after close
        "series[i]": lambda: s[0],
        "header(i)": lambda: s.header(0),
        "volume()": lambda: s.volume(progress=False),
        "iteration": lambda: list(s),
        "study.series[0][0]": lambda: study.series[0][0],
    }
    wrong = {}
    for what, call in accesses.items():
        try:
            call()
        except StudyClosedError as exc:
            assert str(signed_container) in str(exc)
        except Exception as exc:
            wrong[what] = f"{type(exc).__name__}: {exc}"
        else:
            wrong[what] = "returned data"
    assert not wrong, f"access after close must raise StudyClosedError: {wrong}"
    assert first.SOPInstanceUID  # data read before closing stays usable
    study.close()  # closing twice is harmless


def test_close_without_with(signed_container, identities):
    study = open_study(signed_container, identities.p256)
    s = study.series[0]
    study.close()
    assert study.closed and "closed" in repr(study)
    with pytest.raises(StudyClosedError):
        s.header(0)


# --------------------------------------------------------------------------- recipients


def test_every_recipient_type_opens_the_same_study(signed_container, passphrase_container, series_source, identities):
    datasets = {ds.SOPInstanceUID: ds for ds in _datasets(series_source.files)}
    results = []
    openers = [dict(identity=identities.x25519), dict(identity=identities.p256), dict(identity=identities.rsa3072)]
    for kw in openers:
        with open_study(signed_container, **kw) as study:
            assert study.key_id == kw["identity"].key_id
            assert study.signer == identities.signer.key_id
            s = study.series[0]
            results.append(([s[i].SOPInstanceUID for i in range(len(s))], s.volume(progress=False)))
            for i in range(len(s)):
                assert s[i] == datasets[s[i].SOPInstanceUID]
    with open_study(passphrase_container, passphrase=PASSPHRASE) as study:
        assert study.key_id == "passphrase" and study.signer is None
        s = study.series[0]
        results.append(([s[i].SOPInstanceUID for i in range(len(s))], s.volume(progress=False)))
    sops, vol = results[0]
    for other_sops, other_vol in results[1:]:
        assert other_sops == sops
        assert other_vol.dtype == vol.dtype and np.array_equal(other_vol, vol)


def test_identity_from_protected_key_file(signed_container, identities, tmp_path):
    key, pub = medsec_nb.save_identity(identities.rsa3072, tmp_path / "site-a", passphrase="key pass 123")
    assert "ENCRYPTED PRIVATE KEY" in key.read_text()
    with open_study(signed_container, key, identity_passphrase="key pass 123") as study:
        assert study.key_id == identities.rsa3072.key_id
        assert len(study.series[0]) == 6
    assert medsec_nb.load_recipient(pub).key_id == identities.rsa3072.key_id


def test_add_recipients_keeps_the_payload_bytes(signed_container, identities, tmp_path):
    path = tmp_path / "shared.msec"
    shutil.copyfile(signed_container, path)
    before = path.read_bytes()
    h0, _ = read_header(path)
    site_c, site_d = medsec_nb.generate_identity("x25519"), medsec_nb.generate_identity("p256")

    added = medsec_nb.add_recipients(path, [site_c.public, site_d], identity=identities.p256)
    assert added == [site_c.key_id, site_d.key_id]
    after = path.read_bytes()
    h1, size = read_header(path)
    assert after[h1.length :] == before[h0.length :], "payload changed"
    assert size == h1.length + h1.body.payload_length
    assert h1.body == h0.body and h1.signature_raw == h0.signature_raw
    assert h1.stanzas[: len(h0.stanzas)] == h0.stanzas
    assert [s["kid"] for s in h1.stanzas[len(h0.stanzas) :]] == [site_c.key_id, site_d.key_id]

    vols = []
    for ident in (site_c, site_d, identities.x25519, identities.rsa3072):
        with open_study(path, ident, require_signer=identities.signer.public) as study:
            vols.append(study.series[0].volume(progress=False))
    assert all(np.array_equal(v, vols[0]) for v in vols[1:])

    # adding someone already there changes nothing at all
    assert medsec_nb.add_recipients(path, [site_c.public, identities.x25519.public], identity=site_c) == []
    assert path.read_bytes() == after


def test_add_recipients_needs_a_recipient_key(signed_container, passphrase_container, identities, tmp_path):
    path = tmp_path / "p.msec"
    shutil.copyfile(passphrase_container, path)
    with pytest.raises(MedsecError) as ei:
        medsec_nb.add_recipients(path, [identities.x25519.public], passphrase=PASSPHRASE)
    assert str(path) in str(ei.value) and PASSPHRASE not in str(ei.value)
    assert path.read_bytes() == passphrase_container.read_bytes()

    path = tmp_path / "s.msec"
    shutil.copyfile(signed_container, path)
    with pytest.raises(medsec_nb.NoMatchingRecipientError):
        medsec_nb.add_recipients(path, [identities.other_x25519.public], identity=identities.other_p256)
    assert path.read_bytes() == signed_container.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.msec", "s.msec"]


def test_passphrase_container_with_fast_scrypt_round_trips(tmp_path, tiny_source):
    box = medsec_nb.encrypt_study(
        tiny_source.folder, tmp_path / "t.msec", passphrase=PASSPHRASE, scrypt_log_n=FAST_LOG_N, progress=False
    )
    info = medsec_nb.inspect_study(box)
    assert info.passphrase and f"N=2^{FAST_LOG_N}" in info.recipients[0]
    out = medsec_nb.decrypt_study(box, tmp_path / "out", passphrase=PASSPHRASE, progress=False)
    assert sorted(p.name for p in out) == sorted(p.name for p in tiny_source.files)
    for p in tiny_source.files:
        assert (tmp_path / "out" / p.name).read_bytes() == p.read_bytes()


def test_no_plaintext_identifiers_in_the_container(signed_container, series_source):
    """The public header and the ciphertext carry no UIDs or names of the source."""
    data = signed_container.read_bytes()
    ds = pydicom.dcmread(series_source.files[0], stop_before_pixels=True)
    for value in (
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        str(ds.PatientName),
        str(ds.get("PatientID", "")) or "CT1",
    ):
        if value:
            assert value.encode() not in data
    assert io.BytesIO(data).read(8) == b"\x89MSEC\r\n\x1a"


@pytest.mark.parametrize("threads", [1, 3])
def test_volume_is_the_same_on_any_number_of_threads(single, identities, threads):
    if PIXEL_DATA not in pydicom.dcmread(single.original, stop_before_pixels=False):
        return
    with (
        open_study(single.box, identities.x25519) as a,
        open_study(single.box, identities.x25519, threads=threads) as b,
    ):
        assert b.threads == threads
        try:
            ref = a.series[0].volume(progress=False)
        except MedsecError:
            return
        assert np.array_equal(b.series[0].volume(progress=False), ref)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_count_fails_before_any_key_is_unwrapped(single, identities, bad):
    with pytest.raises(ValueError, match="threads"):
        open_study(single.box, lambda: pytest.fail("key unwrapped"), threads=bad)
