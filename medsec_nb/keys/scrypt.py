"""``scrypt`` stanzas: the study key wrapped with a passphrase (docs/FORMAT.md, "Stanzas").

A passphrase stanza must be the only stanza. Its cost comes from the file, so it is bounded
near the writers' default and checked before any derivation.
"""

from __future__ import annotations

from typing import Any

from Crypto.Protocol.KDF import scrypt
from Crypto.Random import get_random_bytes

from ..core.errors import FormatError, NoMatchingRecipientError, WrongPassphraseError, shown
from .stanza import KEY_LEN, WRAPPED_LEN, Rand, Stanza, StanzaType, aad, hex_field, key_ids, open_sealed, seal

SCRYPT_DEFAULT_LOG_N = 17
SCRYPT_MIN_LOG_N = 10  # readers accept down to this (test vectors); writers default to 17
SCRYPT_MAX_LOG_N = 18  # one step above the writers' default
SCRYPT_MAX_WORK = 1 << 21  # N * r * p: twice the writers' default (2^17, r=8, p=1); memory 128 r N <= 256 MiB


class Scrypt(StanzaType):
    type = "scrypt"

    def summary(self, stanza: Stanza) -> str:
        return (
            f"passphrase (scrypt N=2^{shown(stanza.get('log_n'))}, r={shown(stanza.get('r'))}, "
            f"p={shown(stanza.get('p'))})"
        )


TYPE = Scrypt()


def is_passphrase(stanza: Stanza) -> bool:
    """Whether ``stanza`` is a passphrase stanza."""
    return stanza.get("type") == TYPE.type


def check_cost(log_n: Any, r: Any, p: Any, where: str) -> None:
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


def wrap(
    study_key: bytes,
    passphrase: bytes,
    file_id: bytes,
    log_n: int = SCRYPT_DEFAULT_LOG_N,
    r: int = 8,
    p: int = 1,
    rand: Rand = get_random_bytes,
) -> Stanza:
    """The passphrase stanza wrapping ``study_key``."""
    check_cost(log_n, r, p, "passphrase")
    salt = rand(16)
    wk = scrypt(passphrase, salt, KEY_LEN, N=1 << log_n, r=r, p=p)
    return {
        "type": TYPE.type,
        "salt": salt.hex(),
        "log_n": log_n,
        "r": r,
        "p": p,
        "wrapped": seal(wk, study_key, aad(TYPE.type, file_id)).hex(),
    }


def passphrase_stanza(stanzas: list[Stanza], where: str) -> Stanza:
    """The container's one scrypt stanza, its cost checked; raise before a passphrase is asked
    for a container that cannot be opened with one."""
    if not any(is_passphrase(s) for s in stanzas):
        raise NoMatchingRecipientError(
            f"{where}: not passphrase-protected; it is encrypted to public keys ({key_ids(stanzas)})"
        )
    if len(stanzas) != 1:
        raise FormatError(f"{where}: a passphrase stanza must be the only stanza")
    st = stanzas[0]
    check_cost(st.get("log_n"), st.get("r"), st.get("p"), where)
    return st


def unwrap(stanza: Stanza, passphrase: bytes, file_id: bytes, where: str) -> bytes:
    """The study key in a passphrase stanza checked by :func:`passphrase_stanza`."""
    salt = hex_field(stanza, "salt", 16, where)
    wrapped = hex_field(stanza, "wrapped", WRAPPED_LEN, where)
    wk = scrypt(passphrase, salt, KEY_LEN, N=1 << stanza["log_n"], r=stanza["r"], p=stanza["p"])
    key = open_sealed(wk, wrapped, aad(TYPE.type, file_id))
    if key is None:
        raise WrongPassphraseError(f"{where}: wrong passphrase (or the passphrase stanza was altered)")
    return key
