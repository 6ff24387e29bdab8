"""Audit records from cohort workers reach the client's one audit log before the worker goes on.

The client runs a small Dask ``Server`` with one handler; a worker's record is sent over Dask's
own comms (TLS when the cluster uses it) and the worker proceeds only once the client has
appended it durably (under the log's lock) and answered. Each record carries a random id so a
re-sent record is written once; a worker killed after sending loses nothing. The sink accepts
only records that present the cohort's random token (sent to workers with the tasks), so
another local process that finds the port cannot add records.

A worker's record states only what happened where: the client, not the worker, fills in who
(its own verified OS user), the key id and the purpose of use, so a holder of the token cannot
attribute a record to someone else. The worker's own ``who`` is kept as a claim,
``where.worker_os_user``.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..audit import AuditLog, context, record
from ..core.errors import AuditUnavailableError

_OP = "medsec_audit"
_SEND_TRIES = 3


class AuditSink:
    """The client's end: appends forwarded records to ``log``, once per record id, with
    ``who``, ``key_id`` and the purpose set here (see the module docstring)."""

    def __init__(self, log: AuditLog, *, key_id: str | None, purpose: str, purpose_text: str | None = None):
        self.log = log
        self._own = {"who": context.who(), "key_id": key_id, "purpose": purpose, "purpose_text": purpose_text}
        self._seen: dict[str, int] = {}
        self.token = secrets.token_hex(16)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="medsec-audit-sink")
        self.server: Any = None
        self.address: str | None = None

    def start(self, client: Any) -> str:
        """Listen next to ``client`` (on the interface that reaches its scheduler); returns the address."""
        from distributed.comm import get_address_host, parse_address
        from distributed.core import Server
        from distributed.utils import get_ip

        proto, _ = parse_address(client.scheduler.address)
        host = get_address_host(client.scheduler.address)
        ip = "127.0.0.1" if host in ("127.0.0.1", "localhost") else get_ip(host)
        self.server = Server({_OP: self._handle})
        listen_args = client.security.get_listen_args("client")
        client.sync(self.server.listen, f"{proto}://{ip}:0", **listen_args)
        self.address = self.server.address
        return self.address

    async def _handle(self, token: str, rid: str, fields: dict[str, Any]) -> int:
        if not isinstance(token, str) or not hmac.compare_digest(token, self.token):
            raise ValueError("not a worker of this cohort (wrong token)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._append, rid, fields)

    def _append(self, rid: str, fields: dict[str, Any]) -> int:
        claimed, where = fields.get("who"), fields.get("where") or {}
        if not isinstance(where, dict):
            raise ValueError("a forwarded record's where must be an object")
        if isinstance(claimed, dict) and isinstance(claimed.get("os_user"), str):
            where = {**where, "worker_os_user": claimed["os_user"][:256]}
        fields = {**fields, **self._own, "where": where}
        with self._lock:
            if rid not in self._seen:
                self._seen[rid] = self.log.append(**fields)["seq"]
            return self._seen[rid]

    def close(self, client: Any) -> None:
        if self.server is not None:
            client.sync(self.server.close)
            self.server = None
        self._pool.shutdown(wait=True)


class ForwardingLog(AuditLog):
    """A worker's audit log: write-only, every record forwarded to the client's sink.

    Records name the cohort user's key id in ``who`` and this worker (address, ephemeral key,
    attempt) in ``where``. ``on_written``, when set, is called in the sending thread once the
    client has written a record (the batch runner then opens the next study)."""

    def __init__(self, sink: str, token: str, key_id: str | None, attempt: str):  # no local file: no super().__init__
        self.sink = sink
        self._token = token
        self.user_key_id = key_id
        self.attempt = attempt
        self.on_written: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"ForwardingLog({self.sink!r})"

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
        """Send one record and wait until the client has written it; returns its fields and ``seq``."""
        from distributed import get_worker
        from distributed.utils import sync

        worker = get_worker()
        place = {
            **context.where(),
            "worker": worker.address,
            "worker_name": str(worker.name),
            "worker_key": key_id,
            "attempt": self.attempt,
        }
        rid = uuid.uuid4().hex
        fields = dict(
            action=action,
            outcome=outcome,
            purpose=purpose,
            event=event,
            purpose_text=purpose_text,
            key_id=self.user_key_id,
            study=dict(study) if study else None,
            detail=dict(detail) if detail else None,
            who=context.who(),
            where={**place, "rid": rid},
        )
        partial = record.fields(**fields)  # a malformed record fails here, not at the client

        async def send() -> int:
            return await worker.rpc(self.sink).medsec_audit(token=self._token, rid=rid, fields=fields)

        last: BaseException | None = None
        for _ in range(_SEND_TRIES):
            try:
                seq = sync(worker.loop, send)
            except (OSError, asyncio.TimeoutError) as exc:  # comm closed or unreachable: resend (same rid)
                last = exc
                continue
            except Exception as exc:  # the client could not write it
                raise AuditUnavailableError(
                    f"cohort audit sink {self.sink}: record not written ({exc}); the audited operation must not proceed"
                ) from None
            if self.on_written is not None:
                self.on_written()
            return {**partial, "seq": seq}
        raise AuditUnavailableError(
            f"cohort audit sink {self.sink}: unreachable ({type(last).__name__}); "
            "the audited operation must not proceed"
        )


def new_attempt() -> str:
    """An id for one execution of one task (a retried task gets a new one)."""
    return uuid.uuid4().hex[:16]
