"""A container that was altered in any way is rejected with a clear error and yields no plaintext.

Issue 2, "Bad input": a flipped bit anywhere, a truncated or extended file, swapped chunks
or instances, an unknown version, a file that is not a container, wrong keys: each gives one
clear message naming the file, never partial plaintext. The exhaustive test flips a bit in
every byte of a small real container; hypothesis checks that any single-byte change is
rejected by ``verify_study`` and that a full read of a changed container never returns data
that differs from the original.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import medsec_nb
from conftest import PASSPHRASE, SMALL_CHUNK, insider_corrupt_chunk, study_key_strings
from medsec_nb import (
    AuthenticationError,
    FormatError,
    MedsecError,
    NoMatchingRecipientError,
    SignatureError,
    WrongPassphraseError,
    open_study,
    verify_study,
)
from medsec_nb.container._reader import open_container
from medsec_nb.container.format import (
    BODY_LEN,
    MAC_LEN,
    PREFIX_LEN,
    TAG_LEN,
    KeySchedule,
    canonical_json,
    encode_header,
)
from medsec_nb.container.header import read_header

HYPOTHESIS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------- helpers


def _copy(src: Path, folder: Path, name: str = "altered.msec") -> Path:
    dest = folder / name
    shutil.copyfile(src, dest)
    return dest


def _write(folder: Path, data: bytes, name: str = "altered.msec") -> Path:
    dest = folder / name
    dest.write_bytes(data)
    return dest


def _layout(path: Path, identity) -> tuple[object, list[dict]]:
    """(header, index entries) of an intact container, read with the key (test setup only)."""
    with open_container(path, identity=identity) as box:
        return box.header, [dict(e) for e in box.entries]


def _segment_span(header, loc: dict) -> tuple[int, int]:
    """Absolute (start, end) of a segment in the file."""
    start = header.length + loc["offset"]
    return start, start + loc["length"]


def _chunk_spans(header, loc: dict) -> list[tuple[int, int]]:
    """Absolute (start, end) of every chunk (ciphertext + tag) of a segment."""
    cs = header.body.chunk_size
    start, end = _segment_span(header, loc)
    spans = []
    while start < end:
        stop = min(start + cs + TAG_LEN, end)
        spans.append((start, stop))
        start = stop
    return spans


def _signature_hex_span(data: bytes, header) -> tuple[int, int]:
    """Absolute (start, end) of the hex signature value inside the header's signature block."""
    sig_block_start = PREFIX_LEN + BODY_LEN + 4 + len(canonical_json(header.stanzas)) + 4
    block = data[sig_block_start : sig_block_start + len(header.signature_raw)]
    assert block == header.signature_raw
    k = block.index(b'"sig":"') + len(b'"sig":"')
    return sig_block_start + k, sig_block_start + k + 128


def _remac(path: Path, identity, *, stanzas=None, signature_raw=None, body=None) -> bytes:
    """What an insider who holds the study key (any recipient) can produce: the container with a
    rewritten header (stanzas, signature block, body) and a correct header MAC."""
    with open_container(path, identity=identity, _keep_study_key=True) as box:
        h = box.header
        ks = KeySchedule.derive(box.study_key, h.body.file_id)
    data = path.read_bytes()
    raw = encode_header(
        body if body is not None else h.body,
        stanzas if stanzas is not None else h.stanzas,
        signature_raw if signature_raw is not None else h.signature_raw,
    )
    return raw + ks.header_mac(raw) + data[h.length :]


def _flip_hex_digit(text: bytes, index: int) -> bytes:
    """Replace the hex digit at ``index`` by another valid lowercase hex digit."""
    digit = chr(text[index])
    new = "0" if digit != "0" else "1"
    return text[:index] + new.encode() + text[index + 1 :]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A module-wide scratch folder (hypothesis tests cannot use the function-scoped tmp_path)."""
    return tmp_path_factory.mktemp("tamper")


@pytest.fixture(scope="module")
def tiny_reference(tiny_container, identities) -> dict:
    """Everything a full read of the intact tiny container returns, keyed by series UID."""
    ref = {}
    with open_study(tiny_container, identities.x25519) as study:
        for s in study.series:
            instances = [s[i] for i in range(len(s))]
            images = all("PixelData" in ds for ds in instances)
            ref[s.uid] = {
                "instances": instances,
                "headers": [s.header(i) for i in range(len(s))],
                "volume": s.volume(progress=False) if images else None,
            }
    return ref


def _full_read(path: Path, identity, reference: dict) -> None:
    """Open and read everything; every value returned must equal the intact container's.

    Returns normally only when every read succeeded (which, for an altered file, is a failure
    of the test).
    """
    with open_study(path, identity) as study:
        assert [s.uid for s in study.series] == list(reference), "altered container returned another index"
        for s in study.series:
            want = reference[s.uid]
            assert len(s) == len(want["instances"])
            for i in range(len(s)):
                h = s.header(i)
                assert h == want["headers"][i], "altered container returned altered metadata"
                ds = s[i]
                assert ds == want["instances"][i], "altered container returned an altered instance"
                if "PixelData" in want["instances"][i]:
                    assert ds.PixelData == want["instances"][i].PixelData
            if want["volume"] is not None:
                v = s.volume(progress=False)
                assert v.dtype == want["volume"].dtype and np.array_equal(v, want["volume"]), (
                    "altered container returned altered pixels"
                )


# --------------------------------------------------------------------------- sanity


def test_intact_containers_verify(tiny_container, signed_container, passphrase_container, identities):
    for ident in (identities.x25519, identities.p256, identities.rsa3072):
        rep = verify_study(signed_container, ident)
        assert rep.instance_count == 6 and rep.key_id == ident.key_id
        assert rep.signer == identities.signer.key_id
        assert rep.bytes_authenticated == signed_container.stat().st_size
    rep = verify_study(tiny_container, identities.x25519, require_signer=identities.signer.public)
    assert rep.instance_count == 2 and rep.bytes_authenticated == tiny_container.stat().st_size
    rep = verify_study(passphrase_container, passphrase=PASSPHRASE)
    assert rep.signer is None and rep.key_id == "passphrase"


# --------------------------------------------------------------------------- exhaustive


def _flip_scan(path: Path, data: bytes, positions, bits_of, identity) -> list[tuple[int, int, str]]:
    """Flip bits in place one at a time; return every (position, bit, outcome) not rejected."""
    bad = []
    fd = os.open(path, os.O_RDWR)
    try:
        for pos in positions:
            for bit in bits_of(pos):
                os.pwrite(fd, bytes([data[pos] ^ (1 << bit)]), pos)
                try:
                    verify_study(path, identity)
                except MedsecError:
                    pass
                except Exception as exc:
                    bad.append((pos, bit, f"raised {type(exc).__name__}: {exc}"))
                else:
                    bad.append((pos, bit, "ACCEPTED"))
                finally:
                    os.pwrite(fd, data[pos : pos + 1], pos)
    finally:
        os.close(fd)
    return bad


@pytest.mark.slow
def test_bit_flip_in_every_byte_is_rejected(tiny_container, identities, tmp_path):
    """For every byte of a real container, flipping one bit (bit ``pos % 8``) is rejected by
    verify_study with a MedsecError."""
    data = tiny_container.read_bytes()
    work = _write(tmp_path, data)
    verify_study(work, identities.x25519)
    bad = _flip_scan(work, data, range(len(data)), lambda pos: [pos % 8], identities.x25519)
    assert not bad, f"{len(bad)} of {len(data)} bit flips not rejected, first ones: {bad[:10]}"
    assert work.read_bytes() == data


@pytest.mark.slow
def test_every_bit_of_the_header_is_checked(tiny_container, identities, tmp_path):
    """All eight bits of every header byte (prefix, body, stanzas, signature, MAC)."""
    data = tiny_container.read_bytes()
    header, _ = read_header(tiny_container)
    work = _write(tmp_path, data)
    bad = _flip_scan(
        work, data, range(header.length), lambda pos: [b for b in range(8) if b != pos % 8], identities.x25519
    )
    assert not bad, f"{len(bad)} header bit flips not rejected, first ones: {bad[:10]}"


# --------------------------------------------------------------------------- property based

_CONTAINERS = st.sampled_from(["tiny", "signed"])


@HYPOTHESIS
@given(which=_CONTAINERS, where=st.floats(0, 1, exclude_max=True), delta=st.integers(1, 255))
def test_any_single_byte_change_is_rejected_by_verify(
    which, where, delta, tiny_container, signed_container, identities, workdir
):
    src = tiny_container if which == "tiny" else signed_container
    data = bytearray(src.read_bytes())
    pos = int(where * len(data))
    data[pos] = (data[pos] + delta) % 256  # a different value, never the same
    path = _write(workdir, bytes(data), "byte.msec")
    with pytest.raises(MedsecError):
        verify_study(path, identities.x25519)


@HYPOTHESIS
@given(pos=st.integers(0, 1500), value=st.integers(0, 255))
def test_any_single_byte_change_in_the_header_region_is_rejected(pos, value, tiny_container, identities, workdir):
    """Biased towards the start of the file, where the parser does most of its work."""
    data = bytearray(tiny_container.read_bytes())
    if data[pos] == value:
        value ^= 0xFF
    data[pos] = value
    path = _write(workdir, bytes(data), "header.msec")
    with pytest.raises(MedsecError):
        verify_study(path, identities.x25519)


@HYPOTHESIS
@given(where=st.floats(0, 1), insert=st.booleans(), value=st.integers(0, 255))
def test_inserting_or_deleting_one_byte_is_rejected(where, insert, value, tiny_container, identities, workdir):
    data = bytearray(tiny_container.read_bytes())
    pos = min(int(where * len(data)), len(data) - (0 if insert else 1))
    if insert:
        data.insert(pos, value)
    else:
        del data[pos]
    path = _write(workdir, bytes(data), "indel.msec")
    with pytest.raises(MedsecError):
        verify_study(path, identities.x25519)


@HYPOTHESIS
@given(where=st.floats(0, 1, exclude_max=True), delta=st.integers(1, 255))
def test_full_read_of_a_changed_container_never_returns_altered_data(
    where, delta, tiny_container, identities, tiny_reference, workdir
):
    """open_study + every header + every instance + every volume: something must raise, and
    whatever is returned before that must be the authentic data (random access is allowed to
    serve instances the change did not touch)."""
    data = bytearray(tiny_container.read_bytes())
    pos = int(where * len(data))
    data[pos] = (data[pos] + delta) % 256
    path = _write(workdir, bytes(data), "read.msec")
    with pytest.raises(MedsecError):
        _full_read(path, identities.x25519, tiny_reference)


def test_full_read_of_the_intact_container_succeeds(tiny_container, identities, tiny_reference):
    _full_read(tiny_container, identities.x25519, tiny_reference)


# --------------------------------------------------------------------------- truncated / extended


def _truncation_points(path: Path, identity) -> dict[str, int]:
    header, entries = _layout(path, identity)
    size = path.stat().st_size
    pix0 = _chunk_spans(header, entries[0]["pixels"])
    return {
        "empty": 0,
        "inside_magic": 5,
        "after_prefix": PREFIX_LEN,
        "inside_body": PREFIX_LEN + 40,
        "after_body": PREFIX_LEN + BODY_LEN,
        "inside_stanzas": PREFIX_LEN + BODY_LEN + 100,
        "inside_mac": header.length - MAC_LEN // 2,
        "at_payload": header.length,
        "inside_first_segment": header.length + 100,
        "at_chunk_boundary": pix0[1][0],
        "inside_index": header.length + header.body.index_offset + 10,
        "last_byte": size - 1,
        "last_tag": size - TAG_LEN,
    }


@pytest.mark.parametrize(
    "point",
    [
        "empty",
        "inside_magic",
        "after_prefix",
        "inside_body",
        "after_body",
        "inside_stanzas",
        "inside_mac",
        "at_payload",
        "inside_first_segment",
        "at_chunk_boundary",
        "inside_index",
        "last_byte",
        "last_tag",
    ],
)
def test_truncated_container_is_rejected(point, signed_container, identities, tmp_path, assert_clean_error):
    cut = _truncation_points(signed_container, identities.x25519)[point]
    data = signed_container.read_bytes()
    path = _write(tmp_path, data[:cut])
    extra = study_key_strings(signed_container, identities.x25519)
    for call in (
        lambda: verify_study(path, identities.x25519),
        lambda: open_study(path, identities.p256),
        lambda: medsec_nb.decrypt_study(path, tmp_path / "out", identities.rsa3072, progress=False),
    ):
        with pytest.raises((FormatError, AuthenticationError)) as ei:
            call()
        assert_clean_error(ei.value, path, extra)
    assert not (tmp_path / "out").exists()
    if cut >= read_header(signed_container)[0].length:
        assert "truncated" in str(ei.value)
        assert medsec_nb.inspect_study(path).complete is False


@pytest.mark.parametrize("tail", [b"\x00", b"garbage after the end", bytes(4096 + TAG_LEN), "last_chunk", "index"])
def test_extended_container_is_rejected(tail, signed_container, identities, tmp_path, assert_clean_error):
    data = signed_container.read_bytes()
    header, _ = _layout(signed_container, identities.x25519)
    if tail == "last_chunk":
        tail = data[-(TAG_LEN + 100) :]
    elif tail == "index":  # the whole index appended a second time
        start = header.length + header.body.index_offset
        tail = data[start : start + header.body.index_length]
    path = _write(tmp_path, data + tail)
    with pytest.raises(FormatError) as ei:
        verify_study(path, identities.x25519)
    assert "extended" in str(ei.value)
    assert_clean_error(ei.value, path, study_key_strings(signed_container, identities.x25519))
    with pytest.raises(FormatError):
        open_study(path, identities.rsa3072)
    assert medsec_nb.inspect_study(path).complete is False


# --------------------------------------------------------------------------- reordering and splicing


def _swap(data: bytes, a: tuple[int, int], b: tuple[int, int]) -> bytes:
    assert a[1] - a[0] == b[1] - b[0] and a[1] <= b[0]
    out = bytearray(data)
    out[a[0] : a[1]], out[b[0] : b[1]] = data[b[0] : b[1]], data[a[0] : a[1]]
    return bytes(out)


def test_swapping_two_instances_pixel_segments_is_rejected(signed_container, identities, tmp_path, assert_clean_error):
    header, entries = _layout(signed_container, identities.x25519)
    a, b = _segment_span(header, entries[0]["pixels"]), _segment_span(header, entries[3]["pixels"])
    path = _write(tmp_path, _swap(signed_container.read_bytes(), a, b))
    with pytest.raises(AuthenticationError) as ei:
        verify_study(path, identities.x25519)
    assert_clean_error(ei.value, path, study_key_strings(signed_container, identities.x25519))
    # random access: the two swapped instances fail, every other one is served intact
    with open_study(path, identities.p256) as study, open_study(signed_container, identities.p256) as good:
        s, g = study.series[0], good.series[0]
        swapped = {entries[0]["sop"], entries[3]["sop"]}
        hit = {k for k in range(len(g)) if g.header(k).SOPInstanceUID in swapped}
        assert len(hit) == 2
        for k in range(len(s)):
            if k in hit:
                with pytest.raises(AuthenticationError):
                    s[k]
            else:
                assert s[k] == g[k]
        with pytest.raises(AuthenticationError):
            s.volume(progress=False)


def test_swapping_two_instances_metadata_segments_is_rejected(signed_container, identities, tmp_path):
    header, entries = _layout(signed_container, identities.x25519)
    by_len: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        by_len.setdefault(e["meta"]["length"], []).append(i)
    pair = next(v for v in by_len.values() if len(v) >= 2)
    a, b = (_segment_span(header, entries[i]["meta"]) for i in pair[:2])
    path = _write(tmp_path, _swap(signed_container.read_bytes(), a, b))
    with pytest.raises(AuthenticationError):
        verify_study(path, identities.x25519)
    with open_study(path, identities.x25519) as study, pytest.raises(AuthenticationError):
        for i in range(len(study.series[0])):
            study.series[0].header(i)


@pytest.mark.parametrize("pair", [(0, 1), (1, 2), (0, 2)])
def test_swapping_two_chunks_within_a_segment_is_rejected(
    pair, signed_container, identities, tmp_path, assert_clean_error
):
    header, entries = _layout(signed_container, identities.x25519)
    assert header.body.chunk_size == SMALL_CHUNK
    spans = _chunk_spans(header, entries[2]["pixels"])
    assert len(spans) == 3, "the fixture should give three chunks per pixel segment"
    a, b = spans[pair[0]], spans[pair[1]]
    data = signed_container.read_bytes()
    if a[1] - a[0] == b[1] - b[0]:
        altered = _swap(data, a, b)
    else:  # the last, shorter chunk moves ahead of a full one
        altered = data[: a[0]] + data[b[0] : b[1]] + data[a[1] : b[0]] + data[a[0] : a[1]] + data[b[1] :]
    assert len(altered) == len(data) and altered != data
    path = _write(tmp_path, altered)
    with pytest.raises(AuthenticationError) as ei:
        verify_study(path, identities.x25519)
    assert_clean_error(ei.value, path)


@pytest.mark.parametrize("how", ["overwrite_next", "overwrite_previous", "insert"])
def test_duplicated_chunk_is_rejected(how, signed_container, identities, tmp_path):
    header, entries = _layout(signed_container, identities.x25519)
    spans = _chunk_spans(header, entries[1]["pixels"])
    data = signed_container.read_bytes()
    c0, c1 = spans[0], spans[1]
    if how == "overwrite_next":
        altered = data[: c1[0]] + data[c0[0] : c0[1]] + data[c1[1] :]
    elif how == "overwrite_previous":
        altered = data[: c0[0]] + data[c1[0] : c1[1]] + data[c0[1] :]
    else:
        altered = data[: c1[0]] + data[c0[0] : c0[1]] + data[c1[0] :]
    path = _write(tmp_path, altered)
    with pytest.raises((AuthenticationError, FormatError)) as ei:
        verify_study(path, identities.x25519)
    if how != "insert":
        assert isinstance(ei.value, AuthenticationError)


def test_segment_spliced_from_another_container_is_rejected(
    signed_container, other_key_container, identities, tmp_path, assert_clean_error
):
    """Same source, same recipients, same layout; only the study key differs."""
    h1, e1 = _layout(signed_container, identities.x25519)
    h2, e2 = _layout(other_key_container, identities.x25519)
    d1, d2 = signed_container.read_bytes(), other_key_container.read_bytes()
    for kind in ("pixels", "meta"):
        a, b = _segment_span(h1, e1[2][kind]), _segment_span(h2, e2[2][kind])
        assert a[1] - a[0] == b[1] - b[0]
        path = _write(tmp_path, d1[: a[0]] + d2[b[0] : b[1]] + d1[a[1] :], f"{kind}.msec")
        with pytest.raises(AuthenticationError) as ei:
            verify_study(path, identities.x25519)
        assert_clean_error(ei.value, path)


def test_index_spliced_from_another_container_is_rejected(signed_container, other_key_container, identities, tmp_path):
    h1, _ = _layout(signed_container, identities.x25519)
    h2, _ = _layout(other_key_container, identities.x25519)
    d1, d2 = signed_container.read_bytes(), other_key_container.read_bytes()
    i1 = h1.length + h1.body.index_offset
    i2 = h2.length + h2.body.index_offset
    assert h1.body.index_length == h2.body.index_length  # same source, same layout
    path = _write(tmp_path, d1[:i1] + d2[i2:])
    with pytest.raises(AuthenticationError):
        verify_study(path, identities.x25519)


def test_header_of_another_container_over_this_payload_is_rejected(
    signed_container, other_key_container, identities, tmp_path
):
    """The other header unwraps (same recipients) and authenticates, but commits to another
    study key and index: the payload must not be accepted under it."""
    h1, _ = _layout(signed_container, identities.x25519)
    h2, _ = _layout(other_key_container, identities.x25519)
    d1, d2 = signed_container.read_bytes(), other_key_container.read_bytes()
    path = _write(tmp_path, d2[: h2.length] + d1[h1.length :])
    with pytest.raises((AuthenticationError, FormatError)):
        verify_study(path, identities.x25519)
    with pytest.raises((AuthenticationError, FormatError)):
        _full_read_all(path, identities.x25519)


@pytest.mark.parametrize("chunk", [0, -1])
def test_failed_chunk_returns_no_partial_pixels(chunk, signed_container, identities, tmp_path):
    """Hashes all match (re-sealed by an insider), one GCM tag fails: the instance, the volume
    and the iteration raise; nothing decrypted from the bad segment is returned."""
    _, entries = _layout(signed_container, identities.x25519)
    path = _write(tmp_path, insider_corrupt_chunk(signed_container, identities.x25519, instance=2, chunk=chunk))
    with pytest.raises(AuthenticationError):
        verify_study(path, identities.x25519)
    with open_study(path, identities.p256) as study, open_study(signed_container, identities.p256) as good:
        s, g = study.series[0], good.series[0]
        bad = [g.header(k).SOPInstanceUID for k in range(len(g))].index(entries[2]["sop"])
        for k in range(len(s)):
            assert s.header(k) == g.header(k)  # metadata is intact and served
            if k == bad:
                with pytest.raises(AuthenticationError):
                    s[k]
            else:
                assert s[k] == g[k]
        with pytest.raises(AuthenticationError):
            s.volume(progress=False)
        with pytest.raises(AuthenticationError):
            list(s)


def _full_read_all(path: Path, identity) -> None:
    with open_study(path, identity) as study:
        for s in study.series:
            for i in range(len(s)):
                s[i]
            s.volume(progress=False)


# --------------------------------------------------------------------------- keys and passphrases


def test_wrong_identity_is_refused(signed_container, identities, assert_clean_error):
    extra = study_key_strings(signed_container, identities.x25519)
    for ident in (identities.other_x25519, identities.other_p256, identities.signer):
        for call in (verify_study, open_study):
            with pytest.raises(NoMatchingRecipientError) as ei:
                call(signed_container, ident)
            assert_clean_error(ei.value, signed_container, extra)
            assert ident.key_id in str(ei.value)
    with pytest.raises(NoMatchingRecipientError):
        medsec_nb.decrypt_study(
            signed_container, signed_container.parent / "never", identities.other_x25519, progress=False
        )
    assert not (signed_container.parent / "never").exists()


def test_wrong_passphrase_is_refused(passphrase_container, assert_clean_error):
    for wrong in ("correct horse battery staple 7Qz!y", "wr0ng-Zq9", "CORRECT HORSE BATTERY STAPLE 7QZ!X"):
        for call in (verify_study, open_study):
            with pytest.raises(WrongPassphraseError) as ei:
                call(passphrase_container, passphrase=wrong)
            assert_clean_error(ei.value, passphrase_container, [wrong])


def test_passphrase_for_key_container_and_key_for_passphrase_container(
    signed_container, passphrase_container, identities, assert_clean_error
):
    with pytest.raises(NoMatchingRecipientError) as ei:
        verify_study(signed_container, passphrase=PASSPHRASE)
    assert_clean_error(ei.value, signed_container)
    with pytest.raises(NoMatchingRecipientError) as ei:
        verify_study(passphrase_container, identities.x25519)
    assert_clean_error(ei.value, passphrase_container)


def _alter_stanza(data: bytes, header, kid_or_type: str, field: str) -> bytes:
    """Change one hex digit of ``field`` in the stanza whose kid (or type) is given, keeping
    valid JSON, valid hex and the same length."""
    st_start = PREFIX_LEN + BODY_LEN + 4
    raw = canonical_json(header.stanzas)
    assert data[st_start : st_start + len(raw)] == raw
    stanzas = json.loads(raw)
    for s in stanzas:
        if s.get("kid") == kid_or_type or s.get("type") == kid_or_type:
            s[field] = _flip_hex_digit(s[field].encode(), len(s[field]) // 2).decode()
            break
    else:
        raise AssertionError(f"no stanza {kid_or_type}")
    new = canonical_json(stanzas)
    assert len(new) == len(raw) and new != raw
    return data[:st_start] + new + data[st_start + len(raw) :]


@pytest.mark.parametrize(
    "who,field,opener",
    [
        ("x25519", "wrapped", "x25519"),
        ("x25519", "epk", "x25519"),
        ("p256", "wrapped", "p256"),
        ("p256", "epk", "p256"),
        ("rsa3072", "wrapped", "rsa3072"),
        ("p256", "wrapped", "x25519"),  # another recipient's stanza: caught by the header MAC
        ("rsa3072", "wrapped", "p256"),
    ],
)
def test_altered_recipient_stanza_is_rejected(
    who, field, opener, signed_container, identities, tmp_path, assert_clean_error
):
    header, _ = _layout(signed_container, identities.x25519)
    kid = getattr(identities, who).key_id
    path = _write(tmp_path, _alter_stanza(signed_container.read_bytes(), header, kid, field))
    with pytest.raises(AuthenticationError) as ei:
        verify_study(path, getattr(identities, opener))
    assert_clean_error(ei.value, path, study_key_strings(signed_container, identities.x25519))


@pytest.mark.parametrize("field", ["salt", "wrapped"])
def test_altered_passphrase_stanza_is_rejected(field, passphrase_container, tmp_path, assert_clean_error):
    header, _ = read_header(passphrase_container)
    path = _write(tmp_path, _alter_stanza(passphrase_container.read_bytes(), header, "scrypt", field))
    with pytest.raises((WrongPassphraseError, AuthenticationError)) as ei:
        verify_study(path, passphrase=PASSPHRASE)
    assert_clean_error(ei.value, path)


# --------------------------------------------------------------------------- not a container / version


@pytest.mark.parametrize("version", [0, 2, 3, 256, 65535])
def test_unknown_version_is_refused(version, tiny_container, identities, tmp_path, assert_clean_error):
    data = bytearray(tiny_container.read_bytes())
    data[8:10] = version.to_bytes(2, "big")
    path = _write(tmp_path, bytes(data))
    for call in (lambda: verify_study(path, identities.x25519), lambda: medsec_nb.inspect_study(path)):
        with pytest.raises(FormatError) as ei:
            call()
        assert "version" in str(ei.value) and str(version) in str(ei.value)
        assert_clean_error(ei.value, path)


@pytest.mark.parametrize("content", ["empty", "text", "dicom", "zeros", "magic_only", "gzip"])
def test_not_a_container_is_refused(content, identities, tmp_path, assert_clean_error):
    from pydicom.data import get_testdata_file

    data = {
        "empty": b"",
        "text": b"this is a plain text file, not a medsec container\n",
        "dicom": Path(get_testdata_file("CT_small.dcm")).read_bytes(),
        "zeros": bytes(4096),
        "magic_only": b"\x89MSEC\r\n\x1a",
        "gzip": b"\x1f\x8b\x08\x00" + bytes(100),
    }[content]
    path = _write(tmp_path, data, "not_a_container.msec")
    for call in (
        lambda: verify_study(path, identities.x25519),
        lambda: open_study(path, passphrase=PASSPHRASE),
        lambda: medsec_nb.inspect_study(path),
    ):
        with pytest.raises(FormatError) as ei:
            call()
        assert_clean_error(ei.value, path)


def test_missing_container_and_folder_give_clear_errors(identities, tmp_path):
    with pytest.raises(MedsecError) as ei:
        verify_study(tmp_path / "nope.msec", identities.x25519)
    assert str(tmp_path / "nope.msec") in str(ei.value)
    with pytest.raises(MedsecError) as ei:
        verify_study(tmp_path, identities.x25519)
    assert str(tmp_path) in str(ei.value)


# --------------------------------------------------------------------------- signatures


def test_tampered_signature_is_rejected(signed_container, identities, tmp_path, assert_clean_error):
    """Without the study key the header MAC catches it; an insider (a recipient, who can
    recompute the MAC) is caught by the signature itself."""
    data = signed_container.read_bytes()
    header, _ = read_header(signed_container)
    a, _b = _signature_hex_span(data, header)
    outsider = _write(tmp_path, _flip_hex_digit(data, a + 10), "outsider.msec")
    with pytest.raises((AuthenticationError, SignatureError)) as ei:
        verify_study(outsider, identities.x25519)
    assert_clean_error(ei.value, outsider)

    sig = json.loads(header.signature_raw)
    sig["sig"] = _flip_hex_digit(sig["sig"].encode(), 10).decode()
    insider = _write(
        tmp_path, _remac(signed_container, identities.x25519, signature_raw=canonical_json(sig)), "insider.msec"
    )
    for call in (lambda: verify_study(insider, identities.p256), lambda: open_study(insider, identities.x25519)):
        with pytest.raises(SignatureError) as ei:
            call()
        assert_clean_error(ei.value, insider, study_key_strings(signed_container, identities.x25519))
    assert medsec_nb.inspect_study(insider).signature_valid is False


def _insider_forgery(path: Path, identity, old: bytes, new: bytes, *, keep_signature: bool = True) -> bytes:
    """What a recipient (who holds the study key) can do without the producer's signing key:
    rewrite instance 0's metadata, re-encrypt it, re-encrypt the index with the new segment
    hash, put the new index hash in the body and re-MAC the header. Everything authenticates
    except the producer signature over the body."""
    import dataclasses

    from medsec_nb.container.format import index_segment, meta_segment
    from medsec_nb.container.segments import encrypt_segment

    with open_container(path, identity=identity, _keep_study_key=True) as box:
        h = box.header
        entries = [dict(e) for e in box.entries]
        ks = KeySchedule.derive(box.study_key, h.body.file_id)
        meta = bytes(box.meta_bytes(0))
    fid, cs = h.body.file_id, h.body.chunk_size
    assert len(old) == len(new) and meta.count(old) == 1
    ct, digest = encrypt_segment(ks.payload_key, fid, meta_segment(0), meta.replace(old, new), cs)
    data = bytearray(path.read_bytes())
    start = h.length + entries[0]["meta"]["offset"]
    data[start : start + len(ct)] = ct
    entries[0]["meta"] = dict(entries[0]["meta"], sha256=digest.hex())
    index_ct, index_hash = encrypt_segment(
        ks.payload_key, fid, index_segment(), canonical_json({"instances": entries}), cs
    )
    assert len(index_ct) == h.body.index_length
    istart = h.length + h.body.index_offset
    data[istart : istart + len(index_ct)] = index_ct
    body = dataclasses.replace(h.body, index_sha256=index_hash)
    raw = encode_header(body, h.stanzas, h.signature_raw if keep_signature else b"")
    return raw + ks.header_mac(raw) + bytes(data[h.length :])


def test_insider_forgery_is_caught_by_the_producer_signature(
    signed_container, identities, tmp_path, assert_clean_error
):
    """The signature is what stops one recipient from passing altered images to another."""
    old, new = b"CompressedSamples^CT1", b"Forged^Patient^Name_1"
    forged = _write(tmp_path, _insider_forgery(signed_container, identities.x25519, old, new), "forged.msec")
    for call in (
        lambda: verify_study(forged, identities.rsa3072),
        lambda: open_study(forged, identities.p256),
        lambda: medsec_nb.decrypt_study(forged, tmp_path / "out", identities.p256, progress=False),
    ):
        with pytest.raises(SignatureError) as ei:
            call()
        assert_clean_error(ei.value, forged, study_key_strings(signed_container, identities.x25519))
    assert not (tmp_path / "out").exists()

    # the same forgery with the signature removed authenticates (the insider holds the key) ...
    unsigned = _write(
        tmp_path, _insider_forgery(signed_container, identities.x25519, old, new, keep_signature=False), "unsigned.msec"
    )
    with open_study(unsigned, identities.p256) as study:
        assert study.signer is None
        assert any(str(study.series[0].header(i).PatientName) == new.decode() for i in range(len(study.series[0])))
    # ... which is exactly what require_signer is for
    for call in (verify_study, open_study):
        with pytest.raises(SignatureError):
            call(unsigned, identities.p256, require_signer=identities.signer.public)


def test_require_signer(signed_container, passphrase_container, identities, tmp_path, assert_clean_error):
    rep = verify_study(signed_container, identities.x25519, require_signer=identities.signer.public)
    assert rep.signer == identities.signer.key_id
    with open_study(signed_container, identities.rsa3072, require_signer=identities.signer) as study:
        assert study.signer == identities.signer.key_id
    for other in (identities.other_signer.public, identities.p256_signer.public, identities.x25519.public):
        for call in (verify_study, open_study):
            with pytest.raises(SignatureError) as ei:
                call(signed_container, identities.x25519, require_signer=other)
            assert_clean_error(ei.value, signed_container)
    with pytest.raises(SignatureError) as ei:  # unsigned container
        verify_study(passphrase_container, passphrase=PASSPHRASE, require_signer=identities.signer.public)
    assert_clean_error(ei.value, passphrase_container)
    with pytest.raises(SignatureError):
        medsec_nb.decrypt_study(
            signed_container,
            tmp_path / "out",
            identities.x25519,
            require_signer=identities.other_signer.public,
            progress=False,
        )
    assert not (tmp_path / "out").exists()


def test_require_signer_refuses_stripped_or_replaced_signature(signed_container, identities, tmp_path):
    """An insider strips the producer signature, or re-signs with their own key, and re-MACs."""
    from medsec_nb.container import signing
    from medsec_nb.container.format import signed_message

    header, _ = read_header(signed_container)
    stripped = _write(tmp_path, _remac(signed_container, identities.x25519, signature_raw=b""), "stripped.msec")
    assert verify_study(stripped, identities.x25519).signer is None
    with pytest.raises(SignatureError):
        verify_study(stripped, identities.x25519, require_signer=identities.signer.public)

    forged = canonical_json(signing.sign(identities.other_signer, signed_message(1, header.body.encode())))
    resigned = _write(tmp_path, _remac(signed_container, identities.x25519, signature_raw=forged), "resigned.msec")
    assert verify_study(resigned, identities.x25519).signer == identities.other_signer.key_id
    with pytest.raises(SignatureError):
        verify_study(resigned, identities.x25519, require_signer=identities.signer.public)


def test_signature_still_valid_after_add_recipients(signed_container, identities, tmp_path):
    path = _copy(signed_container, tmp_path, "shared.msec")
    new = medsec_nb.generate_identity("p256")
    assert medsec_nb.add_recipients(path, [new.public], identity=identities.rsa3072) == [new.key_id]
    for ident in (new, identities.x25519, identities.p256, identities.rsa3072):
        rep = verify_study(path, ident, require_signer=identities.signer.public)
        assert rep.signer == identities.signer.key_id
    info = medsec_nb.inspect_study(path)
    assert info.signature_valid is True and info.signer == identities.signer.key_id
    assert any(new.key_id in r for r in info.recipients)
