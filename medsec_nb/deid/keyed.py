"""Keyed derivations for de-identification: replacement UIDs, patient pseudonyms, date shifts."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from Crypto.Hash import HMAC, SHA256

MIN_SECRET_LEN = 16
MAX_SHIFT_DAYS = 3652


@lru_cache(maxsize=4096)  # in memory only: the UIDs of a study repeat in every instance
def _mac(key: bytes, label: str, value: str) -> bytes:
    return HMAC.new(key, f"{label}\x00{value}".encode(), SHA256).digest()


@dataclass(frozen=True)
class DeidKeys:
    """Per-purpose HMAC-SHA256 keys derived from one project secret.

    The same secret gives the same UIDs, pseudonyms and date shifts in every session,
    so references and longitudinal links survive across files and studies.
    """

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_LEN:
            raise ValueError(f"de-identification secret must be at least {MIN_SECRET_LEN} bytes")

    def _key(self, purpose: str) -> bytes:
        return _mac(self.secret, "medsec-nb deid key", purpose)

    def uid(self, original: str) -> str:
        """Replacement UID ``2.25.<128-bit integer>`` for ``original`` (same input, same output)."""
        digest = _mac(self._key("uid"), "uid", original.strip().rstrip("\x00"))
        return "2.25." + str(int.from_bytes(digest[:16], "big"))

    def patient_pseudonym(self, patient_key: str) -> str:
        """Pseudonymous Patient ID (also used as Patient's Name) for a patient."""
        return "ANON-" + _mac(self._key("patient"), "patient", patient_key.strip()).hex()[:20].upper()

    def date_shift_days(self, patient_key: str) -> int:
        """Whole days (1..3652) to move this patient's dates back; the same in every study."""
        digest = _mac(self._key("date-shift"), "date-shift", patient_key.strip())
        return 1 + int.from_bytes(digest[:8], "big") % MAX_SHIFT_DAYS
