"""What every stanza type provides, and the helpers they share (docs/FORMAT.md, "Stanzas").

A stanza wraps the study key for one recipient. Each stanza type is one module of this
package implementing :class:`StanzaType`; identity-based types (a public key wraps, the
matching private key unwraps) implement :class:`RecipientType`. ``keys.registry`` maps the
stanza ``type`` strings to them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from Crypto.Cipher import AES

from ..core.errors import FormatError, shown
from .identity import Identity, Recipient

KEY_LEN = 32  # the study key, and every key derived from it
TAG_LEN = 16  # AES-GCM tag
WRAPPED_LEN = KEY_LEN + TAG_LEN  # a study key sealed with AES-GCM
_ZERO_NONCE = bytes(12)  # every wrap key is used once

Stanza = dict[str, Any]
Rand = Callable[[int], bytes]


class StanzaType:
    """A stanza type: its ``type`` string and its public one-line summary. A passphrase type
    has its own wrap and unwrap (with a passphrase, not a key)."""

    type: ClassVar[str]

    def summary(self, stanza: Stanza) -> str:
        """One public line for ``inspect``."""
        return key_summary(stanza)


class RecipientType(StanzaType, ABC):
    """A stanza type that wraps to a :class:`Recipient` and unwraps with its :class:`Identity`."""

    key_type: ClassVar[str]  # the key type (``KEY_TYPES``) to generate for it

    @abstractmethod
    def accepts(self, recipient: Recipient) -> bool:
        """Whether this type wraps to ``recipient``'s key."""

    @abstractmethod
    def wrap(self, study_key: bytes, recipient: Recipient, file_id: bytes, rand: Rand) -> Stanza:
        """A stanza of this type wrapping ``study_key`` to an accepted ``recipient``."""

    @abstractmethod
    def unwrap(self, stanza: Stanza, identity: Identity, file_id: bytes, where: str) -> bytes | None:
        """The study key, or None when ``identity`` does not open ``stanza`` (wrong key type or
        failed authentication); FormatError when a field is malformed."""


def key_summary(stanza: Stanza) -> str:
    """``<type> <kid>``, fit for one line."""
    return f"{shown(stanza.get('type'))} {shown(stanza.get('kid'))}"


def key_ids(stanzas: list[Stanza], most: int = 5) -> str:
    """The stanzas' key ids for an error line: the first ``most``, then how many more."""
    ids = ", ".join(shown(s.get("kid")) for s in stanzas[:most])
    return ids + (f" and {len(stanzas) - most} more" if len(stanzas) > most else "")


def aad(kind: str, file_id: bytes) -> bytes:
    """Associated data binding a wrapped key to its stanza type and container."""
    return b"medsec-nb/v1 stanza " + kind.encode("ascii") + b"\x00" + file_id


def seal(wrap_key: bytes, study_key: bytes, ad: bytes) -> bytes:
    """``study_key`` sealed with AES-256-GCM under a once-used ``wrap_key``: ciphertext || tag."""
    c = AES.new(wrap_key, AES.MODE_GCM, nonce=_ZERO_NONCE, mac_len=TAG_LEN)
    c.update(ad)
    ct, tag = c.encrypt_and_digest(study_key)
    return ct + tag


def open_sealed(wrap_key: bytes, wrapped: bytes, ad: bytes) -> bytes | None:
    """The study key sealed in ``wrapped``, or None when it fails authentication."""
    c = AES.new(wrap_key, AES.MODE_GCM, nonce=_ZERO_NONCE, mac_len=TAG_LEN)
    c.update(ad)
    try:
        return c.decrypt_and_verify(wrapped[:KEY_LEN], wrapped[KEY_LEN:])
    except ValueError:
        return None


def hex_field(stanza: Stanza, field: str, length: int | None, where: str) -> bytes:
    """The hex-encoded ``field`` of ``stanza``, of exactly ``length`` bytes when given."""
    try:
        value = bytes.fromhex(stanza[field])
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"{where}: {shown(stanza.get('type'))} stanza has no valid {field!r}") from None
    if length is not None and len(value) != length:
        raise FormatError(
            f"{where}: {shown(stanza.get('type'))} stanza {field!r} is {len(value)} bytes, expected {length}"
        )
    return value
