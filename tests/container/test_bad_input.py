"""Bad input gives one clear error naming the file, and nothing is lost or left behind.

Issue 2, "Bad input: a clear error, nothing lost": an unreadable or non-DICOM file in the
source folder, two studies or a duplicate instance in one folder, an empty or missing
folder, a full disk. After any failure: the destination does not exist (or an existing one
is byte-for-byte unchanged), no temporary ``.part`` file or folder is left next to it, and
the source folder is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

import medsec_nb
from conftest import FAST_LOG_N, PASSPHRASE, insider_corrupt_chunk
from medsec_nb import AuthenticationError, MedsecError, OutputError, SourceError

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- helpers


def tree_state(folder: Path) -> dict[str, tuple[str, str]]:
    """Every entry under ``folder`` (hidden ones too): relative path -> (kind, sha256)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", "")
        else:
            try:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
            except OSError as exc:  # the deliberately unreadable file
                out[rel] = ("unreadable", f"{exc.errno} {oct(p.lstat().st_mode)}")
    return out


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part") or ".part" in p.name)


@pytest.fixture
def src(tmp_path, series_source) -> Path:
    """A private, writable copy of the 6-slice study folder."""
    folder = tmp_path / "CT_STUDY"
    shutil.copytree(series_source.folder, folder)
    return folder


@pytest.fixture
def out_dir(tmp_path) -> Path:
    """The destination folder, holding an unrelated file that must survive everything."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("unrelated file next to the destination\n")
    return folder


def _copy_slice(src: Path, name: str, **changes) -> Path:
    """A copy of the first slice under ``name`` with some elements changed (and a new SOP UID
    unless ``SOPInstanceUID`` is given as None, meaning keep it)."""
    first = sorted(src.glob("*.dcm"))[0]
    ds = pydicom.dcmread(first)
    sop = changes.pop("SOPInstanceUID", generate_uid())
    if sop is not None:
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
    for k, v in changes.items():
        setattr(ds, k, v)
    path = src / name
    ds.save_as(path, enforce_file_format=True)
    return path


def make_unreadable(path: Path) -> str:
    """Make ``path`` (an existing file) unreadable by this process; return how.

    ``chmod 000`` does not stop root, so when it does not take effect (tests running as
    root, as in many containers), the file is replaced by a symbolic link to
    ``/proc/self/mem``: a regular file whose read at offset 0 fails with EIO for anyone.
    """
    path.chmod(0)
    try:
        path.read_bytes()
    except PermissionError:
        return "chmod 000"
    path.chmod(0o644)
    if not Path("/proc/self/mem").exists():
        pytest.skip("running as root (chmod 000 does not block reads) and no /proc/self/mem to fall back on")
    path.unlink()
    path.symlink_to("/proc/self/mem")
    with pytest.raises(OSError):
        path.read_bytes()
    return "symlink to /proc/self/mem (root ignores chmod 000)"


# Each case adds one bad thing to the study folder and returns the path the error must name.
def _text_last(src):
    p = src / "zz_notes.txt"
    p.write_text("Scanner notes: nothing to see here.\n")
    return p


def _text_first(src):
    p = src / "aa_readme.txt"
    p.write_text("README\n" * 50)
    return p


def _binary(src):
    p = src / "IMG_0001.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(3000))
    return p


def _empty_file(src):
    p = src / "empty.dcm"
    p.write_bytes(b"")
    return p


def _pixel_tag_offset(data: bytes) -> int:
    import io

    buf = io.BytesIO(data)
    pydicom.dcmread(buf, stop_before_pixels=True)
    assert data[buf.tell() : buf.tell() + 4] == b"\xe0\x7f\x10\x00"
    return buf.tell()


def _truncated_in_pixel_data(src):
    p = _copy_slice(src, "zz_truncated.dcm")  # a new SOP UID: only the truncation is wrong
    data = p.read_bytes()
    p.write_bytes(data[: _pixel_tag_offset(data) + 12 + 5000])
    return p


def _truncated_before_pixel_data(src):
    """Cut 100 bytes before the Pixel Data element: every UID is there, the image is not."""
    p = _copy_slice(src, "zz_truncated.dcm")
    data = p.read_bytes()
    p.write_bytes(data[: _pixel_tag_offset(data) - 100])
    return p


def _dicomdir(src):
    p = src / "DICOMDIR"
    shutil.copyfile(get_testdata_file("DICOMDIR"), p)
    return p


def _unreadable(src):
    p = _copy_slice(src, "zz_unreadable.dcm")
    make_unreadable(p)
    return p


def _other_study(src):
    return _copy_slice(src, "zz_other_study.dcm", StudyInstanceUID=generate_uid())


def _other_study_real_file(src):
    p = src / "MR_small.dcm"
    shutil.copyfile(get_testdata_file("MR_small.dcm"), p)
    return p


def _duplicate_sop(src):
    first = sorted(src.glob("*.dcm"))[0]
    p = src / "zz_copy_of_first.dcm"
    shutil.copyfile(first, p)
    return p


def _duplicate_sop_other_content(src):
    first = sorted(src.glob("*.dcm"))[0]
    sop = pydicom.dcmread(first, stop_before_pixels=True).SOPInstanceUID
    return _copy_slice(src, "zz_same_sop.dcm", SOPInstanceUID=sop, InstanceNumber=99)


SOURCE_CASES = {
    "non_dicom_text_last": _text_last,
    "non_dicom_text_first": _text_first,
    "non_dicom_binary": _binary,
    "empty_file": _empty_file,
    "truncated_in_pixel_data": _truncated_in_pixel_data,
    "truncated_before_pixel_data": _truncated_before_pixel_data,
    "dicomdir": _dicomdir,
    "unreadable_file": _unreadable,
    "two_studies": _other_study,
    "two_studies_real_file": _other_study_real_file,
    "duplicate_instance": _duplicate_sop,
    "duplicate_sop_uid": _duplicate_sop_other_content,
}


# --------------------------------------------------------------------------- encrypt: source errors


@pytest.mark.parametrize("existing", [False, True], ids=["new_dest", "existing_dest"])
@pytest.mark.parametrize("case", list(SOURCE_CASES))
def test_bad_source_file_gives_clear_error_and_leaves_nothing(
    case, existing, src, out_dir, identities, signed_container, assert_clean_error
):
    bad = SOURCE_CASES[case](src)
    dest = out_dir / "study.msec"
    if existing:
        shutil.copyfile(signed_container, dest)
    src_before, out_before = tree_state(src), tree_state(out_dir)

    with pytest.raises(SourceError) as ei:
        medsec_nb.encrypt_study(src, dest, passphrase=PASSPHRASE, scrypt_log_n=FAST_LOG_N, progress=False)
    assert_clean_error(ei.value, bad)
    assert "\n" not in str(ei.value), "one clear line"

    assert tree_state(out_dir) == out_before, "destination folder changed"
    assert leftovers(out_dir) == []
    if existing:
        assert dest.read_bytes() == signed_container.read_bytes()
    else:
        assert not dest.exists()
    assert tree_state(src) == src_before, "source folder changed"


@pytest.mark.parametrize("cut", [2000, 2600, 2660], ids=["inside_sequence", "inside_last_value", "inside_last_tag"])
def test_truncated_file_without_pixel_data_is_refused(cut, tiny_source, tmp_path, identities):
    """pydicom's rtplan.dcm (2672 bytes, no pixel data) cut short: pydicom itself reads the
    short value (or drops the partial element) without complaint, but the file is damaged and
    must not be sealed into a container as if it were complete."""
    src = tmp_path / "TINY"
    shutil.copytree(tiny_source.folder, src)
    bad = src / "rtplan.dcm"
    data = bad.read_bytes()
    assert len(data) == 2672
    bad.write_bytes(data[:cut])
    before = tree_state(src)
    dest = tmp_path / "study.msec"
    with pytest.raises(SourceError) as ei:
        medsec_nb.encrypt_study(src, dest, [identities.x25519], progress=False)
    assert str(bad) in str(ei.value)
    assert not dest.exists() and leftovers(tmp_path) == []
    assert tree_state(src) == before


def test_unreadable_file_error_says_it_cannot_be_read(src, out_dir, identities):
    bad = _copy_slice(src, "zz_unreadable.dcm")
    how = make_unreadable(bad)
    with pytest.raises(SourceError) as ei:
        medsec_nb.encrypt_study(src, out_dir / "s.msec", [identities.x25519], progress=False)
    assert str(bad) in str(ei.value) and "read" in str(ei.value), (how, str(ei.value))
    assert not (out_dir / "s.msec").exists() and leftovers(out_dir) == []


@pytest.mark.parametrize("case", ["empty_folder", "only_hidden_files", "missing_folder", "non_dicom_single_file"])
def test_bad_source_folder(case, tmp_path, out_dir, identities, assert_clean_error):
    src = tmp_path / "SRC"
    if case == "empty_folder":
        src.mkdir()
    elif case == "only_hidden_files":
        src.mkdir()
        (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    elif case == "non_dicom_single_file":
        src = tmp_path / "notes.txt"
        src.write_text("not dicom\n")
    parent_before = tree_state(tmp_path)
    dest = out_dir / "study.msec"
    with pytest.raises(SourceError) as ei:
        medsec_nb.encrypt_study(
            src, dest, [identities.x25519, identities.p256], signer=identities.signer, progress=False
        )
    assert_clean_error(ei.value, src)
    assert not dest.exists() and leftovers(out_dir) == []
    assert tree_state(tmp_path) == parent_before


def test_failure_after_some_instances_were_written_leaves_nothing(src, out_dir, identities):
    """The bad file sorts last: five slices are encrypted and written before it is met."""
    for k in range(20):  # enough valid files to fill the writer's queue
        _copy_slice(src, f"more_{k:02d}.dcm", InstanceNumber=100 + k)
    bad = _text_last(src)
    before = tree_state(src)
    with pytest.raises(SourceError) as ei:
        medsec_nb.encrypt_study(src, out_dir / "study.msec", [identities.x25519], progress=False, workers=2)
    assert str(bad) in str(ei.value)
    assert sorted(p.name for p in out_dir.iterdir()) == ["keep.txt"]
    assert tree_state(src) == before


@pytest.mark.parametrize(
    "case", ["recipients_and_passphrase", "no_recipient", "signing_key_as_recipient", "x25519_as_signer"]
)
def test_bad_arguments_leave_nothing(case, src, out_dir, identities):
    kwargs = {
        "recipients_and_passphrase": dict(
            recipients=[identities.x25519], passphrase=PASSPHRASE, scrypt_log_n=FAST_LOG_N
        ),
        "no_recipient": dict(),
        "signing_key_as_recipient": dict(recipients=[identities.signer]),
        "x25519_as_signer": dict(recipients=[identities.p256], signer=identities.x25519),
    }[case]
    before = tree_state(src)
    with pytest.raises(MedsecError) as ei:
        medsec_nb.encrypt_study(src, out_dir / "study.msec", progress=False, **kwargs)
    assert PASSPHRASE not in str(ei.value)
    assert sorted(p.name for p in out_dir.iterdir()) == ["keep.txt"]
    assert tree_state(src) == before


@pytest.mark.parametrize("case", ["missing_dest_folder", "dest_is_a_folder"])
def test_unwritable_destination_gives_output_error(case, src, tmp_path, identities, assert_clean_error):
    if case == "missing_dest_folder":
        dest = tmp_path / "no" / "such" / "folder" / "study.msec"
    else:
        dest = tmp_path / "a_folder.msec"
        dest.mkdir()
        (dest / "inside.txt").write_text("keep me")
    before = tree_state(tmp_path)
    with pytest.raises(OutputError) as ei:
        medsec_nb.encrypt_study(src, dest, [identities.x25519], progress=False)
    assert_clean_error(ei.value, dest)
    assert tree_state(tmp_path) == before


# --------------------------------------------------------------------------- full disk (RLIMIT_FSIZE)

_RUNNER = textwrap.dedent("""
    import json, resource, signal, sys
    import medsec_nb
    mode, src, dest, key, limit = sys.argv[1:6]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # writes past the limit fail with EFBIG instead
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), hard))
    try:
        if mode == "encrypt":
            medsec_nb.encrypt_study(src, dest, recipients=[key], progress=False)
        elif mode == "decrypt":
            medsec_nb.decrypt_study(src, dest, identity=key, progress=False)
        else:                                           # add: dest is the new recipient's .pub
            medsec_nb.add_recipients(src, [dest], identity=key)
    except BaseException as exc:
        print(json.dumps({"type": type(exc).__name__, "medsec": isinstance(exc, medsec_nb.MedsecError),
                          "message": str(exc)}))
    else:
        print(json.dumps({"type": None}))
""")


def _run_limited(tmp_path: Path, mode: str, src: Path, dest: Path, key: Path, limit: int) -> dict:
    script = tmp_path / "limited.py"
    script.write_text(_RUNNER)
    # a fresh audit log: the file-size limit applies to it too, and a shared one grows past it
    env = dict(
        os.environ,
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=str(ROOT),
        MEDSEC_AUDIT_LOG=str(tmp_path / f"audit-{mode}.jsonl"),
    )
    proc = subprocess.run(
        [sys.executable, str(script), mode, str(src), str(dest), str(key), str(limit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def key_files(tmp_path, identities) -> tuple[Path, Path]:
    keys = tmp_path / "keys"
    keys.mkdir()
    return medsec_nb.save_identity(identities.x25519, keys / "site-a")


@pytest.mark.parametrize("existing", [False, True], ids=["new_dest", "existing_dest"])
def test_full_disk_while_encrypting(existing, src, out_dir, tmp_path, key_files, signed_container):
    dest = out_dir / "study.msec"
    if existing:
        shutil.copyfile(signed_container, dest)
    before_src, before_out = tree_state(src), tree_state(out_dir)
    res = _run_limited(tmp_path, "encrypt", src, dest, key_files[1], limit=24 * 1024)
    assert res["type"] == "OutputError", res
    assert str(dest) in res["message"] and "too large" in res["message"].lower(), res["message"]
    assert "\n" not in res["message"]
    assert tree_state(out_dir) == before_out and leftovers(out_dir) == []
    assert tree_state(src) == before_src


def test_full_disk_while_decrypting(signed_container, tmp_path, key_files):
    out = tmp_path / "export" / "CT"
    (tmp_path / "export").mkdir()
    res = _run_limited(tmp_path, "decrypt", signed_container, out, key_files[0], limit=8 * 1024)
    assert res["type"] == "OutputError", res
    assert str(out) in res["message"] and "too large" in res["message"].lower(), res["message"]
    assert sorted((tmp_path / "export").iterdir()) == [], "partial export or temporary folder left behind"


def test_full_disk_while_adding_a_recipient(signed_container, tmp_path, key_files, identities):
    box = tmp_path / "boxes" / "study.msec"
    box.parent.mkdir()
    shutil.copyfile(signed_container, box)
    _, new_pub = medsec_nb.save_identity(medsec_nb.generate_identity("p256"), tmp_path / "site-c")
    res = _run_limited(tmp_path, "add", box, new_pub, key_files[0], limit=16 * 1024)
    assert res["type"] == "OutputError", res
    assert str(box) in res["message"] and "too large" in res["message"].lower(), res["message"]
    assert box.read_bytes() == signed_container.read_bytes()
    assert sorted(p.name for p in box.parent.iterdir()) == ["study.msec"]


def test_limit_large_enough_succeeds(src, out_dir, tmp_path, key_files):
    """Control for the two tests above: the same runner with room to write works."""
    res = _run_limited(tmp_path, "encrypt", src, out_dir / "study.msec", key_files[1], limit=1 << 30)
    assert res["type"] is None, res
    assert medsec_nb.inspect_study(out_dir / "study.msec").instance_count == 6


# --------------------------------------------------------------------------- decrypt: output errors


def test_decrypt_into_non_empty_folder_fails_and_leaves_it_unchanged(
    signed_container, tmp_path, identities, assert_clean_error
):
    out = tmp_path / "export"
    out.mkdir()
    (out / "previous.dcm").write_bytes(b"previous export, keep me")
    (out / "sub").mkdir()
    (out / "sub" / "notes.txt").write_text("keep")
    before, parent_before = tree_state(out), tree_state(tmp_path)
    with pytest.raises(OutputError) as ei:
        medsec_nb.decrypt_study(signed_container, out, identities.x25519, progress=False)
    assert_clean_error(ei.value, out)
    assert tree_state(out) == before
    assert tree_state(tmp_path) == parent_before


def test_decrypt_onto_an_existing_file_fails(signed_container, tmp_path, identities):
    out = tmp_path / "export"
    out.write_bytes(b"a file, not a folder")
    with pytest.raises(OutputError) as ei:
        medsec_nb.decrypt_study(signed_container, out, identities.x25519, progress=False)
    assert str(out) in str(ei.value)
    assert out.read_bytes() == b"a file, not a folder"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["last_instance_pixels", "first_instance_meta", "index"])
def test_decrypt_of_tampered_container_leaves_no_output(
    where, signed_container, tmp_path, identities, assert_clean_error
):
    from medsec_nb.container._reader import open_container

    with open_container(signed_container, identity=identities.x25519) as box:
        h, entries = box.header, box.entries
        pos = {
            "last_instance_pixels": h.length + entries[-1]["pixels"]["offset"] + 50,
            "first_instance_meta": h.length + entries[0]["meta"]["offset"] + 50,
            "index": h.length + h.body.index_offset + 20,
        }[where]
    data = bytearray(signed_container.read_bytes())
    data[pos] ^= 0x01
    box_path = tmp_path / "tampered.msec"
    box_path.write_bytes(bytes(data))
    out = tmp_path / "export"
    before = tree_state(tmp_path)
    with pytest.raises(AuthenticationError) as ei:
        medsec_nb.decrypt_study(box_path, out, identities.x25519, progress=False)
    assert_clean_error(ei.value, box_path)
    assert not out.exists()
    assert tree_state(tmp_path) == before, "something was left behind"


def test_decrypt_failing_after_some_files_were_written_leaves_nothing(
    signed_container, tmp_path, identities, assert_clean_error
):
    """Every segment hash matches (an insider re-sealed the index), so the export starts; the
    last instance's last chunk fails its GCM tag after five files were written: the partial
    export must disappear."""
    box = tmp_path / "resealed.msec"
    box.write_bytes(insider_corrupt_chunk(signed_container, identities.x25519, instance=5))
    out = tmp_path / "nested" / "export"
    (tmp_path / "nested").mkdir()
    before = tree_state(tmp_path)
    with pytest.raises(AuthenticationError) as ei:
        medsec_nb.decrypt_study(box, out, identities.rsa3072, progress=False)
    assert_clean_error(ei.value, box)
    assert "instance 5" in str(ei.value)
    assert not out.exists()
    assert tree_state(tmp_path) == before, "partial export or temporary folder left behind"


def test_decrypt_into_empty_existing_folder_works(signed_container, series_source, tmp_path, identities):
    out = tmp_path / "export"
    out.mkdir()
    written = medsec_nb.decrypt_study(signed_container, out, identities.p256, progress=False)
    assert sorted(p.name for p in written) == sorted(p.name for p in series_source.files)
    for p in series_source.files:
        assert (out / p.name).read_bytes() == p.read_bytes()
    assert leftovers(tmp_path) == []
