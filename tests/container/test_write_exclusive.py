"""``overwrite=False`` is exclusive: a file at the destination, or one that appears at any moment before the
finished container is put in place, is never replaced (atomic_file links instead of renaming)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medsec_nb.container.sources import iter_memory_instances
from medsec_nb.container.writer import write_container
from medsec_nb.core import atomic
from medsec_nb.core.atomic import atomic_file
from medsec_nb.core.errors import OutputError
from medsec_nb.testdata import synthesize_datasets


def _appear_just_before(monkeypatch: pytest.MonkeyPatch, dest: Path) -> None:
    """Make ``dest`` appear the instant before atomic_file puts its file there: after every check it makes."""
    for name in ("replace", "link"):
        real = getattr(os, name)

        def placing(src, dst, *args, _real=real, **kwargs):
            if Path(dst) == dest and not dest.exists():
                dest.write_bytes(b"appeared")
            return _real(src, dst, *args, **kwargs)

        monkeypatch.setattr(atomic.os, name, placing)


def test_atomic_file_never_replaces_a_file_that_appears_before_the_rename(tmp_path, monkeypatch):
    dest = tmp_path / "out.bin"
    _appear_just_before(monkeypatch, dest)
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_file(dest, overwrite=False) as fh:
            fh.write(b"mine")
    assert dest.read_bytes() == b"appeared" and os.listdir(tmp_path) == ["out.bin"]
    dest.unlink()
    with atomic_file(dest, overwrite=True) as fh:  # the default still replaces (what rewrap relies on)
        fh.write(b"mine")
    assert dest.read_bytes() == b"mine" and os.listdir(tmp_path) == ["out.bin"]


def test_write_container_overwrite_false_keeps_a_file_that_appears_while_writing(tmp_path, identities):
    dest = tmp_path / "s.msec"
    datasets = synthesize_datasets(3, rows=16, columns=16)

    def appearing():
        for k, inst in enumerate(iter_memory_instances(datasets)):
            if k == 1:  # mid-write: the temporary file exists, the container is not in place yet
                dest.write_bytes(b"someone else's")
            yield inst

    with pytest.raises(OutputError, match=r"s\.msec: already exists \(refusing to overwrite\); nothing was written"):
        write_container(dest, appearing(), None, [identities.x25519], progress=False, overwrite=False)
    assert dest.read_bytes() == b"someone else's" and os.listdir(tmp_path) == ["s.msec"]
    write_container(dest, iter_memory_instances(datasets), None, [identities.x25519], progress=False)
    assert dest.read_bytes()[:4] != b"some"  # existing callers (no keyword) still replace
