"""Site keys in OpenBao's Transit engine (issue 15): the ``transit-rsa-oaep`` stanza against its
test vector, and a real ``bao server -dev`` holding the site key while a key service (forked,
as root) asks it to decrypt."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import medsec_nb
from medsec_nb.access.policy import Policy
from medsec_nb.access.service import KeyService
from medsec_nb.audit import AuditLog
from medsec_nb.cli.main import main as cli_main
from medsec_nb.core.errors import MedsecError, NoMatchingRecipientError
from medsec_nb.keys.registry import wrapping_type
from medsec_nb.keys.transit import TYPE, TransitKey, TransitRecipient
from medsec_nb.testdata import synthesize_series

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
FORK = multiprocessing.get_context("fork")


# -- the stanza and its vector (no OpenBao) ----------------------------------------------------


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    import sys

    sys.path.insert(0, str(VECTORS))
    try:
        from make_vectors import identity_from, stream
    finally:
        sys.path.remove(str(VECTORS))
    v = json.loads((VECTORS / "transit_stanza.json").read_text())
    v["identity"] = identity_from(v["key"])
    v["rand"] = stream(v["rand"])
    return v


def test_the_vector_wraps_byte_for_byte_and_opens_with_the_private_key(vector):
    ident, stanza = vector["identity"], vector["stanza"]
    study_key, file_id = bytes.fromhex(vector["study_key"]), bytes.fromhex(vector["file_id"])
    recipient = TransitRecipient(ident.public.key, vector["transit"], vector["version"])
    assert wrapping_type(recipient) is TYPE and wrapping_type(ident.public) is not TYPE
    assert TYPE.wrap(study_key, recipient, file_id, vector["rand"]) == stanza
    assert stanza["kid"] == ident.key_id and stanza["otk"].startswith("vault:v3:")
    assert TYPE.unwrap(stanza, ident, file_id, "vector") == study_key


@pytest.mark.parametrize(
    "change",
    [
        {"kid": "rsa3072:" + "0" * 32},  # relabelled: the associated data names the kid
        {"file_id": bytes(16).hex()},  # moved to another file
        {"wrapped_flip": True},
    ],
    ids=["kid", "file-id", "wrapped"],
)
def test_an_altered_stanza_fails_authentication(vector, change):
    stanza = dict(vector["stanza"])
    file_id = bytes.fromhex(change.get("file_id", vector["file_id"]))
    if "kid" in change:
        stanza["kid"] = change["kid"]
    if "wrapped_flip" in change:
        w = bytearray.fromhex(stanza["wrapped"])
        w[0] ^= 1
        stanza["wrapped"] = w.hex()
    assert TYPE.unwrap(stanza, vector["identity"], file_id, "vector") is None


@pytest.mark.parametrize(
    "field, value",
    [
        ("otk", "vault:v2:AAAA"),
        ("otk", "v3:AAAA"),
        ("otk", "vault:v3:AAA"),
        ("otk", "vault:v3:AAAA"),
        ("version", "3"),
        ("transit", "../sys"),
        ("wrapped", "00"),
    ],
)
def test_a_malformed_stanza_is_a_format_error(vector, field, value):
    stanza = {**vector["stanza"], field: value}
    with pytest.raises(medsec_nb.FormatError):
        TYPE.unwrap(stanza, vector["identity"], bytes.fromhex(vector["file_id"]), "vector")


# -- a real OpenBao (the ``bao`` fixture: conftest.py) ------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def site(bao, tmp_path_factory):
    """A key service (forked, as root) holding only the Transit key, started through the CLI;
    a study encrypted to it through ``medsec encrypt --to-keyservice``."""
    base = Path(tempfile.mkdtemp(prefix="medsec-transit-", dir="/tmp"))
    (base / "data").mkdir()
    (base / "token").write_text(bao["token"] + "\n")
    (base / "site.csv").write_text(
        "p, root, *, decrypt, HRESCH, *, allow\np, root, *, add-recipient, HRESCH, *, allow\n"
    )
    sock = base / "keyservice.sock"
    log = base / "audit.jsonl"
    Policy.load(base / "site.csv")

    def run() -> None:
        os.environ["MEDSEC_DATA_DIR"] = str(base / "data")
        os.environ.pop("BAO_TOKEN", None)
        argv = ["keyservice", "--socket", str(sock), "--log", str(log), "--policy", str(base / "site.csv")]
        argv += ["--transit-addr", bao["addr"], "--transit-key", "site", "--transit-token-file", str(base / "token")]
        os._exit(cli_main(argv))

    proc = FORK.Process(target=run)
    proc.start()
    for _ in range(300):
        if sock.exists():
            break
        time.sleep(0.05)
    else:
        pytest.fail("the key service did not start")
    src = tmp_path_factory.mktemp("transit-src")
    synthesize_series(src, n_slices=4, rows=32, columns=32)
    study = base / "study.msec"
    assert cli_main(["encrypt", str(src), "-o", str(study), "--to-keyservice", str(sock)]) == 0
    local = medsec_nb.generate_identity("x25519")  # in memory only: the expected volume
    both = base / "both.msec"
    medsec_nb.encrypt_study(src, both, recipients=[*KeyService(sock).recipients(), local.public], progress=False)
    with medsec_nb.open_study(both, identity=local, purpose="HRESCH", audit_log=base / "local.jsonl") as st:
        expected = st.series[0].volume()
    yield {"base": base, "socket": sock, "log": log, "study": study, "expected": expected, "bao": bao}
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(30)
    shutil.rmtree(base, ignore_errors=True)


def _records(site) -> list[dict[str, Any]]:
    return list(AuditLog(site["log"]).records())


def test_the_study_has_one_transit_stanza_naming_the_key_and_version(site):
    stanzas = medsec_nb.inspect_study(site["study"]).recipients
    assert len(stanzas) == 1
    assert stanzas[0].startswith("transit-rsa-oaep rsa3072:") and stanzas[0].endswith("(transit key site v1)")


def test_open_through_the_service_decrypts_in_openbao_and_records_once(site):
    before = len(_records(site))
    with medsec_nb.open_study(site["study"], keyservice=site["socket"], purpose="HRESCH") as st:
        assert np.array_equal(st.series[0].volume(), site["expected"])
        key_id = st.key_id
    new = _records(site)[before:]
    assert [(r["action"], r["outcome"]) for r in new] == [("open", "success"), ("decrypt-series", "success")]
    assert new[0]["who"]["key_id"] == key_id and key_id.startswith("rsa3072:")


def test_transit_key_errors_are_one_line_and_never_show_the_token(bao):
    with pytest.raises(MedsecError) as denied:
        TransitKey(bao["addr"], "site", "not-the-token")
    assert "permission denied" in str(denied.value) and "not-the-token" not in str(denied.value)
    with pytest.raises(MedsecError, match="unreachable"):
        TransitKey(f"http://127.0.0.1:{_free_port()}", "site", bao["token"], timeout=2)
    with pytest.raises(MedsecError, match="not an http"):
        TransitKey("file:///etc/passwd", "site", bao["token"])
    key = TransitKey(bao["addr"], "site", bao["token"])
    assert bao["token"] not in repr(key) and key.public.version == 1
    with pytest.raises(NoMatchingRecipientError):
        key.unwrap([], bytes(16), "empty")


def test_no_private_key_on_disk(site, bao):
    for folder in (site["base"], bao["base"]):
        for path in folder.rglob("*"):
            if path.is_file():
                assert b"PRIVATE KEY" not in path.read_bytes(), path


def test_after_a_rotation_the_study_key_is_rewrapped_to_the_new_version_and_the_old_one_retired(site, capsys):
    """The payload is untouched; once version 1 may no longer decrypt, the version 2 stanza opens."""
    study = site["base"] / "rotated.msec"
    shutil.copyfile(site["study"], study)
    payload = study.read_bytes()[-4096:]
    site["bao"]["cmd"]("write", "-f", "transit/keys/site/rotate")
    newest = KeyService(site["socket"]).recipients()
    assert [(r.name, r.version) for r in newest] == [("site", 2)]
    rewrap = ["rewrap", str(study), "--keyservice", str(site["socket"]), "--purpose", "HRESCH"]
    assert cli_main(rewrap) == 0
    assert f"added {newest[0].key_id}" in capsys.readouterr().out and study.read_bytes()[-4096:] == payload
    assert cli_main(rewrap) == 0 and "nothing changed" in capsys.readouterr().out
    assert medsec_nb.inspect_study(study).recipients[1].endswith("(transit key site v2)")
    site["bao"]["cmd"]("write", "transit/keys/site/config", "min_decryption_version=2")
    before = len(_records(site))
    with medsec_nb.open_study(study, keyservice=site["socket"], purpose="HRESCH") as st:
        assert np.array_equal(st.series[0].volume(), site["expected"])
    assert _records(site)[before]["who"]["key_id"] == newest[0].key_id
    original = site["study"].read_bytes()
    with pytest.raises(MedsecError, match="HTTP 400 .*version"):  # the original study has only the retired one
        medsec_nb.open_study(site["study"], keyservice=site["socket"], purpose="HRESCH")
    assert cli_main([*rewrap[:1], str(site["study"]), *rewrap[2:]]) == 1  # nothing to open it with: unchanged
    assert "only in retired version(s) 1 (OpenBao decrypts from version 2)" in capsys.readouterr().err
    assert site["study"].read_bytes() == original


def test_rewrap_drops_the_stanza_of_a_retired_version(site, capsys):
    """After ``min_decryption_version`` is raised, ``medsec rewrap`` leaves only stanzas OpenBao
    still decrypts; the payload is untouched and the drop is recorded. Runs after the rotation."""
    study = site["base"] / "retire.msec"
    assert [(r.version, r.min_decryption_version) for r in KeyService(site["socket"]).recipients()] == [(2, 2)]
    site["bao"]["cmd"]("write", "transit/keys/site/config", "min_decryption_version=1")  # v1 decrypts again
    shutil.copyfile(site["study"], study)
    payload = study.read_bytes()[-4096:]
    old_kid = medsec_nb.inspect_study(study).recipients[0].split()[1]
    rewrap = ["rewrap", str(study), "--keyservice", str(site["socket"]), "--purpose", "HRESCH"]
    assert cli_main(rewrap) == 0 and "dropped" not in capsys.readouterr().out  # v1 still decrypts: kept
    assert [s.rsplit(" ", 1)[-1] for s in medsec_nb.inspect_study(study).recipients] == ["v1)", "v2)"]
    site["bao"]["cmd"]("write", "transit/keys/site/config", "min_decryption_version=2")
    before = len(_records(site))
    assert cli_main(rewrap) == 0
    assert capsys.readouterr().out == f"dropped {old_kid} (a retired Transit version)\n"
    stanzas = medsec_nb.inspect_study(study).recipients
    assert len(stanzas) == 1 and stanzas[0].endswith("(transit key site v2)") and old_kid not in stanzas[0]
    assert study.read_bytes()[-4096:] == payload
    done = [r for r in _records(site)[before:] if r["action"] == "add-recipient"]
    assert [(r["outcome"], r["detail"]) for r in done] == [("success", {"added": [], "dropped": [old_kid]})]
    assert cli_main(rewrap) == 0 and "nothing changed" in capsys.readouterr().out
    with medsec_nb.open_study(study, keyservice=site["socket"], purpose="HRESCH") as st:
        assert np.array_equal(st.series[0].volume(), site["expected"])


def test_sealed_openbao_releases_nothing_and_the_failure_is_recorded(site):
    """Last in this module: the dev server stays sealed."""
    site["bao"]["cmd"]("operator", "seal")
    before = len(_records(site))
    with pytest.raises(MedsecError) as exc:
        medsec_nb.open_study(site["study"], keyservice=site["socket"], purpose="HRESCH")
    message = str(exc.value)
    assert "\n" not in message and "sealed" in message and site["bao"]["token"] not in message
    new = _records(site)[before:]
    assert [(r["action"], r["outcome"]) for r in new] == [("open", "failure")]
