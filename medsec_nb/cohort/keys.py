"""Key distribution to cohort workers: a per-process ephemeral X25519 key on each worker;
the client unwraps a study key locally and re-wraps it to the workers' public keys with the
container's own stanza machinery. Only wrapped keys travel."""

from __future__ import annotations

from typing import Any

from Crypto.PublicKey import ECC

from ..access import open_audited
from ..audit import AuditLog
from ..container.remote import FsspecFile, is_remote
from ..container.stanzas import recipient_stanza
from ..errors import MedsecError
from ..keys import Identity, Recipient, generate_identity
from ..policy import Policy

_WORKER_IDENTITY: Identity | None = None


class WorkerKeyMissingError(MedsecError):
    """The task reached a worker its study key was not wrapped to (a worker that joined or was
    restarted after the keys were granted); the cohort re-grants and resubmits it."""


def worker_identity() -> Identity:
    """This process's ephemeral identity: generated on first use, never written or sent."""
    global _WORKER_IDENTITY
    if _WORKER_IDENTITY is None:
        _WORKER_IDENTITY = generate_identity("x25519")
    return _WORKER_IDENTITY


def worker_public_pem() -> str:
    """Run on each worker (``client.run``): the public half of :func:`worker_identity`."""
    return worker_identity().public.pem()


def source_for(url: str, storage_options: dict[str, Any] | None) -> FsspecFile | None:
    """A byte-range reader for a remote URL; None for a local path (the reader's own file)."""
    return FsspecFile(url, storage_options) if is_remote(url) else None


def worker_recipients(pems: list[str]) -> list[Recipient]:
    """The workers' public keys (from :func:`worker_public_pem`), parsed once per grant round."""
    return [Recipient(ECC.import_key(pem)) for pem in pems]


def grant(url: str, identity: Identity, workers: list[Recipient], *, purpose: str,
          storage_options: dict[str, Any] | None, audit_log: AuditLog, policy: Policy | str | None,
          ) -> dict[str, dict[str, Any]]:
    """Unwrap the study key of ``url`` here (policy-checked, recorded as ``cohort-grant``) and
    wrap it to each worker's public key. Returns {worker key id: stanza}."""
    box, _ = open_audited(url, op="cohort-grant", purpose=purpose, identity=identity, audit_log=audit_log,
                          policy=policy, keep_study_key=True, source=source_for(url, storage_options))
    with box:
        key, fid = box.study_key, box.header.body.file_id
        return {r.key_id: recipient_stanza(key, r, fid) for r in workers}

