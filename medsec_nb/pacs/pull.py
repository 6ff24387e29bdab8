"""Pull one study from a PACS straight into a container: no instance touches the disk in plaintext.

Each instance goes from the network into the container writer as it arrives (memory holds a few instances,
whatever the size of the study); the container appears only when every instance the PACS listed for the
study has arrived and been encrypted. A pull that fails part-way leaves nothing behind and names the
instances that did not arrive: it is cheap to retry, so there is no resume.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pydicom

from ..access.gate import container_id, resolve_purpose
from ..audit import AuditLog
from ..container.writer import encrypt_datasets
from ..core.errors import MedsecError, SourceError
from ..keys.identity import Identity
from .peer import Found, PacsError, Peer, StudyQuery

EVENT_IMPORT = "110107"
#: How many missing SOP Instance UIDs an error names (the count is always given).
SHOWN_MISSING = 5


class _Broken(Exception):
    """Raised inside the instance stream: ``reason`` carries no identifier other than the study's."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _sop_uid(data: bytes) -> str:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        return str(ds.SOPInstanceUID)
    except Exception:  # pydicom raises many types on garbage input
        return ""


def _checked(peer: Peer, found: Found, received: list[str]) -> Iterator[bytes]:
    """The peer's instances of ``found``, refusing strangers and repeats, failing if any is missing at the end."""
    try:
        for data in peer.retrieve(found):
            sop = _sop_uid(data)
            if sop not in found.instances:
                raise _Broken(f"instance {len(received) + 1} is not one the PACS listed for the study (or unreadable)")
            if sop in received:
                raise _Broken(f"instance {len(received) + 1} was sent twice")
            received.append(sop)
            yield data
    except PacsError as exc:
        raise _Broken(str(exc).removeprefix(f"{peer}: ")) from None
    if len(received) < len(found.instances):
        raise _Broken("the transfer ended early")


def _missing(found: Found, received: list[str]) -> str:
    missing = sorted(set(found.instances) - set(received))
    shown = ", ".join(missing[:SHOWN_MISSING]) + (
        f" and {len(missing) - SHOWN_MISSING} more" if len(missing) > SHOWN_MISSING else ""
    )
    return f"{len(missing)} of {len(found.instances)} instances missing: {shown}"


def pull_study(
    peer: Peer,
    query: StudyQuery,
    dest: str | os.PathLike[str],
    recipients: Iterable[Any] = (),
    *,
    signer: Identity | str | os.PathLike[str] | None = None,
    purpose: str | None = None,
    log: AuditLog | None = None,
    progress: bool = True,
) -> Path:
    """Find the one study ``query`` matches on ``peer`` and encrypt it, instance by instance, to ``dest``.

    The pull is recorded in the audit log (action ``pull``, event 110107 Import, with ``purpose``, default
    ``$MEDSEC_PURPOSE``). Raises :class:`PacsError` with one line naming the peer; on failure no container
    is written and the message names the instances that did not arrive.
    """
    purpose = resolve_purpose(purpose)
    recipients = list(recipients)
    if not recipients:
        raise MedsecError("give at least one recipient (a public key, or the key service's site keys)")
    log = log or AuditLog()
    dest = Path(dest)
    detail: dict[str, Any] = {"file": dest.name, "peer": str(peer), "protocol": peer.protocol}
    found = peer.find(query)
    study = {"study_uid": found.study_uid, "instances": len(found.instances)}
    received: list[str] = []
    try:
        encrypt_datasets(
            _checked(peer, found, received),
            dest,
            recipients,
            signer=signer,
            total=len(found.instances),
            progress=progress,
        )
    except (_Broken, SourceError) as exc:
        if isinstance(exc, SourceError):
            received.pop()  # the instance the writer could not use: it is missing from the study
        reason = exc.reason if isinstance(exc, _Broken) else str(exc)
        log.append(
            action="pull",
            outcome="failure",
            event=EVENT_IMPORT,
            purpose=purpose,
            study=study,
            detail={**detail, "received": len(received), "reason": reason},
        )
        raise PacsError(
            f"{peer}: study {found.study_uid}: {reason}; {_missing(found, received)}; "
            f"nothing was written to {dest} (a pull is cheap to retry)"
        ) from None
    log.append(
        action="pull",
        outcome="success",
        event=EVENT_IMPORT,
        purpose=purpose,
        study={**study, "container_sha256": container_id(dest)},
        detail=detail,
    )
    return dest
