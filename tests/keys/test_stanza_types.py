"""Stanza types: one module each in medsec_nb.keys, found through the registry (docs/FORMAT.md, "Stanzas")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medsec_nb import (
    AuthenticationError,
    FormatError,
    NoMatchingRecipientError,
    WrongPassphraseError,
    generate_identity,
)
from medsec_nb.container._reader import open_container
from medsec_nb.container.stanzas import (
    recipient_stanza,
    scrypt_stanza,
    stanza_summary,
    unwrap_with_identity,
    unwrap_with_passphrase,
)
from medsec_nb.keys import registry
from medsec_nb.keys.identity import Identity, Recipient
from medsec_nb.keys.stanza import Rand, RecipientType, Stanza

FORMAT_MD = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"
STUDY_KEY = bytes(range(32))
FILE_ID = bytes(16)


def _documented_types() -> list[str]:
    section = FORMAT_MD.read_text().split("\n## Stanzas\n", 1)[1].split("\n## ", 1)[0]
    rows = section.split("\n| --- |", 1)[1]  # the table's body, below its header
    return re.findall(r"^\| `([^`]+)` \|", rows, re.MULTILINE)


def test_every_documented_type_has_exactly_one_module():
    documented = _documented_types()
    assert sorted(documented) == ["p256", "rsa-oaep-sha256", "scrypt", "transit-rsa-oaep", "x25519"]
    assert sorted(registry.STANZA_TYPES) == sorted(documented)
    modules = [type(t).__module__ for t in registry.STANZA_TYPES.values()]
    assert len(set(modules)) == len(modules)
    assert all(m.startswith("medsec_nb.keys.") for m in modules)
    assert all(name == t.type for name, t in registry.STANZA_TYPES.items())


@pytest.mark.parametrize("attr", ["x25519", "p256", "rsa3072"])
def test_each_recipient_type_round_trips(identities, attr):
    ident = getattr(identities, attr)
    st = recipient_stanza(STUDY_KEY, ident.public, FILE_ID)
    assert registry.STANZA_TYPES[st["type"]].accepts(ident.public)
    assert stanza_summary(st) == f"{st['type']} {ident.key_id}"
    assert unwrap_with_identity([st], ident, FILE_ID, "c.msec") == STUDY_KEY
    with pytest.raises(AuthenticationError, match="failed authentication"):
        unwrap_with_identity([st], ident, bytes(15) + b"\x01", "c.msec")  # another container's file id


def test_passphrase_type_round_trips():
    st = scrypt_stanza(STUDY_KEY, b"correct horse", FILE_ID, log_n=10)
    assert stanza_summary(st) == "passphrase (scrypt N=2^10, r=8, p=1)"
    assert unwrap_with_passphrase([st], b"correct horse", FILE_ID, "c.msec") == STUDY_KEY


@pytest.mark.parametrize("kind", ["x448", "", None, ["x25519"], {"a": 1}])
def test_registry_decides_unknown_type_is_one_format_line(identities, kind):
    ident = identities.x25519
    st = {"type": kind, "kid": ident.key_id, "wrapped": "00" * 48}
    with pytest.raises(FormatError) as ei:
        unwrap_with_identity([st], ident, FILE_ID, "c.msec")
    msg = str(ei.value)
    assert msg.startswith("c.msec: unknown stanza type '") and "\n" not in msg
    assert stanza_summary(st).endswith(ident.key_id)


def test_ed25519_has_no_stanza_type():
    signer = generate_identity("ed25519").public
    with pytest.raises(NoMatchingRecipientError) as ei:
        recipient_stanza(STUDY_KEY, signer, FILE_ID)
    assert str(ei.value) == "a ed25519 key cannot be a recipient (use x25519, p256 or rsa3072)"


class _Plain(RecipientType):
    """A test type: the study key in the clear, for ed25519 keys."""

    type = "test-plain"
    key_type = "ed25519"

    def accepts(self, recipient: Recipient) -> bool:
        return recipient.type == "ed25519"

    def wrap(self, study_key: bytes, recipient: Recipient, file_id: bytes, rand: Rand) -> Stanza:
        return {"type": self.type, "kid": recipient.key_id, "key": study_key.hex()}

    def unwrap(self, stanza: Stanza, identity: Identity, file_id: bytes, where: str) -> bytes | None:
        return bytes.fromhex(stanza["key"])


def test_a_registered_type_is_used_without_other_changes(monkeypatch):
    plain = _Plain()
    monkeypatch.setitem(registry.STANZA_TYPES, plain.type, plain)
    monkeypatch.setattr(registry, "RECIPIENT_TYPES", (*registry.RECIPIENT_TYPES, plain))
    ident = generate_identity("ed25519")
    st = recipient_stanza(STUDY_KEY, ident.public, FILE_ID)
    assert st["type"] == "test-plain"
    assert unwrap_with_identity([st], ident, FILE_ID, "c.msec") == STUDY_KEY


def test_passphrase_callable_giving_none_is_a_clean_error(passphrase_container):
    with pytest.raises(WrongPassphraseError, match="no passphrase given"):
        open_container(passphrase_container, passphrase=lambda: None)
