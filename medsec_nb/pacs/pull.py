"""Pull one study from a PACS straight into a container: no instance touches the disk in plaintext.

Each instance goes from the network into the container writer as it arrives (memory holds a few instances,
whatever the size of the study); the container appears only when every instance the PACS listed for the
study has arrived and been encrypted. A pull that fails part-way leaves nothing behind and names the
instances that did not arrive: it is cheap to retry, so there is no resume.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..access.gate import container_id, resolve_purpose
from ..audit import AuditLog
from ..audit.record import is_uid
from ..container.sources import SourceInstance, split_instance
from ..container.writer import write_container
from ..core.errors import MedsecError, SourceError
from ..keys.identity import Identity
from .peer import Found, PacsError, Peer, StudyQuery
from .policy import PolicyArg, find_allowed, pacs_access

EVENT_IMPORT = "110107"
#: How many missing SOP Instance UIDs an error names (the count is always given).
SHOWN_MISSING = 5


class _Broken(Exception):
    """Raised inside the instance stream: ``reason`` carries no identifier other than the study's."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _matches(inst: SourceInstance, query: StudyQuery) -> bool:
    """Whether an instance holds the accession number or patient ID the study was found by (compared in
    memory on the header the split already parsed: the PACS's matching is not trusted, and the values are
    never repeated)."""
    keys = {k: v for k, v in query.keys().items() if k != "StudyInstanceUID"}
    ds = inst.header
    assert ds is not None  # split_instance keeps it until the writer has the instance
    return all(str(ds.get(k, "") or "").strip() == v.strip() for k, v in keys.items())


def _checked(peer: Peer, found: Found, query: StudyQuery, received: set[str]) -> Iterator[SourceInstance]:
    """The peer's instances of ``found``, split for the writer; strangers (another study, accession number or
    patient ID than the query's), repeats, malformed instances and a short count refused."""
    try:
        for k, data in enumerate(peer.retrieve(found), 1):
            inst = split_instance(data, f"IM{k:05d}.dcm", f"instance {k}")
            if inst.entry["study"] != found.study_uid:
                raise _Broken(f"instance {k} belongs to another study")
            if not is_uid(inst.entry["sop"]):
                raise _Broken(f"instance {k} has a SOP Instance UID that is not a valid DICOM UID")
            if not _matches(inst, query):
                raise _Broken(f"instance {k} does not match {query.describe()}")
            if inst.entry["sop"] in received:
                raise _Broken(f"instance {k} was sent twice")
            if len(received) == found.count:
                raise _Broken(f"more instances arrived than the {found.count} the PACS listed")
            received.add(inst.entry["sop"])
            yield inst
    except (_Broken, SourceError):
        raise
    except PacsError as exc:
        raise _Broken(str(exc).removeprefix(f"{peer}: ")) from None
    except Exception as exc:  # a hostile peer's bytes must not escape as an internal error
        raise _Broken(f"unusable answer ({type(exc).__name__})") from None
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
    policy: PolicyArg = None,
    keyservice: str | os.PathLike[str] | None = None,
) -> Path:
    """Find the one study ``query`` matches on ``peer`` and encrypt it, instance by instance, to ``dest``.

    The pull is recorded in the audit log (action ``pull``, event 110107 Import, with ``purpose``, default
    ``$MEDSEC_PURPOSE``). Raises :class:`PacsError` with one line naming the peer; on failure no container
    is written and the message names the instances that did not arrive. The container is renamed into place
    only after its record is in the log: no record, no container.

    The access policy (``policy``, or the key service's: ``keyservice``, else ``$MEDSEC_KEYSERVICE``, whose log
    then records) must allow ``pull`` of the study, and ``pull-by-patient`` for a patient-level query, before
    anything is fetched (:mod:`.policy`).
    """
    purpose = resolve_purpose(purpose)
    recipients = list(recipients)
    if not recipients:
        raise MedsecError("give at least one recipient (a public key, or the key service's site keys)")
    access = pacs_access(purpose, audit_log=log, policy=policy, keyservice=keyservice)
    log = access.log
    dest = Path(dest)
    detail: dict[str, Any] = {"file": dest.name, "peer": str(peer), "protocol": peer.protocol}
    found = find_allowed(access, peer, query, detail)
    study = {"study_uid": found.study_uid, "instances": found.count}
    received: set[str] = set()
    try:  # the container's own name beside dest until its record is written
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise MedsecError(f"{dest.parent}: cannot write the container there ({exc.strerror})") from None
    os.close(fd)
    part = Path(name)
    try:
        checked = _checked(peer, found, query, received)
        write_container(part, checked, found.count, recipients, signer=signer, progress=progress)
    except Exception as exc:  # once the study is found, every failure is recorded
        reason = exc.reason if isinstance(exc, _Broken) else str(exc) if isinstance(exc, MedsecError) else None
        reason = reason or f"unexpected {type(exc).__name__}"
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
    else:
        log.append(
            action="pull",
            outcome="success",
            event=EVENT_IMPORT,
            purpose=purpose,
            study={**study, "container_sha256": container_id(part)},
            detail=detail,
        )
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest
