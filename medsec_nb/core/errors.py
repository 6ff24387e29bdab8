"""Exception hierarchy. Every message names the file and the problem, never a secret."""

from __future__ import annotations

from typing import Any


class MedsecError(Exception):
    """Base class of every error medsec-nb raises on purpose."""


class FormatError(MedsecError):
    """The file is not a medsec container, is truncated, or has an unknown version."""


class AuthenticationError(MedsecError):
    """Ciphertext, header or index failed authentication (tampered, truncated or reordered)."""


class NoMatchingRecipientError(MedsecError):
    """The identity given is not among the container's recipients."""


class WrongPassphraseError(MedsecError):
    """A passphrase did not unlock a container or a key file."""


class SignatureError(MedsecError):
    """A producer signature is missing, invalid, or from an unexpected signer."""


class KeyFileError(MedsecError):
    """A key file is unreadable, of the wrong kind, or of an unsupported type."""


class SourceError(MedsecError):
    """A file in a source study folder is unreadable or not a DICOM instance."""


class OutputError(MedsecError):
    """An output could not be written (disk full, permissions); nothing was left behind."""


class PolicyError(MedsecError):
    """A policy file is missing or malformed, or a policy request is malformed."""


class PolicyDeniedError(MedsecError):
    """The access policy does not allow the request; ``decision`` says which rule decided."""

    def __init__(self, decision: Any) -> None:  # an access Decision (its layer is above)
        super().__init__(decision.reason)
        self.decision = decision


class AuditUnavailableError(MedsecError):
    """An audit record could not be written durably: the audited operation must not go ahead."""


class AuditRecordError(MedsecError, ValueError):
    """An audit record, filter or checkpoint request was malformed (a caller's mistake)."""


class AuditIntegrityError(MedsecError):
    """The audit log or its checkpoints failed verification."""


class StudyClosedError(MedsecError):
    """The study was closed; its keys and decrypted buffers were dropped."""


class JustificationError(MedsecError, ValueError):
    """A reveal was asked without a justification long enough to be meaningful."""


def shown(value: Any, limit: int = 80) -> str:
    """A value read from a file, fit for one line of output: escapes instead of control or other
    non-printable characters, cut after ``limit`` characters."""
    text = str(value)
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= limit else text[:limit] + "..."
