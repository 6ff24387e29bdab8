"""ECDH stanzas (x25519, p256): an ephemeral key agreed with the recipient's, HKDF to the wrap key."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from Crypto.Hash import SHA256
from Crypto.Protocol import DH
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey import ECC

from .identity import Identity, Recipient
from .stanza import KEY_LEN, WRAPPED_LEN, Rand, RecipientType, Stanza, aad, hex_field, open_sealed, seal


def _raw(key: ECC.EccKey) -> bytes:
    return key.public_key().export_key(format="raw")


def _same(shared: bytes) -> bytes:
    return shared


class EcdhType(RecipientType):
    """A stanza type whose ``type`` is also its key type and its curve's name in the KDF info."""

    curve: ClassVar[str]  # pycryptodome's curve name
    epk_len: ClassVar[int]  # raw ephemeral public key length

    @abstractmethod
    def import_epk(self, epk: bytes) -> ECC.EccKey:
        """The ephemeral public key from its raw bytes; ValueError when it is not a point."""

    def wrap_key(self, shared: bytes, epk: bytes, rpk: bytes) -> bytes:
        return HKDF(shared, KEY_LEN, epk + rpk, SHA256, context=b"medsec-nb/v1 " + self.type.encode("ascii"))

    def accepts(self, recipient: Recipient) -> bool:
        return recipient.type == self.type

    def wrap(self, study_key: bytes, recipient: Recipient, file_id: bytes, rand: Rand) -> Stanza:
        key = recipient.key
        assert isinstance(key, ECC.EccKey)  # accepted
        eph = ECC.generate(curve=self.curve, randfunc=rand)
        shared = DH.key_agreement(static_pub=key, eph_priv=eph, kdf=_same)
        epk, rpk = _raw(eph), _raw(key)
        return {
            "type": self.type,
            "kid": recipient.key_id,
            "epk": epk.hex(),
            "wrapped": seal(self.wrap_key(shared, epk, rpk), study_key, aad(self.type, file_id)).hex(),
        }

    def unwrap(self, stanza: Stanza, identity: Identity, file_id: bytes, where: str) -> bytes | None:
        key = identity.key
        if identity.type != self.type or not isinstance(key, ECC.EccKey):
            return None
        epk = hex_field(stanza, "epk", self.epk_len, where)
        wrapped = hex_field(stanza, "wrapped", WRAPPED_LEN, where)
        try:
            shared = DH.key_agreement(static_priv=key, eph_pub=self.import_epk(epk), kdf=_same)
        except ValueError:
            return None
        return open_sealed(self.wrap_key(shared, epk, _raw(key)), wrapped, aad(self.type, file_id))
