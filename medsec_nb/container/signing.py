"""Producer signatures over the container body (Ed25519 or ECDSA P-256, 64-byte signatures)."""

from __future__ import annotations

from typing import Any

from Crypto.Hash import SHA256
from Crypto.PublicKey import ECC
from Crypto.Signature import DSS, eddsa

from ..core.errors import FormatError, KeyFileError, SignatureError
from ..keys.identity import Identity, Recipient, key_id_of
from .format import canonical_json

SIG_LEN = 64
_ALG = {"ed25519": "ed25519", "p256": "ecdsa-p256-sha256"}


def _sign(key: ECC.EccKey, alg: str, message: bytes) -> bytes:
    if alg == "ed25519":
        return eddsa.new(key, "rfc8032").sign(message)
    return DSS.new(key, "deterministic-rfc6979", encoding="binary").sign(SHA256.new(message))


def _verify(key: ECC.EccKey, alg: str, message: bytes, sig: bytes) -> None:
    """Raise ValueError unless ``sig`` is ``key``'s signature of ``message``."""
    if alg == "ed25519":
        eddsa.new(key, "rfc8032").verify(message, sig)
    else:
        DSS.new(key, "fips-186-3", encoding="binary").verify(SHA256.new(message), sig)


def _block(identity_or_recipient: Identity | Recipient, sig: bytes) -> dict[str, Any]:
    key = identity_or_recipient.key
    kind = identity_or_recipient.type
    return {
        "alg": _ALG[kind],
        "kid": key_id_of(key),
        "public_key": key.public_key().export_key(format="DER").hex(),
        "sig": sig.hex(),
    }


def check_signer(identity: Identity) -> None:
    if identity.type not in _ALG:
        raise KeyFileError(f"a {identity.type} key cannot sign; use an ed25519 or p256 key")


def block_length(identity: Identity) -> int:
    """Encoded length of the signature block this identity will produce."""
    check_signer(identity)
    return len(canonical_json(_block(identity, bytes(SIG_LEN))))


def sign(identity: Identity, message: bytes) -> dict[str, Any]:
    check_signer(identity)
    key = identity.key
    assert isinstance(key, ECC.EccKey)  # the signing types are curves
    sig = _sign(key, _ALG[identity.type], message)
    assert len(sig) == SIG_LEN
    return _block(identity, sig)


def verify(block: dict[str, Any], message: bytes, where: str) -> str:
    """Check a signature block; return the signer's key id or raise SignatureError."""
    alg = block.get("alg")
    if not isinstance(alg, str) or alg not in _ALG.values():
        raise FormatError(f"{where}: unknown signature algorithm {alg!r}")
    try:
        key = ECC.import_key(bytes.fromhex(block["public_key"]))
        sig = bytes.fromhex(block["sig"])
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"{where}: malformed signature block") from None
    kid = key_id_of(key)
    if block.get("kid") != kid or _ALG.get(kid.split(":")[0]) != alg:
        raise SignatureError(f"{where}: signature block key id does not match its public key")
    try:
        _verify(key, alg, message, sig)
    except ValueError:
        raise SignatureError(f"{where}: producer signature by {kid} is INVALID (header altered)") from None
    return kid
