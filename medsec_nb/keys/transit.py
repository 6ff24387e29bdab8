"""``transit-rsa-oaep`` stanzas: the study key for a site key held in OpenBao's Transit engine,
whose private half never leaves OpenBao (docs/FORMAT.md, "Stanzas"; docs/KEYSERVICE.md, "Transit").

Transit decrypts RSA-OAEP-SHA256 with an empty label only, so the stanza cannot bind the file
through the label: a fresh one-time key is RSA-OAEP encrypted (``otk``, as Transit's
``vault:vN:`` ciphertext) and seals the study key with AES-256-GCM whose associated data names
the stanza type, the file id and the key id. :class:`TransitKey` is what the key service holds
instead of a private key: it asks OpenBao's HTTP API to decrypt ``otk``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from Crypto.Cipher import PKCS1_OAEP
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA

from ..core.errors import AuthenticationError, FormatError, MedsecError, NoMatchingRecipientError, shown
from .identity import Identity, Recipient, recipient_from_pem
from .stanza import KEY_LEN, WRAPPED_LEN, Rand, RecipientType, Stanza, aad, hex_field, key_ids, open_sealed, seal

TYPE_NAME = "transit-rsa-oaep"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a Transit key name, safe in a URL path
_OTK = re.compile(r"vault:v([1-9][0-9]{0,8}):([A-Za-z0-9+/]+={0,2})")


@dataclass(frozen=True, eq=False)
class TransitRecipient(Recipient):
    """The public key of one version of a Transit key, with the key's name and that version, and
    the key's ``min_decryption_version`` (OpenBao no longer decrypts the versions below it)."""

    name: str
    version: int
    min_decryption_version: int = 1

    def __repr__(self) -> str:
        return f"TransitRecipient({self.name} v{self.version}, {self.key_id})"

    def retires(self, stanza: Stanza) -> bool:
        """Whether ``stanza`` wraps to a version of this key that OpenBao no longer decrypts."""
        version = stanza.get("version")
        return (
            stanza.get("type") == TYPE_NAME
            and stanza.get("transit") == self.name
            and isinstance(version, int)
            and not isinstance(version, bool)
            and version < self.min_decryption_version
        )


def _ad(file_id: bytes, kid: str) -> bytes:
    return aad(TYPE_NAME, file_id) + b"\x00" + kid.encode("utf-8")


def _otk(stanza: Stanza, where: str) -> tuple[str, int, bytes]:
    """(Transit key name, version, RSA ciphertext) of a well-formed stanza; FormatError otherwise."""
    name, version, otk = stanza.get("transit"), stanza.get("version"), stanza.get("otk")
    m = _OTK.fullmatch(otk) if isinstance(otk, str) else None
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise FormatError(f"{where}: {TYPE_NAME} stanza has no valid 'transit' key name")
    if m is None or isinstance(version, bool) or not isinstance(version, int) or int(m.group(1)) != version:
        raise FormatError(f"{where}: {TYPE_NAME} stanza has no valid 'otk' of its 'version'")
    if not isinstance(stanza.get("kid"), str):
        raise FormatError(f"{where}: {TYPE_NAME} stanza has no valid 'kid'")
    try:
        return name, version, base64.b64decode(m.group(2), validate=True)
    except binascii.Error:
        raise FormatError(f"{where}: {TYPE_NAME} stanza 'otk' is not valid base64") from None


class TransitOaep(RecipientType):
    type = TYPE_NAME
    key_type = "rsa3072"

    def accepts(self, recipient: Recipient) -> bool:
        return isinstance(recipient, TransitRecipient) and isinstance(recipient.key, RSA.RsaKey)

    def wrap(self, study_key: bytes, recipient: Recipient, file_id: bytes, rand: Rand) -> Stanza:
        assert isinstance(recipient, TransitRecipient) and isinstance(recipient.key, RSA.RsaKey)  # accepted
        otk = rand(KEY_LEN)
        ct = PKCS1_OAEP.new(recipient.key, hashAlgo=SHA256, randfunc=rand).encrypt(otk)
        return {
            "type": self.type,
            "kid": recipient.key_id,
            "transit": recipient.name,
            "version": recipient.version,
            "otk": f"vault:v{recipient.version}:{base64.b64encode(ct).decode('ascii')}",
            "wrapped": seal(otk, study_key, _ad(file_id, recipient.key_id)).hex(),
        }

    def unwrap(self, stanza: Stanza, identity: Identity, file_id: bytes, where: str) -> bytes | None:
        """With a local copy of the private key (an exported Transit key, or a test vector's)."""
        key = identity.key
        if not isinstance(key, RSA.RsaKey):
            return None
        _, _, ct = _otk(stanza, where)
        if len(ct) != key.size_in_bytes():
            raise FormatError(f"{where}: {TYPE_NAME} stanza 'otk' is not {key.size_in_bytes()} bytes")
        try:
            otk = PKCS1_OAEP.new(key, hashAlgo=SHA256).decrypt(ct)
        except ValueError:
            return None
        return self.open(stanza, otk, file_id, where)

    def open(self, stanza: Stanza, otk: bytes, file_id: bytes, where: str) -> bytes | None:
        """The study key sealed in ``stanza`` under its decrypted one-time key, or None."""
        wrapped = hex_field(stanza, "wrapped", WRAPPED_LEN, where)
        if len(otk) != KEY_LEN:
            return None
        return open_sealed(otk, wrapped, _ad(file_id, str(stanza["kid"])))

    def summary(self, stanza: Stanza) -> str:
        name, version = shown(stanza.get("transit")), shown(stanza.get("version"))
        return f"{TYPE_NAME} {shown(stanza.get('kid'))} (transit key {name} v{version})"


TYPE = TransitOaep()


class _Refused(MedsecError):
    """OpenBao answered but refused this request (for instance a version below the key's
    ``min_decryption_version``): another stanza may still open."""


def _reason(exc: urllib.error.HTTPError) -> str:
    """OpenBao's first error message, on one line (it holds no token or key material)."""
    try:
        errs = json.loads(exc.read(1 << 16)).get("errors")
    except (ValueError, AttributeError, OSError):
        return ""
    text = " ".join(str(errs[0]).split())[:200] if isinstance(errs, list) and errs else ""
    return f" ({text})" if text else ""


class TransitKey:
    """A site key in OpenBao's Transit engine at ``addr``, used with ``token``: the key service
    holds this instead of a private key. Its repr and its errors never show the token."""

    def __init__(self, addr: str, name: str, token: str, *, timeout: float = 10.0):
        if not _NAME.fullmatch(name):
            raise MedsecError(f"transit key name {name!r} is not valid")
        if not addr.startswith(("http://", "https://")):
            raise MedsecError(f"OpenBao address {addr!r} is not an http:// or https:// URL")
        self.addr = addr.rstrip("/")
        self.name = name
        self._token = token.strip()
        self.timeout = timeout
        self.versions: dict[int, TransitRecipient] = {}
        self.refresh()

    def __repr__(self) -> str:
        return f"TransitKey({self.addr}, {self.name})"

    @property
    def type(self) -> str:
        return "transit"

    @property
    def public(self) -> TransitRecipient:
        """The newest version's public key: what studies are encrypted to."""
        return self.versions[max(self.versions)]

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        where = f"OpenBao at {self.addr}"
        req = urllib.request.Request(
            f"{self.addr}/v1/{path}",
            data=None if body is None else json.dumps(body).encode("ascii"),
            method=method,
            headers={"X-Vault-Token": self._token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # the site's own URL (http or https)
                reply = json.loads(resp.read(1 << 20))
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                raise MedsecError(f"{where} is sealed (or in standby): transit key {self.name} unavailable") from None
            if exc.code == 403:
                raise MedsecError(f"{where}: permission denied for transit key {self.name} (check the token)") from None
            raise _Refused(f"{where}: {method} {path} failed with HTTP {exc.code}{_reason(exc)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MedsecError(f"{where} unreachable ({str(reason)[:200]})") from None
        except ValueError:
            raise MedsecError(f"{where}: {method} {path} answered malformed JSON") from None
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, dict):
            raise MedsecError(f"{where}: {method} {path} answered no data")
        return data

    def refresh(self) -> None:
        """Read the key's versions and their public keys (``GET transit/keys/NAME``)."""
        data = self._call("GET", f"transit/keys/{self.name}")
        where = f"OpenBao at {self.addr}: transit key {self.name}"
        keys = data.get("keys")
        if not isinstance(keys, dict) or not str(data.get("type", "")).startswith("rsa-"):
            raise MedsecError(f"{where} is not an RSA key (create it with type=rsa-3072)")
        minimum = data.get("min_decryption_version")
        minimum = minimum if isinstance(minimum, int) and not isinstance(minimum, bool) and minimum > 1 else 1
        versions = {}
        for v, info in keys.items():
            pem = info.get("public_key") if isinstance(info, dict) else None
            if not isinstance(pem, str) or not v.isdigit():
                raise MedsecError(f"{where}: version {shown(v)} has no public key")
            versions[int(v)] = TransitRecipient(recipient_from_pem(pem, where).key, self.name, int(v), minimum)
        if not versions:
            raise MedsecError(f"{where} has no versions")
        self.versions = versions

    def decrypt(self, otk: str) -> bytes:
        """Transit's plaintext for a ``vault:vN:`` ciphertext (``POST transit/decrypt/NAME``)."""
        data = self._call("POST", f"transit/decrypt/{self.name}", {"ciphertext": otk})
        try:
            return base64.b64decode(str(data["plaintext"]), validate=True)
        except (KeyError, binascii.Error, ValueError):
            raise MedsecError(f"OpenBao at {self.addr}: malformed decrypt reply") from None

    def unwrap(self, stanzas: list[Stanza], file_id: bytes, where: str) -> tuple[bytes, str]:
        """(study key, key id) from the stanza for this Transit key; NoMatchingRecipientError when
        there is none, AuthenticationError when it fails, MedsecError when OpenBao cannot answer."""
        mine = [s for s in stanzas if s.get("type") == TYPE_NAME and s.get("transit") == self.name]
        if any(_otk(s, where)[1] not in self.versions for s in mine):
            self.refresh()  # rotated since
        ids = {r.key_id for r in self.versions.values()}
        retired = sorted({int(s["version"]) for s in mine if self.public.retires(s)})
        mine = [s for s in mine if s.get("kid") in ids]
        if not mine and retired:
            raise MedsecError(
                f"{where}: wrapped to transit key {self.name} only in retired version(s) "
                f"{', '.join(map(str, retired))} (OpenBao decrypts from version {self.public.min_decryption_version})"
            )
        if not mine:
            raise NoMatchingRecipientError(
                f"{where}: not encrypted to transit key {self.name} (recipients: {key_ids(stanzas)})"
            )
        refused: _Refused | None = None
        for st in sorted(mine, key=lambda s: -int(s["version"])):  # newest first: old ones may be retired
            try:
                otk = self.decrypt(str(st["otk"]))
            except _Refused as exc:
                refused = exc
                continue
            study_key = TYPE.open(st, otk, file_id, where)
            if study_key is not None:
                return study_key, str(st["kid"])
        if refused is not None:
            raise MedsecError(str(refused))
        raise AuthenticationError(f"{where}: the study key wrapped for transit key {self.name} failed authentication")


#: What the key service holds for a site: a private key, or a Transit key in OpenBao.
SiteKey = Identity | TransitKey
