"""The stanza types, by ``type`` string: one module each. A new type is one module and one entry here."""

from __future__ import annotations

from typing import Any

from ..core.errors import FormatError, NoMatchingRecipientError, shown
from . import p256, rsa, scrypt, transit, x25519
from .identity import Recipient
from .stanza import RecipientType, StanzaType

STANZA_TYPES: dict[str, StanzaType] = {t.type: t for t in (x25519.TYPE, p256.TYPE, rsa.TYPE, scrypt.TYPE, transit.TYPE)}
#: Transit first: its recipients are RSA keys too, and only it serves a Transit key's.
RECIPIENT_TYPES: tuple[RecipientType, ...] = (transit.TYPE,) + tuple(
    t for t in STANZA_TYPES.values() if isinstance(t, RecipientType) and t is not transit.TYPE
)


def stanza_type(name: Any) -> StanzaType | None:
    """The registered type named ``name`` (a value read from a file), if any."""
    return STANZA_TYPES.get(name) if isinstance(name, str) else None


def unwrapping_type(name: Any, where: str) -> RecipientType:
    """The identity-based type named ``name``; FormatError for any other name."""
    t = stanza_type(name)
    if not isinstance(t, RecipientType):
        raise FormatError(f"{where}: unknown stanza type '{shown(name)}'")
    return t


def wrapping_type(recipient: Recipient) -> RecipientType:
    """The type that wraps to ``recipient``; NoMatchingRecipientError when none does."""
    for t in RECIPIENT_TYPES:
        if t.accepts(recipient):
            return t
    *first, last = [t.key_type for t in RECIPIENT_TYPES[1:]]
    raise NoMatchingRecipientError(f"a {recipient.type} key cannot be a recipient (use {', '.join(first)} or {last})")
