"""The committed format vectors decode to the listed results, and regenerate byte for byte."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

import medsec_nb
from medsec_nb.container.header import read_header

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
SPEC = json.loads((VECTORS / "vectors.json").read_text())


def _maker():
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("vec", SPEC["vectors"], ids=lambda v: v["name"])
def test_vector_decodes(vec):
    path = VECTORS / vec["file"]
    unlock = vec["unlock"]
    kwargs = (
        {"passphrase": unlock["passphrase"]}
        if unlock["type"] == "passphrase"
        else {"identity": _maker().identity_from(unlock)}
    )
    info = medsec_nb.inspect_study(path)
    assert info.version == SPEC["format_version"] == 1
    assert info.recipients == vec["expect"]["recipients"]
    assert info.signer == vec["expect"]["signer"]
    header, _ = read_header(path)
    assert header.body.chunk_size == vec["chunk_size"]
    with medsec_nb.open_study(path, **kwargs) as study:
        assert study.signer == vec["expect"]["signer"]
        assert study.instance_count == vec["expect"]["instance_count"]
        box = study._box
        for i, want in enumerate(vec["expect"]["instances"]):
            data = box.file_bytes(i)
            assert len(data) == want["size"]
            assert hashlib.sha256(data).hexdigest() == want["sha256"]
            assert box.entries[i]["path"] == want["path"]


def test_cohort_transport_vector():
    """A worker holding the vector's key unwraps the transport and unseals the study key."""
    from medsec_nb.cohort.transport import transport_key, unseal

    vec = json.loads((VECTORS / "cohort_transport.json").read_text())
    worker = _maker().identity_from(vec["worker"])
    public = (vec["expect"]["tid"], vec["expect"]["stanzas"])
    key = transport_key(public, worker)
    assert unseal(key, public, vec["url"], vec["expect"]["sealed"][worker.key_id]).hex() == vec["study_key"]


def test_vectors_regenerate_identically(tmp_path):
    _maker().main(tmp_path)
    assert (tmp_path / "cohort_transport.json").read_text() == (VECTORS / "cohort_transport.json").read_text()
    for vec in SPEC["vectors"]:
        assert (tmp_path / vec["file"]).read_bytes() == (VECTORS / vec["file"]).read_bytes(), vec["name"]
        assert hashlib.sha256((VECTORS / vec["file"]).read_bytes()).hexdigest() == vec["container_sha256"]
