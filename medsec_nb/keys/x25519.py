"""``x25519`` stanzas: X25519 key agreement with an ephemeral key (docs/FORMAT.md, "Stanzas")."""

from __future__ import annotations

from Crypto.Protocol import DH
from Crypto.PublicKey import ECC

from ._ecdh import EcdhType


class X25519(EcdhType):
    type = key_type = "x25519"
    curve = "Curve25519"
    epk_len = 32

    def import_epk(self, epk: bytes) -> ECC.EccKey:
        return DH.import_x25519_public_key(epk)


TYPE = X25519()
