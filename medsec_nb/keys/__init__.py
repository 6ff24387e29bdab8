"""Keys: identities (private keys) and recipients (public keys), their files and key ids; and
the stanza types that wrap a study key to them, one module each (``stanza`` is their interface,
``registry`` lists them)."""

from .identity import (
    KEY_TYPES,
    Identity,
    Passphrase,
    Recipient,
    as_identity,
    as_recipient,
    generate_identity,
    key_id_of,
    load_identity,
    load_recipient,
    private_pem,
    resolve_passphrase,
    save_identity,
)

__all__ = [
    "KEY_TYPES",
    "Identity",
    "Passphrase",
    "Recipient",
    "as_identity",
    "as_recipient",
    "generate_identity",
    "key_id_of",
    "load_identity",
    "load_recipient",
    "private_pem",
    "resolve_passphrase",
    "save_identity",
]
