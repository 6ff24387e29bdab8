"""Jupyter server extension: audit records as server events (jupyter_events).

Records appended in the server process are emitted as they are written. Kernels are other
processes, so their records are forwarded by following the audit log file: every second the
server reads complete records appended since it last looked and emits those written by
another process. The log file stays the evidence; the event stream is for the ecosystem's
own tooling (``serverapp.event_logger`` listeners, handlers, the future lab extension).
"""

from __future__ import annotations

import os
from typing import Any

from ..audit import AuditLog, set_event_logger
from ..audit.events import emit_from_other_process
from .handlers import setup_handlers

POLL_MS = 1000


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "medsec_nb.server"}]


class AuditForwarder:
    """Emits the records other processes append to ``log`` after this object was made."""

    def __init__(self, log: AuditLog):
        self.log = log
        self.offset = log.path.stat().st_size if log.path.exists() else 0

    def poll(self) -> int:
        records, self.offset = self.log.follow(self.offset)
        return sum(emit_from_other_process(rec, os.getpid()) for rec in records)


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from tornado.ioloop import PeriodicCallback

    set_event_logger(serverapp.event_logger)
    forwarder = AuditForwarder(AuditLog())
    callback = PeriodicCallback(forwarder.poll, POLL_MS)
    callback.start()
    serverapp.web_app.settings["medsec_audit_forwarder"] = forwarder
    serverapp.web_app.settings["medsec_audit_callback"] = callback
    setup_handlers(serverapp.web_app)
    serverapp.log.info("medsec-nb: audit records of %s are emitted as server events", forwarder.log.path)


def _unload_jupyter_server_extension(serverapp: Any) -> None:
    callback = serverapp.web_app.settings.pop("medsec_audit_callback", None)
    if callback is not None:
        callback.stop()
    set_event_logger(None)
