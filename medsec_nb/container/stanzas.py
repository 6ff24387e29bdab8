"""Recipient stanzas: the study key wrapped once per recipient (docs/FORMAT.md, "Stanzas")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from Crypto.Cipher import AES, PKCS1_OAEP
from Crypto.Hash import SHA256
from Crypto.Protocol import DH
from Crypto.Protocol.KDF import HKDF, scrypt
from Crypto.PublicKey import ECC, RSA
from Crypto.Random import get_random_bytes

from ..core.errors import AuthenticationError, FormatError, NoMatchingRecipientError, WrongPassphraseError
from ..keys.identity import Identity, Recipient
from .format import KEY_LEN, TAG_LEN, shown

WRAPPED_LEN = KEY_LEN + TAG_LEN
SCRYPT_DEFAULT_LOG_N = 17
SCRYPT_MIN_LOG_N = 10  # readers accept down to this (test vectors); writers default to 17
SCRYPT_MAX_LOG_N = 18  # one step above the writers' default
SCRYPT_MAX_WORK = 1 << 21  # N * r * p: twice the writers' default (2^17, r=8, p=1); memory 128 r N <= 256 MiB
_ZERO_NONCE = bytes(12)


def _aad(kind: str, file_id: bytes) -> bytes:
    return b"medsec-nb/v1 stanza " + kind.encode("ascii") + b"\x00" + file_id


def _seal(wrap_key: bytes, study_key: bytes, aad: bytes) -> bytes:
    c = AES.new(wrap_key, AES.MODE_GCM, nonce=_ZERO_NONCE, mac_len=TAG_LEN)
    c.update(aad)
    ct, tag = c.encrypt_and_digest(study_key)
    return ct + tag


def _open(wrap_key: bytes, wrapped: bytes, aad: bytes) -> bytes | None:
    c = AES.new(wrap_key, AES.MODE_GCM, nonce=_ZERO_NONCE, mac_len=TAG_LEN)
    c.update(aad)
    try:
        return c.decrypt_and_verify(wrapped[:KEY_LEN], wrapped[KEY_LEN:])
    except ValueError:
        return None


def _hex(st: dict[str, Any], field: str, length: int | None, where: str) -> bytes:
    try:
        value = bytes.fromhex(st[field])
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"{where}: {shown(st.get('type'))} stanza has no valid {field!r}") from None
    if length is not None and len(value) != length:
        raise FormatError(f"{where}: {shown(st.get('type'))} stanza {field!r} is {len(value)} bytes, expected {length}")
    return value


def _key_ids(stanzas: list[dict[str, Any]], most: int = 5) -> str:
    """The stanzas' key ids for an error line: the first ``most``, then how many more."""
    ids = ", ".join(shown(s.get("kid")) for s in stanzas[:most])
    return ids + (f" and {len(stanzas) - most} more" if len(stanzas) > most else "")


def _ecdh_wrap_key(kind: str, shared: bytes, epk: bytes, rpk: bytes) -> bytes:
    return HKDF(shared, KEY_LEN, epk + rpk, SHA256, context=b"medsec-nb/v1 " + kind.encode("ascii"))


def _ec_raw(key: ECC.EccKey) -> bytes:
    return key.public_key().export_key(format="raw")


def _ec_curve(kind: str) -> str:
    return {"x25519": "Curve25519", "p256": "P-256"}[kind]


# ---------------------------------------------------------------- wrapping


def scrypt_stanza(
    study_key: bytes,
    passphrase: bytes,
    file_id: bytes,
    log_n: int = SCRYPT_DEFAULT_LOG_N,
    r: int = 8,
    p: int = 1,
    rand: Callable[[int], bytes] = get_random_bytes,
) -> dict[str, Any]:
    _check_scrypt(log_n, r, p, "passphrase")
    salt = rand(16)
    wk = scrypt(passphrase, salt, KEY_LEN, N=1 << log_n, r=r, p=p)
    return {
        "type": "scrypt",
        "salt": salt.hex(),
        "log_n": log_n,
        "r": r,
        "p": p,
        "wrapped": _seal(wk, study_key, _aad("scrypt", file_id)).hex(),
    }


def recipient_stanza(
    study_key: bytes, recipient: Recipient, file_id: bytes, rand: Callable[[int], bytes] = get_random_bytes
) -> dict[str, Any]:
    kind = recipient.type
    if kind in ("x25519", "p256"):
        eph = ECC.generate(curve=_ec_curve(kind), randfunc=rand)
        shared = DH.key_agreement(static_pub=recipient.key, eph_priv=eph, kdf=lambda z: z)
        epk, rpk = _ec_raw(eph), _ec_raw(recipient.key)
        wk = _ecdh_wrap_key(kind, shared, epk, rpk)
        return {
            "type": kind,
            "kid": recipient.key_id,
            "epk": epk.hex(),
            "wrapped": _seal(wk, study_key, _aad(kind, file_id)).hex(),
        }
    if kind.startswith("rsa"):
        oaep = PKCS1_OAEP.new(recipient.key, hashAlgo=SHA256, label=_aad("rsa-oaep-sha256", file_id), randfunc=rand)
        return {"type": "rsa-oaep-sha256", "kid": recipient.key_id, "wrapped": oaep.encrypt(study_key).hex()}
    raise NoMatchingRecipientError(f"a {kind} key cannot be a recipient (use x25519, p256 or rsa3072)")


# ---------------------------------------------------------------- unwrapping


def _check_scrypt(log_n: Any, r: Any, p: Any, where: str) -> None:
    """Refuse scrypt parameters outside the accepted cost (docs/FORMAT.md), before any derivation:
    they come from the file, and a hostile one could ask for minutes of work and gigabytes."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (log_n, r, p)):
        raise FormatError(f"{where}: scrypt parameters are not integers")
    if (
        not SCRYPT_MIN_LOG_N <= log_n <= SCRYPT_MAX_LOG_N
        or not 1 <= r <= 32
        or not 1 <= p <= 16
        or (1 << log_n) * r * p > SCRYPT_MAX_WORK
    ):
        raise FormatError(
            f"{where}: scrypt cost log_n={log_n} r={r} p={p} is outside the accepted bound "
            f"(N = 2^{SCRYPT_MIN_LOG_N} .. 2^{SCRYPT_MAX_LOG_N}, r <= 32, p <= 16, "
            f"N*r*p <= 2^{SCRYPT_MAX_WORK.bit_length() - 1})"
        )


def passphrase_stanza(stanzas: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """The container's one scrypt stanza, its cost checked; raise before a passphrase is asked
    for a container that cannot be opened with one."""
    if not any(s.get("type") == "scrypt" for s in stanzas):
        raise NoMatchingRecipientError(
            f"{where}: not passphrase-protected; it is encrypted to public keys ({_key_ids(stanzas)})"
        )
    if len(stanzas) != 1:
        raise FormatError(f"{where}: a passphrase stanza must be the only stanza")
    st = stanzas[0]
    _check_scrypt(st.get("log_n"), st.get("r"), st.get("p"), where)
    return st


def unwrap_with_passphrase(stanzas: list[dict[str, Any]], passphrase: bytes, file_id: bytes, where: str) -> bytes:
    st = passphrase_stanza(stanzas, where)
    salt = _hex(st, "salt", 16, where)
    wrapped = _hex(st, "wrapped", WRAPPED_LEN, where)
    wk = scrypt(passphrase, salt, KEY_LEN, N=1 << st["log_n"], r=st["r"], p=st["p"])
    key = _open(wk, wrapped, _aad("scrypt", file_id))
    if key is None:
        raise WrongPassphraseError(f"{where}: wrong passphrase (or the passphrase stanza was altered)")
    return key


def unwrap_with_identity(stanzas: list[dict[str, Any]], identity: Identity, file_id: bytes, where: str) -> bytes:
    kid = identity.key_id
    mine = [s for s in stanzas if s.get("kid") == kid]
    if not mine:
        if any(s.get("type") == "scrypt" for s in stanzas):
            raise NoMatchingRecipientError(f"{where}: passphrase-protected; give its passphrase, not a key")
        raise NoMatchingRecipientError(f"{where}: not encrypted to key {kid} (recipients: {_key_ids(stanzas)})")
    for st in mine:
        key = _unwrap_one(st, identity, file_id, where)
        if key is not None:
            return key
    raise AuthenticationError(
        f"{where}: the study key wrapped for {kid} failed authentication (recipient stanza altered)"
    )


def _unwrap_one(st: dict[str, Any], identity: Identity, file_id: bytes, where: str) -> bytes | None:
    kind = st.get("type")
    if kind in ("x25519", "p256"):
        if identity.type != kind:
            return None
        epk_len = 32 if kind == "x25519" else 65
        epk = _hex(st, "epk", epk_len, where)
        wrapped = _hex(st, "wrapped", WRAPPED_LEN, where)
        try:
            eph_pub = DH.import_x25519_public_key(epk) if kind == "x25519" else ECC.import_key(epk, curve_name="P-256")
            shared = DH.key_agreement(static_priv=identity.key, eph_pub=eph_pub, kdf=lambda z: z)
        except ValueError:
            return None
        wk = _ecdh_wrap_key(kind, shared, epk, _ec_raw(identity.key))
        return _open(wk, wrapped, _aad(kind, file_id))
    if kind == "rsa-oaep-sha256":
        if not isinstance(identity.key, RSA.RsaKey):
            return None
        wrapped = _hex(st, "wrapped", identity.key.size_in_bytes(), where)
        oaep = PKCS1_OAEP.new(identity.key, hashAlgo=SHA256, label=_aad("rsa-oaep-sha256", file_id))
        try:
            key = oaep.decrypt(wrapped)
        except ValueError:
            return None
        return key if len(key) == KEY_LEN else None
    raise FormatError(f"{where}: unknown stanza type '{shown(kind)}'")


def stanza_summary(st: dict[str, Any]) -> str:
    """One public line per stanza, for ``inspect``."""
    if st.get("type") == "scrypt":
        return f"passphrase (scrypt N=2^{shown(st.get('log_n'))}, r={shown(st.get('r'))}, p={shown(st.get('p'))})"
    return f"{shown(st.get('type'))} {shown(st.get('kid'))}"
