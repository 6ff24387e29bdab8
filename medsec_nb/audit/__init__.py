"""Tamper-evident audit log: hash-chained JSON Lines records, signed checkpoints, exports.

See docs/AUDIT.md for the record, the chain and the checkpoint format.
"""

from ..core.errors import AuditIntegrityError, AuditRecordError, AuditUnavailableError
from .events import set_event_logger
from .log import AuditLog
from .pseudonym import pseudonym
from .verify import AuditVerifyReport, verify_log

__all__ = [
    "AuditIntegrityError",
    "AuditLog",
    "AuditRecordError",
    "AuditUnavailableError",
    "AuditVerifyReport",
    "pseudonym",
    "set_event_logger",
    "verify_log",
]
