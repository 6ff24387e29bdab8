"""Access: the policy (who may do what, to which study, why) and the audited gate every
decryption goes through."""

from .gate import (
    EVENT_ACCESS,
    EVENT_EXPORT,
    EVENT_SECURITY,
    Access,
    VerifyReport,
    add_recipients,
    container_id,
    decrypt_study,
    header_id,
    new_access,
    open_audited,
    resolve_purpose,
    rotate_study,
    verify_study,
)
from .policy import Decision, Policy

__all__ = [
    "EVENT_ACCESS",
    "EVENT_EXPORT",
    "EVENT_SECURITY",
    "Access",
    "Decision",
    "Policy",
    "VerifyReport",
    "add_recipients",
    "container_id",
    "decrypt_study",
    "header_id",
    "new_access",
    "open_audited",
    "resolve_purpose",
    "rotate_study",
    "verify_study",
]
