"""Verification of a log: every record's chain link and hash, then every signed checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import MedsecError
from . import checkpoint as ckpt
from . import record
from .paths import checkpoints_path, log_path


@dataclass(frozen=True)
class AuditVerifyReport:
    """Outcome of :func:`verify_log`. ``first_bad_line`` is a 1-based line of the log."""

    ok: bool
    path: str
    records: int
    checkpoints: int
    first_bad_line: int | None
    message: str


def _chain(path: str, wanted: set[int]) -> tuple[int, dict[int, tuple[str, int]], int | None, str]:
    """(records, {n: (hash, bytes through n)} for n in wanted and 1, first bad line, why)."""
    seen: dict[int, tuple[str, int]] = {}
    prev, n, offset = record.GENESIS, 0, 0
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return 0, seen, None, ""
    with fh:
        for raw in fh:
            n += 1
            if not raw.endswith(b"\n"):
                return n - 1, seen, n, f"line {n}: incomplete last line (cut off in the middle of a record)"
            rec, why, blame = record.check_line(raw[:-1], n, prev)
            if rec is None:
                return n - 1, seen, blame, f"line {n}: {why}"
            prev = rec["hash"]
            offset += len(raw)
            if n in wanted or n == 1:
                seen[n] = (prev, offset)
    return n, seen, None, ""


def verify_log(path: str | os.PathLike | None = None, checkpoints: str | os.PathLike | None = None,
               public_key: ckpt.PublicKeys = None) -> AuditVerifyReport:
    """Check the chain of ``path`` (default as :class:`AuditLog`), then every checkpoint in
    ``checkpoints`` against ``public_key`` (an ed25519 Recipient, Identity, .pub path, or a list;
    default: the installation's checkpoint key). The first failure is reported, with its line."""
    log = log_path(path)
    cp_path = checkpoints_path(log, checkpoints)
    where = str(log)

    def bad(records: int, line: int | None, message: str, n_cp: int = 0) -> AuditVerifyReport:
        return AuditVerifyReport(False, where, records, n_cp, line, f"{where}: {message}")

    try:
        notes = list(ckpt.stored(cp_path))
        trusted = ckpt.trusted_keys(public_key) if notes else {}
        heads = []
        for n, note in notes:
            try:
                heads.append((n, *ckpt.verify(note, trusted)))
            except MedsecError as exc:
                return bad(0, None, f"checkpoint {n} in {cp_path}: {exc}")
    except MedsecError as exc:
        return bad(0, None, str(exc))

    records, seen, line, why = _chain(where, {h.size for _, h, _ in heads})
    if line is not None:
        return bad(records, line, why)
    if not records and not heads:
        return bad(0, None, "no audit records (is this the right log?)")

    matched = 0  # records known good: covered by a checkpoint that matched
    for n, head, signer in sorted(heads, key=lambda h: h[1].size):
        label = f"checkpoint {n} in {cp_path} (signed {head.time} by {signer})"
        if head.size > records:
            return bad(records, records + 1, f"{label} covers {head.size} records but the log has {records}: "
                       f"lines {records + 1}-{head.size} were removed (log truncated)", len(heads))
        if seen.get(1, ("",))[0][:32] != head.log_id:
            return bad(records, 1, f"{label} is for log {head.log_id}, not this one: record 1 differs "
                       "(the log was replaced or rewritten from the start)", len(heads))
        digest, length = seen[head.size]
        if digest != head.head or length != head.length:
            return bad(records, matched + 1, f"{label} does not match record {head.size}: a record in lines "
                       f"{matched + 1}-{head.size} was altered and the chain recomputed (log rewritten)", len(heads))
        matched = head.size

    if not heads:
        tail = "no checkpoints: truncation of the tail or a rewrite of the log would go unnoticed"
    else:
        latest = max(heads, key=lambda h: h[1].size)
        tail = (f"{len(heads)} checkpoint(s) verified, the latest covering {latest[1].size} records "
                f"(signed by {latest[2]})")
    return AuditVerifyReport(True, where, records, len(heads), None,
                             f"{where}: {records} records, chain intact; {tail}")
