"""Verification of a log: every record's chain link and hash, then every signed checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.errors import MedsecError
from . import checkpoint as ckpt
from . import record
from .paths import checkpoints_path, log_path


@dataclass(frozen=True)
class AuditVerifyReport:
    """Outcome of :func:`verify_log`. ``first_bad_line`` is a 1-based line of the log.

    ``checkpoints`` counts the notes verified with a trusted key, ``untrusted`` those ignored
    because no trusted key signed them; ``uncovered`` is the number of records after the latest
    verified checkpoint (all of them when there is none): removing them would go unnoticed.
    ``trusted`` names each trusted key (key id and file); ``warnings`` are one-line advice."""

    ok: bool
    path: str
    records: int
    checkpoints: int
    first_bad_line: int | None
    message: str
    uncovered: int = 0
    untrusted: int = 0
    trusted: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def _anchor(key: ckpt.TrustedKey) -> str:
    return key.name if key.source == "given" else f"{key.name} from {key.source}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


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


def verify_log(
    path: str | os.PathLike[str] | None = None,
    checkpoints: str | os.PathLike[str] | None = None,
    public_key: ckpt.PublicKeys = None,
) -> AuditVerifyReport:
    """Check the chain of ``path`` (default as :class:`AuditLog`), then every checkpoint in
    ``checkpoints`` against ``public_key`` (an ed25519 Recipient, Identity, .pub path, or a list;
    default: the installation's checkpoint key). The first failure is reported, with its line.

    A note counts when one trusted key signed it; notes no trusted key signed are ignored, but
    some note must be trusted when there are any, and always when ``public_key`` is given."""
    log = log_path(path)
    cp_path = checkpoints_path(log, checkpoints)
    where = str(log)

    def bad(records: int, line: int | None, message: str, n_cp: int = 0) -> AuditVerifyReport:
        return AuditVerifyReport(False, where, records, n_cp, line, f"{where}: {message}")

    try:
        notes = list(ckpt.stored(cp_path))
        anchors = ckpt.trust_anchors(public_key)
        trusted = {k.name: k.public for k in anchors}
        heads: list[tuple[int, ckpt.ChainHead, str]] = []
        ignored: list[str] = []
        for n, note in notes:
            try:
                head, signer, names = ckpt.trusted_signer(note, trusted)
            except MedsecError as exc:
                return bad(0, None, f"checkpoint {n} in {cp_path}: {exc}")
            if signer is None:
                ignored.extend(name for name in names if name not in ignored)
            else:
                heads.append((n, head, signer))
    except MedsecError as exc:
        return bad(0, None, str(exc))
    named = ", ".join(_anchor(k) for k in anchors) or "none: no installation checkpoint key"
    if notes and not heads:
        return replace(
            bad(
                0,
                None,
                f"the checkpoints in {cp_path} are not signed by a trusted key "
                f"(signed by {', '.join(ignored)}; trusted: {named})",
            ),
            untrusted=len(notes),
        )
    if public_key is not None and not notes:
        return bad(
            0, None, f"no checkpoint in {cp_path}: nothing signed by a trusted key ({named}) vouches for this log"
        )

    records, seen, line, why = _chain(where, {h.size for _, h, _ in heads})
    if line is not None:
        return bad(records, line, why)
    if not records and not heads:
        return bad(0, None, "no audit records (is this the right log?)")

    matched = 0  # records known good: covered by a checkpoint that matched
    for n, head, signer in sorted(heads, key=lambda h: h[1].size):
        label = f"checkpoint {n} in {cp_path} (signed {head.time} by {signer})"
        if head.size > records:
            return bad(
                records,
                records + 1,
                f"{label} covers {head.size} records but the log has {records}: "
                f"lines {records + 1}-{head.size} were removed (log truncated)",
                len(heads),
            )
        if seen.get(1, ("",))[0][:32] != head.log_id:
            return bad(
                records,
                1,
                f"{label} is for log {head.log_id}, not this one: record 1 differs "
                "(the log was replaced or rewritten from the start)",
                len(heads),
            )
        digest, length = seen[head.size]
        if digest != head.head or length != head.length:
            return bad(
                records,
                matched + 1,
                f"{label} does not match record {head.size}: a record in lines "
                f"{matched + 1}-{head.size} was altered and the chain recomputed (log rewritten)",
                len(heads),
            )
        matched = head.size

    uncovered = records - matched
    facts, warnings = [f"{records} records, chain intact"], []
    if heads:
        latest = max(heads, key=lambda h: h[1].size)
        facts.append(
            f"{_plural(len(heads), 'checkpoint')} verified, the latest covering {matched} records "
            f"(signed by {latest[2]})"
        )
        if uncovered:
            facts.append(f"{_plural(uncovered, 'record')} after the latest checkpoint are not covered")
            warnings.append(
                f"{_plural(uncovered, 'record')} after the latest checkpoint are not covered: deleting "
                "them would go unnoticed (run `medsec audit checkpoint` after each session)"
            )
    else:
        facts.append(f"no checkpoint: the {_plural(records, 'record')} are not covered")
        warnings.append(
            f"no checkpoint: the {_plural(records, 'record')} are not covered, so truncating or "
            "rewriting the log would go unnoticed (run `medsec audit checkpoint` after each session)"
        )
    if ignored:
        facts.append(
            f"{_plural(len(notes) - len(heads), 'checkpoint')} not signed by a trusted key ignored "
            f"(signed by {', '.join(ignored)})"
        )
    if anchors:
        facts.append(f"trusted {_plural(len(anchors), 'key')}: {named}")
    folder = log.resolve().parent
    for k in anchors:
        if k.installation or (k.source != "given" and Path(k.source).resolve().parent == folder):
            warnings.append(
                f"the trusted key {_anchor(k)} is kept beside the log: it proves nothing against "
                "that folder's owner, who can rewrite the log, replace the key and sign again; verify "
                "with --public-key and a copy of the key kept elsewhere (docs/AUDIT.md)"
            )
    return AuditVerifyReport(
        True,
        where,
        records,
        len(heads),
        None,
        f"{where}: {'; '.join(facts)}",
        uncovered=uncovered,
        untrusted=len(notes) - len(heads),
        trusted=tuple(_anchor(k) for k in anchors),
        warnings=tuple(warnings),
    )
