"""Key distribution to cohort workers (docs/COHORT.md, "Keys: what travels").

Each worker process has an ephemeral X25519 key. For each grant round the client makes a
:class:`Transport`: a random AES-256 key per worker, wrapped to that worker's public key with
the container's own recipient-stanza code (bound to the round's random id). Each study key is
unwrapped on the client and sealed under every worker's transport key (AES-256-GCM, random
nonce, bound to the round and the study URL): one X25519 agreement per worker per round, not
per study. Only wrapped and sealed keys travel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from Crypto.Cipher import AES
from Crypto.PublicKey import ECC
from Crypto.Random import get_random_bytes

from ..access.gate import open_audited
from ..access.policy import Policy
from ..audit import AuditLog
from ..container.format import KEY_LEN, TAG_LEN
from ..container.remote import FsspecFile, is_remote
from ..container.stanzas import recipient_stanza, unwrap_with_identity
from ..core.errors import AuthenticationError, FormatError, MedsecError
from ..keys.identity import Identity, Recipient, generate_identity

_AAD = b"medsec-nb/v1 cohort transport\x00"
_NONCE_LEN = 12
_ID_LEN = 16

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


@dataclass(frozen=True)
class Transport:
    """One grant round's transport keys. ``public()`` is what travels with the tasks: the round
    id and each worker's transport key wrapped to it; ``keys`` stay in the client."""

    tid: bytes
    keys: dict[str, bytes] = field(repr=False)
    stanzas: dict[str, dict[str, Any]]
    rand: Callable[[int], bytes] = field(default=get_random_bytes, repr=False)

    @classmethod
    def new(cls, workers: list[Recipient], rand: Callable[[int], bytes] = get_random_bytes) -> Transport:
        """``rand``: the randomness source (fixed only for test vectors)."""
        tid = rand(_ID_LEN)
        keys = {r.key_id: rand(KEY_LEN) for r in workers}
        return cls(tid, keys, {r.key_id: recipient_stanza(keys[r.key_id], r, tid, rand) for r in workers}, rand)

    def public(self) -> tuple[str, dict[str, dict[str, Any]]]:
        return self.tid.hex(), dict(self.stanzas)

    def seal(self, study_key: bytes, url: str) -> dict[str, str]:
        """``study_key`` sealed for every worker of the round: {worker key id: hex}."""
        return {kid: _seal(key, self.tid, url, study_key, self.rand) for kid, key in self.keys.items()}


def _aad(tid: bytes, url: str) -> bytes:
    return _AAD + tid + url.encode("utf-8")


def _seal(key: bytes, tid: bytes, url: str, study_key: bytes, rand: Callable[[int], bytes]) -> str:
    nonce = rand(_NONCE_LEN)  # the transport key seals many study keys
    c = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_LEN)
    c.update(_aad(tid, url))
    ct, tag = c.encrypt_and_digest(study_key)
    return (nonce + ct + tag).hex()


def transport_key(public: tuple[str, dict[str, dict[str, Any]]], identity: Identity) -> bytes:
    """On a worker: its transport key for the round ``public`` (from :meth:`Transport.public`)."""
    tid_hex, stanzas = public
    if identity.key_id not in stanzas:
        raise WorkerKeyMissingError(f"transport key not wrapped to this worker ({identity.key_id})")
    return unwrap_with_identity([stanzas[identity.key_id]], identity, bytes.fromhex(tid_hex), "cohort transport")


def unseal(key: bytes, public: tuple[str, dict[str, dict[str, Any]]], url: str, sealed: str) -> bytes:
    """On a worker: the study key of ``url`` from its sealed form; a clear error if altered."""
    try:
        raw = bytes.fromhex(sealed)
    except (TypeError, ValueError):
        raise FormatError(f"{url}: sealed study key is not hex") from None
    if len(raw) != _NONCE_LEN + KEY_LEN + TAG_LEN:
        raise FormatError(f"{url}: sealed study key is {len(raw)} bytes, expected {_NONCE_LEN + KEY_LEN + TAG_LEN}")
    c = AES.new(key, AES.MODE_GCM, nonce=raw[:_NONCE_LEN], mac_len=TAG_LEN)
    c.update(_aad(bytes.fromhex(public[0]), url))
    try:
        return c.decrypt_and_verify(raw[_NONCE_LEN:-TAG_LEN], raw[-TAG_LEN:])
    except ValueError:
        raise AuthenticationError(
            f"{url}: sealed study key failed authentication (altered, or another study's or round's)"
        ) from None


def grant(
    url: str,
    identity: Identity,
    transport: Transport,
    *,
    purpose: str,
    storage_options: dict[str, Any] | None,
    audit_log: AuditLog,
    policy: Policy | str | None,
) -> dict[str, str]:
    """Unwrap the study key of ``url`` here (policy-checked, recorded as ``cohort-grant``) and
    seal it for each worker of ``transport``. Returns {worker key id: sealed key}."""
    box, _ = open_audited(
        url,
        op="cohort-grant",
        purpose=purpose,
        identity=identity,
        audit_log=audit_log,
        policy=policy,
        keep_study_key=True,
        source=source_for(url, storage_options),
    )
    with box:
        return transport.seal(box.study_key, url)
