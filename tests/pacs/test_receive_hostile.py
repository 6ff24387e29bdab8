"""``receive`` against a hostile or broken sender (security review of issue 17): each test replays the attack
with a real pynetdicom SCU (or raw PDUs on its socket) against a real receiver and fails on the code before
the fix: too many studies, an unwritable output, a malformed instance, an instance or PDU too large, an
endless command set, a flood of refused associations, a container name that is already taken."""

from __future__ import annotations

import copy
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from medsec_nb.audit import AuditLog
from medsec_nb.keys.identity import save_identity
from medsec_nb.pacs import receive as receive_module
from medsec_nb.testdata import synthesize_datasets

from .orthanc import free_port

CT = "1.2.840.10008.5.1.4.1.1.2"
A700, C000 = 0xA700, 0xC000


def _wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def _associate(port: int, calling: str = "MODALITY"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(CT, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDSEC")
    assert assoc.is_established
    return assoc


def _store(assoc, datasets) -> list[int]:
    return [int(assoc.send_c_store(ds).Status) for ds in datasets]


def _records(tmp_path: Path, **match) -> list[dict]:
    recs = AuditLog(tmp_path / "audit.jsonl").records()
    return [r for r in recs if all(r.get(k) == v for k, v in match.items())]


def _new_study(template):
    ds = copy.deepcopy(template)
    ds.StudyInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def test_studies_open_at_once_are_capped_per_association_and_in_all(receiver, tmp_path):
    """Review item 6: one association opened any number of studies (300 -> 608 threads, 300 temporary files)."""
    r = receiver(max_studies_per_association=3, max_studies=5)
    ds = synthesize_datasets(1, rows=8, columns=8)[0]
    first, second = _associate(r.port), _associate(r.port)
    try:
        assert _store(first, [_new_study(ds) for _ in range(5)]) == [0, 0, 0, A700, A700]
        assert _store(second, [_new_study(ds) for _ in range(3)]) == [0, 0, A700]  # 5 open in all
        parts = [p for p in os.listdir(tmp_path / "incoming") if p.endswith(".part")]
        assert len(parts) == 5
    finally:
        first.release()
        second.release()
    assert len(_wait_for(lambda: r.written if len(r.written) == 5 else None)) == 5
    third = _associate(r.port)  # the studies are closed: new ones are welcome again
    try:
        assert _store(third, [_new_study(ds)]) == [0]
    finally:
        third.release()


def test_an_unwritable_output_refuses_the_first_instance_already(receiver, tmp_path):
    """Review item 7: the first instance was acknowledged (0x0000) before the writer found it could not
    create its file, and was lost."""
    r = receiver()
    (tmp_path / "incoming").rmdir()
    assoc = _associate(r.port)
    try:
        assert _store(assoc, synthesize_datasets(3, rows=8, columns=8)) == [A700] * 3
    finally:
        assoc.release()
    (rec,) = _wait_for(lambda: _records(tmp_path, action="receive", outcome="failure"))
    assert rec["study"]["instances"] == 0 and "cannot write container" in rec["detail"]["reason"]


def test_a_malformed_instance_is_answered_0xc000_whatever_the_checker_raises(receiver, monkeypatch):
    """Review item 4: empty Rows made the splitter raise TypeError and pynetdicom answered 0xC211 (a crashed
    handler). Also any other exception while checking an instance (the splitter replaced by one raising
    ValueError: whatever a future bug or pydicom raises) is the sender's failure, 0xC000, not a crash."""
    r = receiver()
    good = synthesize_datasets(3, rows=8, columns=8)
    bad = synthesize_datasets(1, rows=8, columns=8)[0]
    bad.StudyInstanceUID = good[0].StudyInstanceUID
    bad.Rows = None
    assoc = _associate(r.port)
    try:
        assert _store(assoc, [good[0], bad, good[1]]) == [0, C000, 0]
        real = receive_module.split_instance

        def split(data, *args):
            if b"medsec-test-boom" in data:
                raise ValueError("boom")
            return real(data, *args)

        monkeypatch.setattr(receive_module, "split_instance", split)
        strange = synthesize_datasets(1, rows=8, columns=8)[0]
        strange.StudyInstanceUID = good[0].StudyInstanceUID
        strange.add_new(0x00091010, "OB", b"medsec-test-boom")  # marks the instance the checker fails on
        assert _store(assoc, [strange, good[2]]) == [C000, 0]
    finally:
        assoc.release()
    assert _wait_for(lambda: r.written)[0].instances == 3


def test_an_instance_larger_than_the_limit_is_refused_and_the_association_goes_on(receiver):
    r = receiver(max_instance_bytes=64 << 10)
    small = synthesize_datasets(2, rows=16, columns=16)
    big = synthesize_datasets(1, rows=256, columns=256)[0]  # 128 KiB of pixels
    big.StudyInstanceUID = small[0].StudyInstanceUID
    assoc = _associate(r.port)
    try:
        assert _store(assoc, [small[0], big, small[1]]) == [0, A700, 0]
    finally:
        assoc.release()
    assert _wait_for(lambda: r.written)[0].instances == 2


def _raw(assoc, pdu_type: int, body: bytes, announced: int | None = None) -> None:
    """Send a PDU of our own making on an established association's socket."""
    length = len(body) if announced is None else announced
    assoc.dul.socket.socket.sendall(struct.pack(">BBL", pdu_type, 0, length) + body)


def test_a_pdu_longer_than_announced_cuts_the_peer_off_before_it_is_read(receiver):
    """pynetdicom reads a whole PDU into memory, whatever length it announces (up to 4 GiB): the receiver
    now closes the connection on the length alone. Before, it waited for the 4 GiB and the association
    stayed open."""
    r = receiver()
    assoc = _associate(r.port)
    _raw(assoc, 0x04, b"\0" * 1000, announced=0xFFFFFF00)
    _wait_for(lambda: not assoc.is_established, timeout=15)
    assert r.written == []


def test_an_endless_command_set_cuts_the_peer_off(receiver):
    """A DIMSE command set sent in fragments that never end was kept growing in memory."""
    r = receiver()
    assoc = _associate(r.port)
    cx = assoc.accepted_contexts[0].context_id
    fragment = b"\0" * (40 << 10)
    pdv = struct.pack(">LBB", len(fragment) + 2, cx, 0x01) + fragment  # command information, not the last
    for _ in range(4):
        if not assoc.is_established:
            break
        _raw(assoc, 0x04, pdv)
        time.sleep(0.2)
    _wait_for(lambda: not assoc.is_established, timeout=15)
    assert r.written == []


def test_a_flood_of_refused_associations_is_recorded_once_per_caller_with_a_count(receiver, tmp_path):
    """Every refused association wrote an fsynced record: 40 refusals were 40 records."""
    r = receiver()
    for calling in ["STRANGER"] * 30 + ["OTHER"] * 10:
        ae = AE(ae_title=calling)
        ae.add_requested_context(CT)
        assert ae.associate("127.0.0.1", r.port, ae_title="MEDSEC").is_rejected
    _wait_for(lambda: len(_records(tmp_path, outcome="denied")) == 2)
    time.sleep(0.5)
    first = _records(tmp_path, outcome="denied")
    assert [(x["detail"]["calling_ae"], x["detail"]["count"]) for x in first] == [("STRANGER", 1), ("OTHER", 1)]
    r.stop()  # the ones held back are recorded, counted, when the receiver stops
    counts: dict[str, int] = {}
    for rec in _records(tmp_path, action="receive", outcome="denied"):
        counts[rec["detail"]["calling_ae"]] = counts.get(rec["detail"]["calling_ae"], 0) + rec["detail"]["count"]
    assert counts == {"STRANGER": 30, "OTHER": 10}
    assert len(_records(tmp_path, outcome="denied")) == 4


def test_a_container_name_already_taken_is_never_overwritten(receiver, tmp_path, monkeypatch):
    """Container names are a microsecond time and a hash: if one is taken (a clock step back, a second
    receiver on the folder), the acknowledged container there was silently replaced. The name is forced
    to collide here; the existing file stays and the sender is told at its first instance."""
    taken = tmp_path / "incoming" / "taken.msec"
    monkeypatch.setattr(receive_module, "_out_name", lambda uid, folder: taken)
    r = receiver()
    taken.write_bytes(b"an acknowledged study")
    assoc = _associate(r.port)
    try:
        assert _store(assoc, synthesize_datasets(2, rows=8, columns=8)) == [A700, A700]
    finally:
        assoc.release()
    (rec,) = _wait_for(lambda: _records(tmp_path, action="receive", outcome="failure"))
    assert "already exists" in rec["detail"]["reason"]
    assert taken.read_bytes() == b"an acknowledged study" and os.listdir(taken.parent) == ["taken.msec"]


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) << 10
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_the_command_drops_an_oversized_instance_while_it_arrives(tmp_path, identities):
    """``medsec receive --max-instance-mb 1``: a 67 MB instance is refused with 0xA700 and the receiver's
    peak memory grows by far less than the instance (pynetdicom alone buffered it whole, then copied it)."""
    pub = save_identity(identities.x25519, tmp_path / "site", None)[1]
    (tmp_path / "incoming").mkdir()
    port = free_port()
    env = {**os.environ, "MEDSEC_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "medsec_nb.cli", "receive", "-o", str(tmp_path / "incoming"), "-r", str(pub)]
        + ["--port", str(port), "--purpose", "TREAT", "--allow-caller", "MODALITY", "--max-instance-mb", "1"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    try:
        _wait_for(lambda: any("listening as" in line for line in lines) or proc.poll() is not None)
        assert proc.poll() is None, "".join(lines)
        big = synthesize_datasets(1, rows=5800, columns=5800)[0]  # 67 MB of pixels
        before = _peak_rss(proc.pid)
        assoc = _associate(port)
        try:
            assert _store(assoc, [big]) == [A700]
        finally:
            assoc.release()
        grown = _peak_rss(proc.pid) - before
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines)
    assert grown < 32 << 20, f"peak memory grew by {grown >> 20} MB for a refused 67 MB instance"
    assert any("larger than 1048576 bytes" in line for line in lines) and "Traceback" not in "".join(lines)
