"""Pages of the audit log, newest first, read backwards from the end of the file in blocks.

The cost of a page depends on how far back its records are, not on the size of the log: the
newest 100 records of a 100,000-record log are found in the last few blocks. A page ends at a
cursor (a byte offset at a line boundary) from which the next, older page continues.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import AuditIntegrityError, AuditRecordError
from . import record
from .log import parse_since
from .paths import log_path

BLOCK = 1 << 16
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Filters:
    """Record filters; ``None`` matches everything. ``study`` is a Study Instance UID or a
    container SHA-256 (or a prefix of at least 8 of its hex digits)."""

    study: str | None = None
    user: str | None = None
    action: str | None = None
    outcome: str | None = None
    purpose: str | None = None
    since: str | None = None  # record-time string (see log.parse_since)

    def match(self, rec: dict[str, Any]) -> bool:
        if self.since is not None and str(rec.get("time", "")) < self.since:
            return False
        if self.action is not None and rec.get("action") != self.action:
            return False
        if self.outcome is not None and rec.get("outcome") != self.outcome:
            return False
        if self.purpose is not None and (rec.get("why") or {}).get("purpose") != self.purpose:
            return False
        if self.user is not None:
            who = rec.get("who") or {}
            if self.user != who.get("os_user"):
                return False
        if self.study is not None:
            st = rec.get("study") or {}
            sha = st.get("container_sha256") or ""
            if self.study != st.get("study_uid") and not (len(self.study) >= 8 and sha.startswith(self.study)):
                return False
        return True


@dataclass(frozen=True)
class Page:
    records: list[dict[str, Any]] = field(default_factory=list)  # newest first
    next: int | None = None  # cursor of the next (older) page; None at the start of the log
    size: int = 0  # bytes of complete records in the log when read


def make_filters(
    study: str | None = None,
    user: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    purpose: str | None = None,
    since: str | None = None,
) -> Filters:
    """Filters from text (empty strings ignored); AuditRecordError for a bad ``since``."""
    clean = {
        k: (v.strip() or None) if isinstance(v, str) else v
        for k, v in dict(study=study, user=user, action=action, outcome=outcome, purpose=purpose).items()
    }
    return Filters(**clean, since=parse_since(since) if since and since.strip() else None)


def _lines_backwards(fd: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line without newline) of each complete line ending at or before ``end``, last first."""
    pos, tail = end, b""
    while pos > 0:
        start = max(0, pos - BLOCK)
        buf = os.pread(fd, pos - start, start) + tail
        pos = start
        lines = buf.split(b"\n")
        tail = lines[0]  # possibly cut: completed by the next (earlier) block
        offset = pos + len(buf)
        for line in reversed(lines[1:]):
            offset -= len(line) + 1
            if line:
                yield offset + 1, line
    if tail:
        yield 0, tail


def read_page(
    path: str | os.PathLike[str] | None = None,
    *,
    limit: int = 100,
    before: int | None = None,
    filters: Filters = Filters(),
) -> Page:
    """Up to ``limit`` records matching ``filters``, newest first, from the records that end at
    or before byte ``before`` (default: the end of the log). A torn last line is ignored."""
    if not 1 <= limit <= MAX_LIMIT:
        raise AuditRecordError(f"limit must be between 1 and {MAX_LIMIT}")
    log = log_path(path)
    try:
        fd = os.open(log, os.O_RDONLY)
    except FileNotFoundError:
        return Page()
    try:
        size = os.fstat(fd).st_size
        # complete records only: a writer may be in the middle of a line
        last = os.pread(fd, min(size, BLOCK), max(0, size - BLOCK))
        size -= len(last) - (last.rfind(b"\n") + 1)
        if before is None:
            before = size
        if not 0 <= before <= size:
            raise AuditRecordError(f"cursor {before} is outside the log ({size} bytes)")
        if before and os.pread(fd, 1, before - 1) != b"\n":
            raise AuditRecordError(f"cursor {before} is not at the start of a record")
        out: list[dict[str, Any]] = []
        for offset, line in _lines_backwards(fd, before - 1 if before else 0):
            try:
                rec = record.loads(line)
            except ValueError:
                raise AuditIntegrityError(
                    f"{log}: the line at byte {offset} is not a record (run `medsec audit verify`)"
                ) from None
            if not isinstance(rec, dict):
                raise AuditIntegrityError(f"{log}: the line at byte {offset} is not a record")
            if filters.since is not None and str(rec.get("time", "")) < filters.since:
                return Page(out, None, size)  # records are in time order: nothing older matches
            if filters.match(rec):
                out.append(rec)
                if len(out) == limit:
                    return Page(out, offset or None, size)
        return Page(out, None, size)
    finally:
        os.close(fd)
