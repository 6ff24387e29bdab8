"""Encrypting in-memory instances (``encrypt_datasets``): the bytes stored are the Part 10 bytes of
each dataset, one study per container, and nothing but the finished container reaches the disk."""

from __future__ import annotations

import os

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medsec_nb import SourceError
from medsec_nb.access import decrypt_study
from medsec_nb.container.sources import dataset_bytes
from medsec_nb.container.writer import encrypt_datasets
from medsec_nb.testdata import synthesize_datasets


def _files_under(folder) -> set[str]:
    return {os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs}


def test_datasets_round_trip_byte_for_byte_and_nothing_else_is_written(tmp_path, identities, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    datasets = synthesize_datasets(5, rows=32, columns=48)
    expected = [dataset_bytes(ds) for ds in datasets]
    dest = encrypt_datasets((ds for ds in datasets), tmp_path / "s.msec", [identities.x25519], progress=False)
    assert _files_under(tmp_path) == {str(dest)}  # a generator, no plaintext file, no temporary left
    out = tmp_path / "out"
    decrypt_study(dest, out, identity=identities.x25519, purpose="research")
    got = sorted(p.read_bytes() for p in out.rglob("*.dcm"))
    assert got == sorted(expected)


def test_bytes_and_datasets_mix(tmp_path, identities):
    a, b = synthesize_datasets(2, rows=16, columns=16)
    dest = encrypt_datasets([dataset_bytes(a), b], tmp_path / "m.msec", [identities.x25519], progress=False)
    out = tmp_path / "out"
    decrypt_study(dest, out, identity=identities.x25519, purpose="research")
    assert len(list(out.rglob("*.dcm"))) == 2


@pytest.mark.parametrize("case", ["two studies", "duplicate", "not dicom"])
def test_bad_instances_are_refused_in_one_line_and_leave_nothing(case, tmp_path, identities):
    one = synthesize_datasets(2, rows=16, columns=16)
    if case == "two studies":
        items = [*one, pydicom.dcmread(get_testdata_file("CT_small.dcm"))]
        message = "instance 3: belongs to another study"
    elif case == "duplicate":
        items = [one[0], one[1], one[0]]
        message = "instance 3: same SOP Instance UID as instance 1"
    else:
        items = [one[0], b"not a DICOM file at all"]
        message = "instance 2: not a"
    with pytest.raises(SourceError, match=message) as info:
        encrypt_datasets(items, tmp_path / "bad.msec", [identities.x25519], progress=False)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
