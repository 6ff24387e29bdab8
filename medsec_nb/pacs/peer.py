"""What every PACS peer offers a pull: find one study, then stream its instances as DICOM file bytes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from ..audit.record import is_uid
from ..core.errors import MedsecError


class PacsError(MedsecError):
    """A PACS could not be reached, refused, or sent something unusable; the message names the peer."""


@dataclass(frozen=True)
class StudyQuery:
    """Which study to pull: by Study Instance UID, accession number or patient ID (exactly one study must match)."""

    study_uid: str | None = None
    accession: str | None = None
    patient_id: str | None = None

    def __post_init__(self) -> None:
        if sum(v is not None for v in (self.study_uid, self.accession, self.patient_id)) != 1:
            raise PacsError("give exactly one of a Study Instance UID, an accession number or a patient ID")
        if self.study_uid is not None and not is_uid(self.study_uid):
            raise PacsError("the Study Instance UID given is not a valid DICOM UID (digits and dots, at most 64)")

    def keys(self) -> dict[str, str]:
        """The query as DICOM attribute keywords and values."""
        if self.study_uid is not None:
            return {"StudyInstanceUID": self.study_uid}
        if self.accession is not None:
            return {"AccessionNumber": self.accession}
        return {"PatientID": str(self.patient_id)}

    def describe(self) -> str:
        """The query for messages: a study UID is named, an accession number or patient ID is not."""
        if self.study_uid is not None:
            return f"study {self.study_uid}"
        return "the accession number given" if self.accession is not None else "the patient ID given"


@dataclass(frozen=True)
class Found:
    """The one study a query matched: its UID, how many instances the peer says it holds, and their SOP Classes
    (when the peer said; C-GET needs them)."""

    study_uid: str
    count: int
    sop_classes: tuple[str, ...] = ()


def public_url(url: str) -> str:
    """``url`` as shown and recorded: scheme, host, port and path only (no user, password, query or fragment)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def check_uids(peer: object, uids: list[str], what: str) -> None:
    """A one-line error if the peer sent a ``what`` that is not a DICOM UID (its text is not repeated)."""
    bad = sum(not is_uid(u) for u in uids)
    if bad:
        raise PacsError(f"{peer}: the peer sent {bad} {what}(s) that are not valid DICOM UIDs")


def one_study(peer: object, query: StudyQuery, study_uids: list[str]) -> str:
    """The single study UID a query found, or a one-line error naming the peer. Every UID the peer sent must be
    a valid UID, and a query by study UID must find that study: the peer's matching is not trusted."""
    uids = sorted(set(study_uids))
    check_uids(peer, uids, "study UID")
    if query.study_uid is not None:
        uids = [u for u in uids if u == query.study_uid]
    if not uids:
        raise PacsError(f"{peer}: no study matches {query.describe()}")
    if len(uids) > 1:
        shown = ", ".join(uids[:5]) + (f" and {len(uids) - 5} more" if len(uids) > 5 else "")
        raise PacsError(f"{peer}: {len(uids)} studies match {query.describe()}; pull one by its study UID: {shown}")
    return uids[0]


class Peer(Protocol):
    """A PACS a study is pulled from; ``str(peer)`` names it in messages and records."""

    protocol: str

    def find(self, query: StudyQuery) -> Found: ...

    def list_instances(self, found: Found) -> set[str]:
        """The SOP Instance UIDs the peer lists for the study (slow on some PACS: asked only after a failure)."""
        ...

    def retrieve(self, found: Found) -> Iterator[bytes]:
        """Each instance of ``found`` as DICOM file bytes (Part 10), in memory, as it arrives."""
        ...
