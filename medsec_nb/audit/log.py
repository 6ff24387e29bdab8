"""The append-only, hash-chained JSON Lines audit log.

Writers take an exclusive ``fcntl.flock`` on the log file around reading the last record and
appending the next, and fsync every record, so concurrent kernels and processes never fork
the chain or lose a record. (``filelock`` is not used: it polls, every 50 ms by default.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from ..core.atomic import _fsync_dir
from ..core.errors import AuditIntegrityError, AuditRecordError, AuditUnavailableError
from ..keys.identity import Identity
from . import checkpoint as ckpt
from . import context, events, record
from .paths import checkpoints_path, log_path

#: Records between two automatic checkpoints (``$MEDSEC_AUDIT_CHECKPOINT_EVERY``; 0 disables).
DEFAULT_CHECKPOINT_EVERY = 100
_WINDOW = 1 << 15
_AGE = re.compile(r"([1-9][0-9]*)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: datetime | str) -> str:
    """A time filter as a record-time string. Accepts a datetime, ``YYYY-MM-DD[THH:MM[:SS]][Z|±HH:MM]``
    (UTC when no offset is given) or an age such as ``30m``, ``12h``, ``7d``, ``2w``."""
    if isinstance(value, str):
        m = _AGE.fullmatch(value.strip())
        if m:
            value = datetime.now(timezone.utc) - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        else:
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError:
                raise AuditRecordError(
                    f"cannot read the time {value!r} (use YYYY-MM-DD, "
                    "YYYY-MM-DDTHH:MM[:SS][Z], or an age such as 30m, 12h, 7d)"
                ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _matches(rec: dict[str, Any], study: str | None, user: str | None, since: str | None) -> bool:
    if since is not None and str(rec.get("time", "")) < since:
        return False
    if user is not None:
        who = rec.get("who") or {}
        if user != who.get("os_user"):
            return False
    if study is not None:
        st = rec.get("study") or {}
        if study not in (st.get("study_uid"), st.get("container_sha256")):
            return False
    return True


class AuditLog:
    """One audit log file (``path``, else ``$MEDSEC_AUDIT_LOG``, else ``<data dir>/audit.jsonl``)
    and its checkpoint file (``checkpoints``, else ``$MEDSEC_AUDIT_CHECKPOINTS``, else the log's
    name with suffix ``.checkpoints``)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        checkpoints: str | os.PathLike[str] | None = None,
        checkpoint_every: int | None = None,
    ):
        self.path = log_path(path)
        self.checkpoints_path = checkpoints_path(self.path, checkpoints)
        if checkpoint_every is None:
            env = os.environ.get("MEDSEC_AUDIT_CHECKPOINT_EVERY", "").strip()
            if env and not env.isdigit():
                raise AuditRecordError(f"MEDSEC_AUDIT_CHECKPOINT_EVERY={env!r}: give a number of records (0: never)")
            checkpoint_every = int(env) if env else DEFAULT_CHECKPOINT_EVERY
        self.checkpoint_every = checkpoint_every
        self._identity: Identity | None = None

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    # ------------------------------------------------------------ writing

    def append(
        self,
        *,
        action: str,
        outcome: str,
        purpose: str,
        event: str = "110103",
        purpose_text: str | None = None,
        key_id: str | None = None,
        study: Mapping[str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
        who: Mapping[str, Any] | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write one record durably and return it; who/where are filled from the running context
        unless given (records forwarded from cohort workers carry the worker's).

        Raises AuditUnavailableError if it cannot be written (the caller must not go ahead) and
        AuditRecordError for malformed arguments.
        """
        partial = record.fields(
            event=event,
            action=action,
            outcome=outcome,
            purpose=purpose,
            purpose_text=purpose_text,
            key_id=key_id,
            study=study,
            detail=detail,
            who=context.who() if who is None else who,
            where=context.where() if where is None else where,
        )
        with self._locked() as fd:
            seq, prev, size = self._tail(fd)
            rec, line = record.seal(partial, seq + 1, prev, record.utc_now())
            self._write(fd, line, size)
            if self.checkpoint_every and rec["seq"] % self.checkpoint_every == 0:
                self._periodic_checkpoint(fd, rec, size + len(line))
        events.emit(rec)
        return rec

    def checkpoint(
        self, identity: Identity | str | os.PathLike[str] | None = None, *, co_sign: bool = False
    ) -> dict[str, Any]:
        """Sign the current chain head and append it to the checkpoint file.

        ``identity``: an ed25519 Identity or key file; None = the installation's checkpoint key.
        ``co_sign``: also sign with the installation's key (one note, two signature lines).
        Returns origin, size, hash, bytes, time, key_id (the first signer), signers, note and path.
        """
        idents = [ckpt.signing_identity(identity)]
        if co_sign and identity is not None:
            own = ckpt.signing_identity()
            if own.key_id != idents[0].key_id:
                idents.append(own)
        with self._locked(create=False) as fd:
            seq, head, size = self._tail(fd)
            if seq == 0:
                raise AuditRecordError(f"{self.path}: the log is empty; nothing to checkpoint")
            try:
                return self._write_checkpoint(fd, idents, seq, head, size)
            except OSError as exc:
                raise AuditUnavailableError(
                    f"{self.checkpoints_path}: cannot write the checkpoint ({exc.strerror or exc})"
                ) from None

    def _unavailable(self, what: str, exc: BaseException) -> AuditUnavailableError:
        why = getattr(exc, "strerror", None) or str(exc)
        return AuditUnavailableError(f"{self.path}: cannot {what} ({why}); the audited operation must not proceed")

    @contextlib.contextmanager
    def _locked(self, create: bool = True) -> Iterator[int]:
        """The log open and exclusively locked; ``create``: make it (and its folder) if missing,
        else a missing log is an AuditRecordError and nothing is created."""
        flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
        try:
            try:
                fd = os.open(self.path, flags, 0o600)
            except FileNotFoundError:
                if not create:
                    raise AuditRecordError(
                        f"{self.path}: the log is empty (no such file); nothing to checkpoint"
                    ) from None
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise self._unavailable("open the audit log", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # also releases the flock

    def _tail(self, fd: int) -> tuple[int, str, int]:
        """(last seq, last hash, size) read from the end of the file. An unterminated last line
        (a writer died mid-record, before its fsync returned) is cut off first."""
        size = os.fstat(fd).st_size
        window = _WINDOW
        while size:
            start = max(0, size - window)
            buf = os.pread(fd, size - start, start)
            if not buf.endswith(b"\n"):
                cut = buf.rfind(b"\n")
                if cut < 0 and start > 0:
                    window *= 2
                    continue
                size = start + cut + 1
                try:
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                except OSError as exc:
                    raise self._unavailable("repair the torn last line", exc) from None
                continue
            cut = buf.rfind(b"\n", 0, len(buf) - 1)
            if cut < 0 and start > 0:
                window *= 2
                continue
            try:
                last = record.loads(buf[cut + 1 : -1])
                seq, head = last["seq"], last["hash"]
                if type(seq) is not int or not isinstance(head, str) or len(head) != 64:
                    raise ValueError
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                raise AuditUnavailableError(
                    f"{self.path}: the last record is unreadable (run `medsec audit "
                    "verify`); the audited operation must not proceed"
                ) from None
            return seq, head, size
        return 0, record.GENESIS, 0

    def _write(self, fd: int, line: bytes, size: int) -> None:
        try:
            if os.write(fd, line) != len(line):
                raise OSError("short write")
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise self._unavailable("write the audit record", exc) from None
        if size == 0:
            _fsync_dir(self.path.parent)

    def _first_hash(self, fd: int) -> str:
        window = _WINDOW
        while True:
            buf = os.pread(fd, window, 0)
            cut = buf.find(b"\n")
            if cut >= 0 or len(buf) < window:
                try:
                    first = record.loads(buf[:cut])["hash"]
                    if not isinstance(first, str):
                        raise TypeError
                    return first
                except (ValueError, KeyError, TypeError):
                    raise AuditIntegrityError(f"{self.path}: line 1 is not a record") from None
            window *= 2

    def _write_checkpoint(self, fd: int, idents: list[Identity], seq: int, head: str, length: int) -> dict[str, Any]:
        ch = ckpt.ChainHead(self._first_hash(fd)[:32], seq, head, length, record.utc_now())
        note = ckpt.sign(ch, *idents)
        ckpt.store(self.checkpoints_path, note)
        return {
            "origin": ckpt.ORIGIN_PREFIX + ch.log_id,
            "size": seq,
            "hash": head,
            "bytes": length,
            "time": ch.time,
            "key_id": idents[0].key_id,
            "signers": [i.key_id for i in idents],
            "note": note,
            "path": str(self.checkpoints_path),
        }

    def _periodic_checkpoint(self, fd: int, rec: dict[str, Any], length: int) -> None:
        """A checkpoint with the installation key; a failure only warns (the record is durable)."""
        try:
            if self._identity is None:
                self._identity = ckpt.signing_identity()
            self._write_checkpoint(fd, [self._identity], rec["seq"], rec["hash"], length)
        except Exception as exc:  # the record is durable: a failed checkpoint must not fail the append
            warnings.warn(
                f"{self.checkpoints_path}: automatic checkpoint at record {rec['seq']} not written ({exc})",
                RuntimeWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------ reading

    def _parse(self, line: bytes, where: str) -> dict[str, Any]:
        try:
            rec = record.loads(line)
            if isinstance(rec, dict):
                return rec
        except ValueError:
            pass
        raise AuditIntegrityError(f"{self.path}: {where} is not a record (run `medsec audit verify`)")

    def records(
        self, study: str | None = None, user: str | None = None, since: datetime | str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Records in order, filtered by Study Instance UID or container SHA-256, by OS or
        JupyterHub user, and by time (see :func:`parse_since`). Does not verify the chain."""
        cutoff = parse_since(since) if since is not None else None
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return
        with fh:
            for n, line in enumerate(fh, 1):
                if not line.endswith(b"\n"):
                    break  # being written, or torn
                rec = self._parse(line, f"line {n}")
                if _matches(rec, study, user, cutoff):
                    yield rec

    def follow(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Complete records written after byte ``offset`` and the offset to continue from: lets
        a Jupyter server forward records that kernels (other processes) wrote."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        return [self._parse(line, f"the line at byte {offset}") for line in data[:end].splitlines()], offset + end
