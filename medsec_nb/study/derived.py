"""Derived results (a segmentation, a secondary capture) stored encrypted beside their study: ``Study.save_derived``.

Nothing but the finished container reaches the disk. A container names its recipients only by key
id (docs/FORMAT.md, "Stanzas"), so the source's recipients cannot be read back from it; the derived
container is encrypted, in this order, to: the ``recipients`` (or ``passphrase``) given; the key
service's site keys when the study was opened through one; the public key of the identity that
opened the study (an Identity, or the ``.pub`` beside its ``.key`` file when its key id matches).
A study opened with a passphrase needs them given. Given recipients may be anyone, so they need
the policy's ``export``; the defaults keep the results with those who already hold the study.
Recorded as ``derived`` (docs/AUDIT.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom

from ..access.gate import EVENT_ACCESS, container_id
from ..access.service import ServiceLog
from ..container.sources import SourceInstance, iter_memory_instances
from ..container.writer import write_container
from ..core.errors import MedsecError, OutputError, SourceError
from ..keys.identity import Identity, Passphrase, Recipient, load_recipient

if TYPE_CHECKING:
    from .study import Study

#: How the study was opened, as far as choosing default recipients goes: the opener's public key,
#: or the path of its ``.key`` file; None for a passphrase or the key service.
Opener = Recipient | str | os.PathLike[str] | None


def default_recipients(study: Study, opener: Opener) -> list[Recipient]:
    """Who a derived container of ``study`` goes to when no recipients are given (module docstring)."""
    log = study.audit_log
    if isinstance(log, ServiceLog):
        return log.service.recipients()
    if isinstance(opener, Recipient):
        return [opener]
    if opener is not None:
        pub = Path(opener).expanduser().with_suffix(".pub")
        if pub.is_file():
            recipient = load_recipient(pub)
            if recipient.key_id == study.key_id:
                return [recipient]
        raise MedsecError(
            f"{study.path}: no public key {pub.name} matching the opening key beside it; "
            "give recipients= (public keys) for the derived results"
        )
    how = "opened with a passphrase" if study.key_id == "passphrase" else "the opening key is not known here"
    raise MedsecError(f"{study.path}: {how}; give recipients= (public keys) or passphrase= for the derived results")


def _of_study(
    items: Iterator[SourceInstance], uid: str | None, where: str, made: list[str]
) -> Iterator[SourceInstance]:
    """Pass instances of study ``uid`` through, noting each SOP Class UID in ``made``."""
    for k, inst in enumerate(items, 1):
        if inst.entry["study"] != uid:
            raise SourceError(f"instance {k}: belongs to another study than {where} (derived results stay with theirs)")
        made.append(inst.entry["sop_class"])
        yield inst


def save_derived(
    study: Study,
    instances: Iterable[pydicom.Dataset | bytes],
    dest: str | os.PathLike[str],
    recipients: Iterable[Recipient | Identity | str | os.PathLike[str]] | None = None,
    *,
    opener: Opener = None,
    passphrase: Passphrase = None,
    signer: Identity | str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> Path:
    """Encrypt derived ``instances`` (datasets, e.g. a highdicom Segmentation, or Part 10 bytes) of
    ``study`` to the new container ``dest``, in memory; audited as ``derived``. Returns ``dest``."""
    study.require_open()
    target = Path(dest)
    if target.exists():
        raise OutputError(f"{target}: already exists (refusing to overwrite; choose a new name)")
    if recipients is not None or passphrase is not None:
        study.access.authorize("export", "derived", {"recipients": "given"})
    uid = study.series[0].entries[0]["study"] if study.series else None
    made: list[str] = []

    def write() -> Path:
        recips: list[Any] = list(recipients) if recipients is not None else []
        if recipients is None and passphrase is None:
            recips = default_recipients(study, opener)
        items = _of_study(iter_memory_instances(instances), uid, study.path, made)
        return write_container(target, items, None, recips, passphrase, signer, progress=progress, overwrite=False)

    return study.access.audited(
        "derived",
        write,
        event=EVENT_ACCESS,
        detail=lambda path: {
            "container": container_id(path),
            "derived_instances": len(made),
            "sop_classes": sorted(set(made)),
            "recipients": "given" if recipients is not None or passphrase is not None else "default",
        },
    )
