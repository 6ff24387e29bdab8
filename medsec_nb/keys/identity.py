"""Identities (private keys) and recipients (public keys): generation, files, key ids.

Private keys are stored as PKCS#8 PEM, encrypted with scrypt + AES-256-GCM when a
passphrase is given; public keys as SubjectPublicKeyInfo PEM. A key id is
``<type>:<first 16 bytes of SHA-256(SubjectPublicKeyInfo DER), hex>``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NoReturn

from Crypto.Hash import SHA256
from Crypto.PublicKey import ECC, RSA

from ..core.atomic import atomic_file
from ..core.errors import KeyFileError, WrongPassphraseError

#: Key types medsec-nb generates: x25519, p256 and rsa3072 receive studies; ed25519 and p256 sign.
KEY_TYPES = ("x25519", "p256", "rsa3072", "ed25519")
MIN_RSA_BITS = 3072
KEY_FILE_PROTECTION = "scryptAndAES256-GCM"

Passphrase = str | bytes | Callable[[], str | bytes] | None
PyKey = ECC.EccKey | RSA.RsaKey


def key_type_of(key: PyKey) -> str:
    """The medsec type name of a pycryptodome key ("x25519", "p256", "rsa3072", "ed25519")."""
    if isinstance(key, RSA.RsaKey):
        return f"rsa{key.size_in_bits()}"
    curve = key.curve.lower()
    if curve in ("curve25519", "x25519"):
        return "x25519"
    if curve in ("ed25519",):
        return "ed25519"
    if curve in ("nist p-256", "p-256", "p256", "secp256r1", "prime256v1"):
        return "p256"
    raise KeyFileError(f"unsupported key curve {key.curve!r}")


def _check_supported(key: PyKey, where: str) -> str:
    kt = key_type_of(key)
    if isinstance(key, RSA.RsaKey) and key.size_in_bits() < MIN_RSA_BITS:
        raise KeyFileError(f"{where}: RSA key of {key.size_in_bits()} bits; at least {MIN_RSA_BITS} required")
    return kt


def _spki_der(key: PyKey) -> bytes:
    return key.public_key().export_key(format="DER")


def key_id_of(key: PyKey) -> str:
    """Fingerprint of the public half of ``key``."""
    return f"{key_type_of(key)}:{SHA256.new(_spki_der(key)).hexdigest()[:32]}"


@dataclass(frozen=True, eq=False)
class Recipient:
    """A public key: someone a study can be encrypted to, or a signer to check against."""

    key: PyKey

    @property
    def type(self) -> str:
        return key_type_of(self.key)

    @cached_property
    def key_id(self) -> str:  # keys are immutable: computed once
        return key_id_of(self.key)

    def pem(self) -> str:
        pem = self.key.export_key(format="PEM")
        return pem.decode("ascii") if isinstance(pem, bytes) else pem

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recipient) and _spki_der(self.key) == _spki_der(other.key)

    def __hash__(self) -> int:
        return hash(_spki_der(self.key))

    def __repr__(self) -> str:
        return f"Recipient({self.key_id})"


class Identity:
    """A private key. Its repr shows only the key id."""

    __slots__ = ("_key", "_key_id")

    def __init__(self, key: PyKey):
        if not key.has_private():
            raise KeyFileError("an identity needs a private key")
        _check_supported(key, "identity")
        self._key = key
        self._key_id = key_id_of(key)

    @property
    def key(self) -> PyKey:
        return self._key

    @property
    def type(self) -> str:
        return key_type_of(self._key)

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def public(self) -> Recipient:
        return Recipient(self._key.public_key())

    def __repr__(self) -> str:
        return f"Identity({self.key_id})"

    def __reduce__(self) -> NoReturn:  # never pickle a private key by accident
        raise TypeError("Identity objects cannot be pickled")


def generate_identity(key_type: str = "x25519") -> Identity:
    """Generate a new private key of ``key_type`` (one of :data:`KEY_TYPES`)."""
    if key_type == "x25519":
        return Identity(ECC.generate(curve="Curve25519"))
    if key_type == "ed25519":
        return Identity(ECC.generate(curve="Ed25519"))
    if key_type == "p256":
        return Identity(ECC.generate(curve="P-256"))
    if key_type == "rsa3072":
        return Identity(RSA.generate(3072))
    raise KeyFileError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def resolve_passphrase(passphrase: Passphrase) -> bytes | None:
    if callable(passphrase):
        passphrase = passphrase()
    if passphrase is None:
        return None
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    if not passphrase:
        raise WrongPassphraseError("empty passphrase")
    return bytes(passphrase)


def private_pem(identity: Identity, passphrase: Passphrase = None) -> str:
    """PKCS#8 PEM of the identity, encrypted when a passphrase is given."""
    pw = resolve_passphrase(passphrase)
    key = identity.key
    if pw is None:
        if isinstance(key, RSA.RsaKey):
            return key.export_key(format="PEM", pkcs=8).decode("ascii")
        return key.export_key(format="PEM")
    if isinstance(key, RSA.RsaKey):
        return key.export_key(format="PEM", pkcs=8, passphrase=pw, protection=KEY_FILE_PROTECTION).decode("ascii")
    return key.export_key(format="PEM", passphrase=pw, protection=KEY_FILE_PROTECTION)


def save_identity(
    identity: Identity, prefix: str | os.PathLike[str], passphrase: Passphrase = None, *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write ``prefix.key`` (private, mode 0600) and ``prefix.pub``; return both paths."""
    prefix = Path(prefix)
    key_path = prefix.with_name(prefix.name + ".key")
    pub_path = prefix.with_name(prefix.name + ".pub")
    if not overwrite:
        for p in (key_path, pub_path):
            if p.exists():
                raise KeyFileError(f"{p}: already exists (refusing to overwrite a key)")
    pem = private_pem(identity, passphrase)
    with atomic_file(key_path, mode=0o600, overwrite=overwrite) as fh:
        fh.write(pem.encode("ascii"))
    with atomic_file(pub_path, mode=0o644, overwrite=overwrite) as fh:
        fh.write(identity.public.pem().encode("ascii") + b"\n")
    return key_path, pub_path


def _read_text(path: Path, what: str) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: {what} file not found") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read {what} file ({exc.strerror})") from None
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a PEM {what} file") from None


def _import(pem: str, passphrase: bytes | None) -> PyKey:
    errors: list[Exception] = []
    importers: tuple[Callable[..., PyKey], ...] = (ECC.import_key, RSA.import_key)
    for import_key in importers:
        try:
            return import_key(pem, passphrase=passphrase)
        except (ValueError, IndexError, TypeError) as exc:
            errors.append(exc)
    for err in errors:
        if "passphrase" in str(err).lower() or type(err).__name__ == "IncorrectPassphraseError":
            raise WrongPassphraseError("incorrect passphrase (or the key file is corrupted)") from None
    raise KeyFileError("not a supported PEM key")


def load_identity(path: str | os.PathLike[str], passphrase: Passphrase = None) -> Identity:
    """Read a private key file; ``passphrase`` (or a callable returning it) unlocks an encrypted one.

    The callable is only called when the file is encrypted.
    """
    path = Path(path).expanduser()
    text = _read_text(path, "key")
    if "PRIVATE KEY" not in text:
        raise KeyFileError(f"{path}: not a private key file (a .pub file was given where a .key is needed?)")
    pw = None
    if "ENCRYPTED PRIVATE KEY" in text:
        pw = resolve_passphrase(passphrase)
        if pw is None:
            raise WrongPassphraseError(f"{path}: key file is passphrase-protected; no passphrase given")
    try:
        key = _import(text, pw)
        return Identity(key)
    except WrongPassphraseError:
        raise WrongPassphraseError(f"{path}: incorrect key passphrase (or the key file is corrupted)") from None
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {str(exc).split(': ', 1)[-1]}") from None


def load_recipient(path: str | os.PathLike[str]) -> Recipient:
    """Read a public key file (SubjectPublicKeyInfo PEM)."""
    path = Path(path).expanduser()
    return recipient_from_pem(_read_text(path, "public key"), str(path))


def recipient_from_pem(text: str, where: str) -> Recipient:
    """A public key from SubjectPublicKeyInfo PEM text; ``where`` names its source in errors."""
    if "PRIVATE KEY" in text:
        raise KeyFileError(f"{where}: this is a private key; give the .pub file")
    try:
        key = _import(text, None)
    except KeyFileError:
        raise KeyFileError(f"{where}: not a supported public key file") from None
    _check_supported(key, where)
    return Recipient(key)


def as_recipient(value: Recipient | Identity | str | os.PathLike[str]) -> Recipient:
    """Accept a Recipient, an Identity (its public half) or a .pub path."""
    if isinstance(value, Recipient):
        return value
    if isinstance(value, Identity):
        return value.public
    return load_recipient(value)


def as_identity(value: Identity | str | os.PathLike[str], passphrase: Passphrase = None) -> Identity:
    """Accept an Identity or a .key path."""
    if isinstance(value, Identity):
        return value
    return load_identity(value, passphrase)
