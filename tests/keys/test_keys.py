"""Key generation, PKCS#8 files, key ids."""

from __future__ import annotations

import stat

import pytest
from Crypto.PublicKey import ECC, RSA

import medsec_nb
from medsec_nb.keys.identity import KEY_TYPES, private_pem


@pytest.mark.parametrize("kind", KEY_TYPES)
def test_save_load_roundtrip_encrypted(tmp_path, kind):
    ident = medsec_nb.generate_identity(kind)
    key_path, pub_path = medsec_nb.save_identity(ident, tmp_path / "k", passphrase="pw-123")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    text = key_path.read_text()
    assert text.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    # a standard PKCS#8 file that pycryptodome itself reads
    mod = RSA if kind.startswith("rsa") else ECC
    assert mod.import_key(text, passphrase="pw-123").has_private()
    loaded = medsec_nb.load_identity(key_path, passphrase="pw-123")
    assert loaded.key_id == ident.key_id == medsec_nb.load_recipient(pub_path).key_id
    assert ident.key_id.startswith(kind + ":") and len(ident.key_id.split(":")[1]) == 32


def test_wrong_and_missing_key_passphrase(tmp_path):
    ident = medsec_nb.generate_identity("x25519")
    key_path, _ = medsec_nb.save_identity(ident, tmp_path / "k", passphrase="Tr0ub4dor-right")
    with pytest.raises(medsec_nb.WrongPassphraseError, match=str(key_path)) as e:
        medsec_nb.load_identity(key_path, passphrase="Xq9-nope-Xq9")
    assert "Tr0ub4dor" not in str(e.value) and "Xq9" not in str(e.value)
    with pytest.raises(medsec_nb.WrongPassphraseError, match="passphrase-protected"):
        medsec_nb.load_identity(key_path)


def test_passphrase_callable_only_called_when_needed(tmp_path):
    ident = medsec_nb.generate_identity("p256")
    key_path, _ = medsec_nb.save_identity(ident, tmp_path / "k")
    assert "ENCRYPTED" not in key_path.read_text()

    def boom():
        raise AssertionError("should not prompt for an unencrypted key")

    assert medsec_nb.load_identity(key_path, passphrase=boom).key_id == ident.key_id


def test_refuses_overwrite_and_wrong_kinds(tmp_path):
    ident = medsec_nb.generate_identity("x25519")
    key_path, pub_path = medsec_nb.save_identity(ident, tmp_path / "k")
    before = key_path.read_bytes()
    with pytest.raises(medsec_nb.KeyFileError, match="already exists"):
        medsec_nb.save_identity(medsec_nb.generate_identity("x25519"), tmp_path / "k")
    assert key_path.read_bytes() == before
    with pytest.raises(medsec_nb.KeyFileError, match="private key"):
        medsec_nb.load_recipient(key_path)
    with pytest.raises(medsec_nb.KeyFileError, match="not a private key"):
        medsec_nb.load_identity(pub_path)
    (tmp_path / "junk.pub").write_text("hello")
    with pytest.raises(medsec_nb.KeyFileError, match="junk.pub"):
        medsec_nb.load_recipient(tmp_path / "junk.pub")
    with pytest.raises(medsec_nb.KeyFileError, match="not found"):
        medsec_nb.load_identity(tmp_path / "missing.key")


def test_small_rsa_refused(tmp_path):
    weak = RSA.generate(2048)
    (tmp_path / "weak.pub").write_bytes(weak.public_key().export_key())
    with pytest.raises(medsec_nb.KeyFileError, match="3072"):
        medsec_nb.load_recipient(tmp_path / "weak.pub")


def test_identity_never_shows_or_pickles_secret():
    import pickle

    ident = medsec_nb.generate_identity("x25519")
    pem = private_pem(ident)
    body = "".join(pem.splitlines()[1:-1])
    assert body not in repr(ident) and ident.key_id in repr(ident)
    with pytest.raises(TypeError):
        pickle.dumps(ident)
