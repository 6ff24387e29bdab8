"""Shared, session-scoped test material: real DICOM files, keys generated at test time, containers.

Nothing here is mocked: sources are pydicom's bundled (fake-patient) test files or series
synthesized from them with :func:`medsec_nb.testdata.synthesize_series`, keys are generated
per session, containers are written by :func:`medsec_nb.encrypt_study`.

The session containers are shared between tests and must never be modified in place:
copy one (``shutil.copyfile``) before altering it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

import medsec_nb
from medsec_nb.testdata import synthesize_series

# The purpose of use the tests open studies for (the API requires one; tests of that
# requirement clear it). Data folder isolation is in the repository's root conftest.py.
os.environ["MEDSEC_PURPOSE"] = "HRESCH"

#: A passphrase distinctive enough that finding it in an error text cannot be a coincidence.
PASSPHRASE = "correct horse battery staple 7Qz!x"
#: Fast scrypt for tests (the reader accepts down to 2^10; the writer defaults to 2^17).
FAST_LOG_N = 10
#: Small chunks so that the synthesized slices span several chunks (64 x 80 int16 = 10240 bytes:
#: two full chunks and a partial last one).
SMALL_CHUNK = 4096


@dataclass(frozen=True)
class Identities:
    x25519: medsec_nb.Identity
    p256: medsec_nb.Identity
    rsa3072: medsec_nb.Identity
    signer: medsec_nb.Identity  # ed25519 producer key
    other_x25519: medsec_nb.Identity  # never a recipient of anything below
    other_p256: medsec_nb.Identity  # never a recipient of anything below
    other_signer: medsec_nb.Identity  # an ed25519 key that signed nothing below
    p256_signer: medsec_nb.Identity  # ECDSA P-256 producer key

    def all(self) -> list[medsec_nb.Identity]:
        return [
            self.x25519,
            self.p256,
            self.rsa3072,
            self.signer,
            self.other_x25519,
            self.other_p256,
            self.other_signer,
            self.p256_signer,
        ]


@dataclass(frozen=True)
class Source:
    """A study folder on disk and the files in it."""

    folder: Path
    files: list[Path]


@pytest.fixture
def widget_comm():
    """ipywidgets' test comm: widgets are made and talk as in a kernel, and the messages they send
    can be inspected (``widget.comm.messages``)."""
    from ipywidgets.widgets.tests.utils import setup_test_comm, teardown_test_comm

    setup_test_comm()
    yield
    teardown_test_comm()


@pytest.fixture(scope="session")
def identities() -> Identities:
    g = medsec_nb.generate_identity
    return Identities(
        x25519=g("x25519"),
        p256=g("p256"),
        rsa3072=g("rsa3072"),
        signer=g("ed25519"),
        other_x25519=g("x25519"),
        other_p256=g("p256"),
        other_signer=g("ed25519"),
        p256_signer=g("p256"),
    )


@pytest.fixture(scope="session")
def series_source(tmp_path_factory) -> Source:
    """Six CT slices of 64 x 80 (CT_small as template), one study and series; read-only for tests."""
    folder = tmp_path_factory.mktemp("series") / "CT_STUDY"
    files = synthesize_series(folder, n_slices=6, rows=64, columns=80)
    return Source(folder, sorted(files))


@pytest.fixture(scope="session")
def signed_container(tmp_path_factory, series_source, identities) -> Path:
    """The 6-slice series encrypted to x25519, p256 and rsa3072 recipients, signed by the ed25519
    producer key, with 4096-byte chunks (every pixel segment has three chunks)."""
    dest = tmp_path_factory.mktemp("signed") / "study.msec"
    medsec_nb.encrypt_study(
        series_source.folder,
        dest,
        recipients=[identities.x25519, identities.p256, identities.rsa3072],
        signer=identities.signer,
        chunk_size=SMALL_CHUNK,
        progress=False,
    )
    return dest


@pytest.fixture(scope="session")
def other_key_container(tmp_path_factory, series_source, identities) -> Path:
    """The same series, same recipients and chunk size, but (necessarily) another study key."""
    dest = tmp_path_factory.mktemp("other") / "study.msec"
    medsec_nb.encrypt_study(
        series_source.folder,
        dest,
        recipients=[identities.x25519, identities.p256, identities.rsa3072],
        signer=identities.signer,
        chunk_size=SMALL_CHUNK,
        progress=False,
    )
    return dest


@pytest.fixture(scope="session")
def passphrase_container(tmp_path_factory, series_source) -> Path:
    """The 6-slice series protected by :data:`PASSPHRASE` (scrypt N=2^10), unsigned."""
    dest = tmp_path_factory.mktemp("pass") / "study.msec"
    medsec_nb.encrypt_study(series_source.folder, dest, passphrase=PASSPHRASE, scrypt_log_n=FAST_LOG_N, progress=False)
    return dest


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory) -> Source:
    """Two real, small instances of one study: pydicom's rtplan.dcm (2672 bytes, no pixel data,
    copied byte for byte) and one 8 x 8 MR slice synthesized from MR_small.dcm and moved into
    rtplan's study."""
    base = tmp_path_factory.mktemp("tiny")
    folder = base / "TINY_STUDY"
    folder.mkdir()
    rtplan = folder / "rtplan.dcm"
    shutil.copyfile(get_testdata_file("rtplan.dcm"), rtplan)
    study_uid = pydicom.dcmread(rtplan).StudyInstanceUID
    made = synthesize_series(base / "made", n_slices=1, template=get_testdata_file("MR_small.dcm"), rows=8, columns=8)
    ds = pydicom.dcmread(made[0])
    ds.StudyInstanceUID = study_uid
    image = folder / "image.dcm"
    ds.save_as(image, enforce_file_format=True)
    return Source(folder, sorted([rtplan, image]))


@pytest.fixture(scope="session")
def tiny_container(tmp_path_factory, tiny_source, identities) -> Path:
    """About 7 KB: x25519 + p256 stanzas, an ed25519 signature, two instances (one with pixels).
    Small enough to flip a bit in every byte."""
    dest = tmp_path_factory.mktemp("tinybox") / "tiny.msec"
    medsec_nb.encrypt_study(
        tiny_source.folder,
        dest,
        recipients=[identities.x25519, identities.p256],
        signer=identities.signer,
        progress=False,
    )
    return dest


def _private_strings(identity: medsec_nb.Identity) -> list[str]:
    """Textual forms of a private key that must never appear in an error."""
    key = identity.key
    der = key.export_key(format="DER")
    pem = key.export_key(format="PEM")
    pem = pem.decode("ascii") if isinstance(pem, bytes) else pem
    out = [der.hex(), der.hex().upper()]
    # the private scalar alone (x25519/ed25519 seed, P-256 / RSA d)
    seed = getattr(key, "seed", None)
    if seed:
        out += [seed.hex(), seed.hex().upper()]
    d = getattr(key, "d", None)
    if d is not None:
        out.append(format(int(d), "x"))
    # every full base64 line of the PEM body
    out += [line for line in pem.splitlines() if line and not line.startswith("-----") and len(line) >= 40]
    return out


@pytest.fixture(scope="session")
def secrets(identities) -> list[str]:
    """The passphrase and every private key of the session, in the forms they could leak in."""
    out = [PASSPHRASE, PASSPHRASE.encode("utf-8").hex(), repr(PASSPHRASE.encode("utf-8"))]
    for ident in identities.all():
        out += _private_strings(ident)
    return out


def study_key_strings(path, identity) -> list[str]:
    """Hex forms of the study key of ``path`` and of the keys derived from it (test helper)."""
    from medsec_nb.container._reader import open_container
    from medsec_nb.container.format import KeySchedule

    with open_container(path, identity=identity, _keep_study_key=True) as box:
        key = box.study_key
        ks = KeySchedule.derive(key, box.header.body.file_id)
    return [k.hex() for k in (key, ks.mac_key, ks.payload_key)] + [
        k.hex().upper() for k in (key, ks.mac_key, ks.payload_key)
    ]


@pytest.fixture(scope="session")
def assert_clean_error(secrets):
    """``check(exc, path, extra=())``: the error names ``path`` and no secret appears in its
    ``str``, ``repr`` or formatted traceback (including chained exceptions)."""
    import traceback

    def check(exc: BaseException, path, extra=()) -> None:
        text = str(exc)
        assert str(path) in text, f"error does not name the file {path}: {text!r}"
        blobs = [text, repr(exc), "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))]
        for secret in list(secrets) + list(extra):
            for blob in blobs:
                assert secret not in blob, "a secret appears in the error text"

    return check


def insider_corrupt_chunk(path, identity, instance: int, chunk: int = -1) -> bytes:
    """Bytes of ``path`` with one chunk of instance ``instance``'s pixel segment corrupted in a way
    only someone holding the study key can produce: the segment's SHA-256 in the index, the index
    hash in the body and the header MAC are all recomputed (the producer signature, which an
    insider cannot redo, is dropped). Only the chunk's GCM tag still tells. Used to check that a
    failure in the middle of decryption leaves no output and returns no partial pixels."""
    import dataclasses

    from Crypto.Hash import SHA256

    from medsec_nb.container._reader import open_container
    from medsec_nb.container.format import TAG_LEN, KeySchedule, canonical_json, encode_header, index_segment
    from medsec_nb.container.segments import encrypt_segment

    with open_container(path, identity=identity, _keep_study_key=True) as box:
        h = box.header
        entries = [dict(e) for e in box.entries]
        ks = KeySchedule.derive(box.study_key, h.body.file_id)
    fid, cs = h.body.file_id, h.body.chunk_size
    data = bytearray(Path(path).read_bytes())
    loc = entries[instance]["pixels"]
    start = h.length + loc["offset"]
    chunk_starts = list(range(start, start + loc["length"], cs + TAG_LEN))
    data[chunk_starts[chunk] + 7] ^= 0x40
    seg = bytes(data[start : start + loc["length"]])
    entries[instance]["pixels"] = dict(loc, sha256=SHA256.new(seg).hexdigest())
    index_ct, index_hash = encrypt_segment(
        ks.payload_key, fid, index_segment(), canonical_json({"instances": entries}), cs
    )
    assert len(index_ct) == h.body.index_length
    istart = h.length + h.body.index_offset
    data[istart : istart + len(index_ct)] = index_ct
    raw = encode_header(dataclasses.replace(h.body, index_sha256=index_hash), h.stanzas, b"")
    return raw + ks.header_mac(raw) + bytes(data[h.length :])


# ---------------------------------------------------------------- no identifiers in any audit record
#
# After every test, the records appended to any audit log under the session's temporary folder
# or the test data folder are scanned (issue 18, item 5): no DICOM UID other than the record's own
# study.study_uid, and no patient value of pydicom's test files (names, IDs, birth dates), may
# appear anywhere in a record. Error paths reach records through ``detail.reason``.

_UID_IN_TEXT = re.compile(r"(?<![\w.])[12](?:\.(?:0|[1-9]\d*)){3,}(?![\w.])")
_PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
)
_STANDARD_UIDS = "1.2.840.10008."  # DICOM's own UIDs (SOP classes, transfer syntaxes): not identifying
_NOT_IDENTIFYING = {"anonymized", "anonymous"}
_scanned: dict[Path, int] = {}
_patient_values: list[re.Pattern] = []


def _test_patient_values() -> list[re.Pattern]:
    """Patient values of every pydicom test file (at least 5 characters), each as a
    case-insensitive pattern that matches only the whole value (not inside a hex digest)."""
    if not _patient_values:
        import warnings

        import pydicom.data

        found = set()
        for f in (Path(pydicom.data.__file__).parent / "test_files").rglob("*"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(f, stop_before_pixels=True, force=True, specific_tags=list(_PATIENT_KEYWORDS))
            except Exception:  # not a DICOM file (pydicom also ships other test data)
                continue
            for kw in _PATIENT_KEYWORDS:
                value = ds.get(kw)
                for v in value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value]:
                    text = str(v or "").strip()
                    if len(text) >= 5 and text.lower() not in _NOT_IDENTIFYING:
                        found.add(text)
        _patient_values.extend(re.compile(rf"(?<![0-9a-z]){re.escape(v)}(?![0-9a-z])", re.I) for v in sorted(found))
    return _patient_values


def _new_records(path: Path) -> list[tuple[dict, str]]:
    try:
        if not path.is_file():
            return []
        size = path.stat().st_size
    except OSError:
        return []
    start = _scanned.get(path, 0)
    if size < start:  # rewritten (tamper tests): read it again
        start = 0
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(size - start)
    end = data.rfind(b"\n") + 1
    _scanned[path] = start + end
    out = []
    for line in data[:end].splitlines():
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):  # not a record (hostile-input tests write such lines)
            continue
        if isinstance(rec, dict) and "who" in rec and "seq" in rec:
            out.append((rec, line.decode("utf-8", "replace")))
    return out


def identifiers_in_record(rec: dict, line: str) -> list[str]:
    """What in an audit record is a UID other than its study's, or a test patient's value."""
    study_uid = (rec.get("study") or {}).get("study_uid") if isinstance(rec.get("study"), dict) else None
    found = [f"UID {u}" for u in _UID_IN_TEXT.findall(line) if u != study_uid and not u.startswith(_STANDARD_UIDS)]
    found += [f"patient value {p.pattern!r}" for p in _test_patient_values() if p.search(line)]
    return found


@pytest.fixture(autouse=True)
def no_identifiers_in_audit_records(tmp_path_factory):
    yield
    roots = [tmp_path_factory.getbasetemp(), Path(os.environ["MEDSEC_DATA_DIR"])]
    problems = []
    for root in roots:
        for path in root.rglob("*.jsonl"):
            for rec, line in _new_records(path):
                hits = identifiers_in_record(rec, line)
                if hits:
                    problems.append(
                        f"{path}: record {rec.get('seq')} ({rec.get('action')}, "
                        f"{rec.get('outcome')}): {', '.join(hits)}"
                    )
    assert not problems, "identifiers in audit records:\n" + "\n".join(problems[:10])
