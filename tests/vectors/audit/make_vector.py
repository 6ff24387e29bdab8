#!/usr/bin/env python
"""Regenerate the audit-log test vector (docs/AUDIT.md, "Test vector") byte for byte.

    python tests/vectors/audit/make_vector.py

Everything is fixed: the checkpoint key (a raw Ed25519 seed in key.json, for tests only),
the pseudonym secret, the records' times and context. Writes audit.jsonl, audit.checkpoints
and vector.json beside this file.
"""

from __future__ import annotations

import json
from pathlib import Path

from Crypto.Hash import HMAC, SHA256
from Crypto.Signature import eddsa

from medsec_nb.audit import checkpoint, record
from medsec_nb.keys.identity import Identity

HERE = Path(__file__).resolve().parent
KEY = json.loads((HERE / "key.json").read_text())

WHO = {"os_user": "alice", "hub_user": "alice@example.org"}
WHERE = {
    "host": "ws-17",
    "pid": 4242,
    "version": "0.1.0",
    "notebook": "lung/segment.ipynb",
    "kernel_id": "6f1c2b7e-0c1d-4e43-9a57-2d5c2b1c9e10",
    "cell": 7,
}
STUDY_UID = "1.2.826.0.1.3680043.8.498.10025"
CONTAINER = "5e0f8a3c1b2d4e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7"


def identity() -> Identity:
    return Identity(eddsa.import_private_key(bytes.fromhex(KEY["seed"])))


def pseudonym(value: str) -> str:
    return HMAC.new(bytes.fromhex(KEY["pseudonym_secret"]), value.strip().encode("utf-8"), SHA256).hexdigest()[:32]


def records() -> list[tuple[dict, str]]:
    """(fields, time) of the three records."""
    study = {
        "container_sha256": CONTAINER,
        "study_uid": STUDY_UID,
        "instances": 300,
        "patient_pseudonym": pseudonym("PAT-0001"),
    }
    common = {"who": WHO, "where": WHERE, "study": study}
    return [
        (
            record.fields(
                event="110103",
                action="open",
                outcome="success",
                purpose="HRESCH",
                purpose_text="lung nodule study, protocol 2025-17",
                key_id="x25519:00112233445566778899aabbccddeeff",
                detail=None,
                **common,
            ),
            "2025-03-14T09:26:53.589793Z",
        ),
        (
            record.fields(
                event="110113",
                action="reveal-tag",
                outcome="denied",
                purpose="TRAIN",
                purpose_text=None,
                key_id=None,
                detail={"tag": "PatientName", "reason": "no rule allows alice to reveal-tag for purpose TRAIN"},
                **common,
            ),
            "2025-03-14T09:27:01.000001Z",
        ),
        (
            record.fields(
                event="110106",
                action="export",
                outcome="success",
                purpose="HRESCH",
                purpose_text=None,
                key_id="x25519:00112233445566778899aabbccddeeff",
                detail={"destination": "file:///data/export/lung-17"},
                **common,
            ),
            "2025-03-14T09:30:00.000000Z",
        ),
    ]


def build() -> tuple[bytes, bytes, dict]:
    """(log bytes, checkpoint file bytes, vector.json content)."""
    lines, prev, hashes = [], record.GENESIS, []
    for seq, (fields, time) in enumerate(records(), 1):
        rec, line = record.seal(fields, seq, prev, time)
        lines.append(line)
        prev = rec["hash"]
        hashes.append(prev)
    log = b"".join(lines)
    ident = identity()
    head = checkpoint.ChainHead(hashes[0][:32], len(hashes), hashes[-1], len(log), "2025-03-14T09:30:00.500000Z")
    note = checkpoint.sign(head, ident)
    cps = json.dumps({"note": note}, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
    vector = {
        "format": "medsec-nb audit log v1",
        "files": {"log": "audit.jsonl", "checkpoints": "audit.checkpoints", "key": "key.json"},
        "records": len(hashes),
        "hashes": hashes,
        "log_bytes": len(log),
        "first_record_hashed_bytes": record.canonical(
            {k: v for k, v in json.loads(lines[0]).items() if k != "hash"}
        ).decode("utf-8"),
        "checkpoint": {
            "key_id": ident.key_id,
            "public": ident.public.key.export_key(format="raw").hex(),
            "key_hash": checkpoint.key_hash(ident.key_id, bytes.fromhex(KEY["public"])).hex(),
            "body": head.body().decode("utf-8"),
            "note": note,
        },
        "pseudonym": {"value": "PAT-0001", "pseudonym": pseudonym("PAT-0001")},
    }
    return log, cps, vector


def main() -> None:
    log, cps, vector = build()
    (HERE / "audit.jsonl").write_bytes(log)
    (HERE / "audit.checkpoints").write_bytes(cps)
    (HERE / "vector.json").write_text(json.dumps(vector, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
