"""Recipient stanzas: the study key wrapped once per recipient (docs/FORMAT.md, "Stanzas").

The stanza types live in ``keys`` (one module each, found through ``keys.registry``); this
module picks the one a recipient, a stanza or a passphrase needs.
"""

from __future__ import annotations

from Crypto.Random import get_random_bytes

from ..core.errors import AuthenticationError, NoMatchingRecipientError
from ..keys import registry, scrypt
from ..keys.identity import Identity, Recipient
from ..keys.scrypt import SCRYPT_DEFAULT_LOG_N, passphrase_stanza
from ..keys.stanza import WRAPPED_LEN, Rand, Stanza, key_ids, key_summary

__all__ = [
    "SCRYPT_DEFAULT_LOG_N",
    "WRAPPED_LEN",
    "passphrase_stanza",
    "recipient_stanza",
    "scrypt_stanza",
    "stanza_summary",
    "unwrap_with_identity",
    "unwrap_with_passphrase",
]

scrypt_stanza = scrypt.wrap


def recipient_stanza(study_key: bytes, recipient: Recipient, file_id: bytes, rand: Rand = get_random_bytes) -> Stanza:
    """The stanza wrapping ``study_key`` to ``recipient``, of the type that serves its key."""
    return registry.wrapping_type(recipient).wrap(study_key, recipient, file_id, rand)


def unwrap_with_passphrase(stanzas: list[Stanza], passphrase: bytes, file_id: bytes, where: str) -> bytes:
    return scrypt.unwrap(passphrase_stanza(stanzas, where), passphrase, file_id, where)


def unwrap_with_identity(stanzas: list[Stanza], identity: Identity, file_id: bytes, where: str) -> bytes:
    kid = identity.key_id
    mine = [s for s in stanzas if s.get("kid") == kid]
    if not mine:
        if any(scrypt.is_passphrase(s) for s in stanzas):
            raise NoMatchingRecipientError(f"{where}: passphrase-protected; give its passphrase, not a key")
        raise NoMatchingRecipientError(f"{where}: not encrypted to key {kid} (recipients: {key_ids(stanzas)})")
    for st in mine:
        key = registry.unwrapping_type(st.get("type"), where).unwrap(st, identity, file_id, where)
        if key is not None:
            return key
    raise AuthenticationError(
        f"{where}: the study key wrapped for {kid} failed authentication (recipient stanza altered)"
    )


def stanza_summary(st: Stanza) -> str:
    """One public line per stanza, for ``inspect``."""
    t = registry.stanza_type(st.get("type"))
    return key_summary(st) if t is None else t.summary(st)
