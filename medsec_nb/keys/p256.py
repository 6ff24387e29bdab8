"""``p256`` stanzas: NIST P-256 ECDH with an ephemeral key (docs/FORMAT.md, "Stanzas")."""

from __future__ import annotations

from Crypto.PublicKey import ECC

from ._ecdh import EcdhType


class P256(EcdhType):
    type = key_type = "p256"
    curve = "P-256"
    epk_len = 65  # uncompressed SEC1 point

    def import_epk(self, epk: bytes) -> ECC.EccKey:
        return ECC.import_key(epk, curve_name="P-256")


TYPE = P256()
