"""The audit record, version 1: vocabulary, validation, canonical encoding and the chain hash.

See docs/AUDIT.md for the normative description.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, TypedDict

from Crypto.Hash import SHA256

from ..core.errors import AuditRecordError

VERSION = 1
#: ``prev`` of record 1.
GENESIS = "0" * 64
#: Largest encoded record (bytes, newline excluded).
MAX_RECORD = 16384

#: DICOM audit event IDs (DCM, CID 400) a record may carry.
EVENTS = {
    "110100": "Application Activity",
    "110101": "Audit Log Used",
    "110102": "Begin Transferring DICOM Instances",
    "110103": "DICOM Instances Accessed",
    "110104": "DICOM Instances Transferred",
    "110105": "DICOM Study Deleted",
    "110106": "Export",
    "110107": "Import",
    "110108": "Network Entry",
    "110109": "Order Record",
    "110110": "Patient Record",
    "110111": "Procedure Record",
    "110112": "Query",
    "110113": "Security Alert",
    "110114": "User Authentication",
}
OUTCOMES = ("success", "failure", "denied")
STUDY_KEYS = ("container_sha256", "study_uid", "instances", "patient_pseudonym")
TOP_KEYS = frozenset(
    {"v", "seq", "time", "prev", "hash", "event", "action", "outcome", "who", "why", "study", "where", "detail"}
)


class StudyFields(TypedDict, total=False):
    """A record's ``study`` as a caller gives it (:data:`STUDY_KEYS`); a missing key is recorded as null."""

    container_sha256: str
    study_uid: str
    instances: int
    patient_pseudonym: str


_ACTION = re.compile(r"[a-z][a-z0-9-]{0,31}")
_PURPOSE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PSEUDONYM = re.compile(r"[0-9a-f]{32}")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_SCALARS = (str, int, bool, type(None))


def canonical(obj: Any) -> bytes:
    """RFC 8785 (JCS) for the values records hold: sorted keys, no spaces, UTF-8, no floats."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
            "utf-8"
        )
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        raise AuditRecordError(f"value cannot be encoded in an audit record ({exc})") from None


def loads(line: bytes | str) -> Any:
    """``line`` parsed as JSON; ValueError for anything that is not JSON, including nesting too
    deep to parse (a hostile line must give the caller's clear error, not a RecursionError)."""
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical encoding of ``record`` without its ``hash`` member."""
    return SHA256.new(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def utc_now() -> str:
    """The record time format: UTC, microseconds, ``Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def is_uid(value: Any) -> bool:
    """Whether ``value`` may be recorded as ``study.study_uid``: a DICOM UID (digits and dots, at
    most 64). Anything else read from a file (it may hold any text) is kept out of records."""
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


def _text(value: Any, what: str, limit: int = 256) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise AuditRecordError(f"{what} must be a non-empty string of at most {limit} characters")
    return value


def _study(study: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if study is None:
        return None
    extra = set(study) - set(STUDY_KEYS)
    if extra:
        raise AuditRecordError(
            f"study: unknown field(s) {', '.join(sorted(map(str, extra)))} (allowed: {', '.join(STUDY_KEYS)})"
        )
    out = {k: study.get(k) for k in STUDY_KEYS}
    checks = (
        ("container_sha256", lambda v: isinstance(v, str) and _HEX64.fullmatch(v), "64 lowercase hex digits"),
        ("study_uid", is_uid, "a DICOM UID"),
        ("instances", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative integer"),
        (
            "patient_pseudonym",
            lambda v: isinstance(v, str) and _PSEUDONYM.fullmatch(v),
            "a value returned by audit.pseudonym() (never a raw patient identifier)",
        ),
    )
    for key, ok, what in checks:
        if out[key] is not None and not ok(out[key]):
            raise AuditRecordError(f"study.{key} must be {what}")
    return out


def _detail(detail: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if detail is None:
        return None
    for key, value in detail.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        if not isinstance(key, str) or not all(isinstance(v, _SCALARS) for v in items):
            raise AuditRecordError(f"detail.{key}: values must be strings, integers, booleans, None or lists of those")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in detail.items()}


def fields(
    *,
    event: str,
    action: str,
    outcome: str,
    purpose: str,
    purpose_text: str | None,
    key_id: str | None,
    study: Mapping[str, Any] | None,
    detail: Mapping[str, Any] | None,
    who: Mapping[str, Any],
    where: Mapping[str, Any],
) -> dict[str, Any]:
    """Validate the caller's part of a record; ``seq``, ``time``, ``prev`` and ``hash`` come later."""
    if event not in EVENTS:
        raise AuditRecordError(f"unknown audit event {event!r}; use a DICOM event ID such as 110103")
    if not isinstance(action, str) or not _ACTION.fullmatch(action):
        raise AuditRecordError(f"action {action!r}: lowercase letters, digits and '-', at most 32")
    if outcome not in OUTCOMES:
        raise AuditRecordError(f"outcome {outcome!r}: one of {', '.join(OUTCOMES)}")
    if not isinstance(purpose, str) or not _PURPOSE.fullmatch(purpose):
        raise AuditRecordError("a purpose of use is required (a code such as TREAT, HRESCH or TRAIN)")
    return {
        "v": VERSION,
        "event": event,
        "action": action,
        "outcome": outcome,
        "who": {**who, "key_id": _text(key_id, "key_id")},
        "why": {"purpose": purpose, "text": _text(purpose_text, "purpose_text", 1000)},
        "study": _study(study),
        "where": dict(where),
        "detail": _detail(detail),
    }


def seal(partial: Mapping[str, Any], seq: int, prev: str, time: str) -> tuple[dict[str, Any], bytes]:
    """The complete record and its line (canonical encoding plus ``\\n``)."""
    record = {**partial, "seq": seq, "time": time, "prev": prev}
    record["hash"] = record_hash(record)
    line = canonical(record)
    if len(line) > MAX_RECORD:
        raise AuditRecordError(f"audit record of {len(line)} bytes exceeds {MAX_RECORD}; shorten detail")
    return record, line + b"\n"


def check_line(line: bytes, seq: int, prev: str) -> tuple[dict[str, Any] | None, str, int]:
    """Check line number ``seq`` (newline stripped) against the chain.

    Returns (record, "", 0) if good, else (None, why, the earliest line that may be bad).
    """
    try:
        record = loads(line)
    except (ValueError, UnicodeDecodeError):
        return None, "not a JSON record (line cut or altered)", seq
    if not isinstance(record, dict) or set(record) != TOP_KEYS:
        return None, "not a version 1 record (unexpected or missing fields)", seq
    if type(record["v"]) is not int or record["v"] != VERSION:
        return None, f"unsupported record version {record['v']!r}", seq
    if type(record["seq"]) is not int or record["seq"] != seq:
        return (
            None,
            (f"sequence number {record['seq']!r} where {seq} belongs (records deleted, duplicated or reordered)"),
            seq,
        )
    if not isinstance(record["hash"], str) or record_hash(record) != record["hash"]:
        return None, "hash mismatch (record altered)", seq
    if record["prev"] != prev and seq == 1:
        return None, "the first record does not link to the genesis value (64 zeros)", 1
    if record["prev"] != prev:
        return (
            None,
            (
                f"does not link to line {seq - 1}: line {seq - 1} was altered and its hash recomputed, "
                "or this record's link was"
            ),
            seq - 1,
        )
    if canonical(record) != line:
        return None, "not in canonical form (record re-encoded or altered)", seq
    return record, "", 0
