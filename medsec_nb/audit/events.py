"""Audit records as Jupyter server events (jupyter_events), when a server hands us its logger."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jupyter_events import EventLogger

SCHEMA_ID = "urn:medsec-nb:events:audit:v1"
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "data" / "events" / "audit.yaml"

_logger: EventLogger | None = None


def set_event_logger(logger: EventLogger | None) -> None:
    """Emit every record appended in this process on ``logger`` (a ``jupyter_events.EventLogger``,
    e.g. ``serverapp.event_logger``); the schema is registered on it. None stops emitting."""
    global _logger
    if logger is not None and SCHEMA_ID not in logger.schemas:
        logger.register_event_schema(SCHEMA_PATH)
    _logger = logger


def emit(record: dict[str, Any]) -> None:
    """Emit ``record`` if a logger is set. The record is already durable: a failure only warns."""
    if _logger is None:
        return
    try:
        _logger.emit(schema_id=SCHEMA_ID, data=record)
    except Exception as exc:  # a broken event handler must not fail an audited, completed access
        warnings.warn(f"audit event not emitted ({type(exc).__name__}: {exc})", RuntimeWarning, stacklevel=3)


def emit_from_other_process(record: dict[str, Any], own_pid: int) -> bool:
    """Emit a record read back from the log unless this process wrote (and so already emitted) it."""
    if (record.get("where") or {}).get("pid") == own_pid:
        return False
    emit(record)
    return _logger is not None
