"""Pull one study from a PACS straight into a container: no instance touches the disk in plaintext.

Each instance goes from the network into the container writer as it arrives (memory holds a few instances,
whatever the size of the study); the container appears only when every instance the PACS listed for the
study has arrived and been encrypted. A pull that fails part-way leaves nothing behind and names the
instances that did not arrive: it is cheap to retry, so there is no resume.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..access.gate import container_id, resolve_purpose
from ..audit import AuditLog
from ..container.sources import SourceInstance, split_instance
from ..container.writer import write_container
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


def _checked(peer: Peer, found: Found, received: set[str]) -> Iterator[SourceInstance]:
    """The peer's instances of ``found``, split for the writer; strangers, repeats and a short count refused."""
    try:
        for k, data in enumerate(peer.retrieve(found), 1):
            inst = split_instance(data, f"IM{k:05d}.dcm", f"instance {k}")
            if inst.entry["study"] != found.study_uid:
                raise _Broken(f"instance {k} belongs to another study")
            if inst.entry["sop"] in received:
                raise _Broken(f"instance {k} was sent twice")
            if len(received) == found.count:
                raise _Broken(f"more instances arrived than the {found.count} the PACS listed")
            received.add(inst.entry["sop"])
            yield inst
    except PacsError as exc:
        raise _Broken(str(exc).removeprefix(f"{peer}: ")) from None
    if len(received) < found.count:
        raise _Broken("the transfer ended early")


def _missing(peer: Peer, found: Found, received: set[str]) -> str:
    """How many instances did not arrive, and which (if the peer can still list them)."""
    n = found.count - len(received)
    try:
        missing = sorted(peer.list_instances(found) - received)
    except PacsError:
        return f"{n} of {found.count} instances missing (the PACS cannot list which now)"
    shown = ", ".join(missing[:SHOWN_MISSING]) + (
        f" and {len(missing) - SHOWN_MISSING} more" if len(missing) > SHOWN_MISSING else ""
    )
    return f"{n} of {found.count} instances missing: {shown}"


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
    study = {"study_uid": found.study_uid, "instances": found.count}
    received: set[str] = set()
    try:
        write_container(
            dest, _checked(peer, found, received), found.count, recipients, signer=signer, progress=progress
        )
    except (_Broken, SourceError) as exc:
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
            f"{peer}: study {found.study_uid}: {reason}; {_missing(peer, found, received)}; "
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
