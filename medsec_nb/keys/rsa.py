"""``rsa-oaep-sha256`` stanzas: the study key encrypted with RSA-OAEP (docs/FORMAT.md, "Stanzas")."""

from __future__ import annotations

from Crypto.Cipher import PKCS1_OAEP
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA

from .identity import Identity, Recipient
from .stanza import KEY_LEN, Rand, RecipientType, Stanza, aad, hex_field


class RsaOaep(RecipientType):
    type = "rsa-oaep-sha256"
    key_type = "rsa3072"

    def accepts(self, recipient: Recipient) -> bool:
        return isinstance(recipient.key, RSA.RsaKey)

    def wrap(self, study_key: bytes, recipient: Recipient, file_id: bytes, rand: Rand) -> Stanza:
        key = recipient.key
        assert isinstance(key, RSA.RsaKey)  # accepted
        oaep = PKCS1_OAEP.new(key, hashAlgo=SHA256, label=aad(self.type, file_id), randfunc=rand)
        return {"type": self.type, "kid": recipient.key_id, "wrapped": oaep.encrypt(study_key).hex()}

    def unwrap(self, stanza: Stanza, identity: Identity, file_id: bytes, where: str) -> bytes | None:
        key = identity.key
        if not isinstance(key, RSA.RsaKey):
            return None
        wrapped = hex_field(stanza, "wrapped", key.size_in_bytes(), where)
        oaep = PKCS1_OAEP.new(key, hashAlgo=SHA256, label=aad(self.type, file_id))
        try:
            study_key = oaep.decrypt(wrapped)
        except ValueError:
            return None
        return study_key if len(study_key) == KEY_LEN else None


TYPE = RsaOaep()
