"""Hostile containers (issue 18, item 4): files crafted to exhaust or crash a reader.

An expensive scrypt cost in the public header, JSON nested deep enough to overflow the parser
(header stanzas, signature block, encrypted index) and index file names that collide or hold
control characters. Each is replayed through the public surfaces a hostile file reaches: the
API, the ``medsec`` CLI (its ``main``), the Jupyter server's ``GET /medsec/inspect`` and
``%load_secure_study``; each must give one clear line naming the file, quickly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from IPython.testing import globalipapp
from tornado.httpclient import HTTPClientError

import medsec_nb
from conftest import PASSPHRASE
from medsec_nb import FormatError, open_study, verify_study
from medsec_nb.audit import AuditLog
from medsec_nb.cli.main import main
from medsec_nb.container._reader import export_relpaths, open_container
from medsec_nb.container.format import BODY_LEN, PREFIX_LEN, KeySchedule, canonical_json, encode_header, index_segment
from medsec_nb.container.header import read_header
from medsec_nb.container.segments import encrypt_segment
from medsec_nb.notebook.magics import MagicError

pytest_plugins = ["pytest_jupyter.jupyter_server"]

DEEP = 200_000  # nested "[" in the 1 MiB recipient block: RecursionError in an unguarded parser


# --------------------------------------------------------------------------- crafting


def _with_header(path: Path, stanzas_raw: bytes | None = None, signature_raw: bytes | None = None) -> bytes:
    """``path`` with its recipient or signature block replaced by raw bytes, as anyone can write
    them (the old header MAC is kept: it no longer matches, which a reader finds only later)."""
    h, _ = read_header(path)
    data = path.read_bytes()
    st = stanzas_raw if stanzas_raw is not None else canonical_json(h.stanzas)
    sig = signature_raw if signature_raw is not None else h.signature_raw
    prefix = h.raw[: PREFIX_LEN + BODY_LEN]
    return b"".join([prefix, len(st).to_bytes(4, "big"), st, len(sig).to_bytes(4, "big"), sig, h.mac, data[h.length :]])


def _insider_index(path: Path, identity: Any, index_plaintext: bytes) -> bytes:
    """What a recipient can write: ``path`` with its encrypted index replaced by ``index_plaintext``
    (re-encrypted, body and header MAC updated, producer signature dropped)."""
    with open_container(path, identity=identity, _keep_study_key=True) as box:
        h = box.header
        ks = KeySchedule.derive(box.study_key, h.body.file_id)
    b = h.body
    ct, digest = encrypt_segment(ks.payload_key, b.file_id, index_segment(), index_plaintext, b.chunk_size)
    body = dataclasses.replace(b, index_length=len(ct), payload_length=b.index_offset + len(ct), index_sha256=digest)
    raw = encode_header(body, h.stanzas, b"")
    return raw + ks.header_mac(raw) + path.read_bytes()[h.length : h.length + b.index_offset] + bytes(ct)


def _renamed(path: Path, identity: Any, names: list[Any]) -> bytes:
    """``path`` whose index gives its instances the stored file names ``names``."""
    with open_container(path, identity=identity) as box:
        entries = [dict(e) for e in box.entries]
    assert len(entries) == len(names)
    for e, name in zip(entries, names):
        e["path"] = name
    return _insider_index(path, identity, canonical_json({"instances": entries}))


def _scrypt_cost(path: Path, log_n: int, r: int, p: int) -> bytes:
    h, _ = read_header(path)
    (st,) = h.stanzas
    return _with_header(path, stanzas_raw=canonical_json([dict(st, log_n=log_n, r=r, p=p)]))


@pytest.fixture
def audit(tmp_path, monkeypatch) -> Path:
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("MEDSEC_AUDIT_LOG", str(log))
    return log


@pytest.fixture
def key_file(tmp_path, identities) -> Path:
    key, _ = medsec_nb.save_identity(identities.x25519, tmp_path / "analyst")
    return key


def _cli(capsys, *argv: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_cli_error(code: int, err: str, path: Path) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"medsec: error: {path}: ") and "internal error" not in err and "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- scrypt cost


@pytest.mark.parametrize("log_n,r,p", [(20, 8, 16), (20, 8, 1), (19, 8, 1), (18, 8, 2), (17, 32, 1), (16, 8, 16)])
def test_scrypt_cost_above_the_bound_is_refused_before_derivation(
    log_n, r, p, passphrase_container, tmp_path, audit, capsys, assert_clean_error
):
    """log_n=20, r=8, p=16 used to cost ~45 s and 1.1 GB before "wrong passphrase"."""
    path = tmp_path / "costly.msec"
    path.write_bytes(_scrypt_cost(passphrase_container, log_n, r, p))
    for call in (lambda: open_study(path, passphrase=PASSPHRASE), lambda: verify_study(path, passphrase="wrong")):
        start = time.monotonic()
        with pytest.raises(FormatError) as ei:
            call()
        assert time.monotonic() - start < 1.0
        assert_clean_error(ei.value, path)
        msg = str(ei.value)
        assert f"log_n={log_n} r={r} p={p}" in msg and "2^21" in msg and "\n" not in msg
    pw = tmp_path / "pw.txt"
    pw.write_text(PASSPHRASE + "\n")
    start = time.monotonic()
    code, _, err = _cli(capsys, "verify", path, "--passphrase-file", pw, "--purpose", "HRESCH", "-q")
    assert time.monotonic() - start < 1.0
    assert "scrypt" in _one_cli_error(code, err, path)
    # inspect only reads the public header: it still shows the parameters
    assert f"scrypt N=2^{log_n}, r={r}, p={p}" in medsec_nb.inspect_study(path).recipients[0]


def test_scrypt_cost_at_the_bound_still_opens(series_source, tmp_path):
    """One step above the writer's default (2^17, r=8, p=1) is accepted, and so is the tests' 2^10."""
    path = medsec_nb.encrypt_study(
        series_source.folder, tmp_path / "slow.msec", passphrase=PASSPHRASE, scrypt_log_n=18, progress=False
    )
    with open_study(path, passphrase=PASSPHRASE) as study:
        assert len(study.series[0]) == len(series_source.files)
    with pytest.raises(medsec_nb.MedsecError, match="2\\^21"):
        medsec_nb.encrypt_study(
            series_source.folder, tmp_path / "slower.msec", passphrase=PASSPHRASE, scrypt_log_n=19, progress=False
        )


# --------------------------------------------------------------------------- nesting


@pytest.fixture(params=["stanzas", "signature"])
def deep(request, tiny_container, tmp_path) -> Path:
    """The tiny container with a recipient block of 200,000 "[" (1 MiB at most) or a signature block
    of 65,536 (its 64 KiB maximum)."""
    path = tmp_path / "deep.msec"
    if request.param == "stanzas":
        path.write_bytes(_with_header(tiny_container, stanzas_raw=b"[" * DEEP + b"]" * DEEP))
    else:
        path.write_bytes(_with_header(tiny_container, signature_raw=b"[" * (1 << 16)))
    return path


def test_deep_nesting_is_a_format_error_in_the_api(deep, identities, assert_clean_error):
    for call in (
        lambda: medsec_nb.inspect_study(deep),
        lambda: verify_study(deep, identities.x25519),
        lambda: open_study(deep, passphrase=PASSPHRASE),
    ):
        with pytest.raises(FormatError) as ei:
            call()
        assert_clean_error(ei.value, deep)
        assert "nested deeper than" in str(ei.value)


@pytest.mark.parametrize("command", ["inspect", "verify", "decrypt"])
def test_deep_nesting_is_one_line_in_the_cli(command, deep, key_file, tmp_path, audit, capsys):
    extra = [] if command == "inspect" else ["-i", key_file, "--purpose", "HRESCH", "-q"]
    if command == "decrypt":
        extra += ["-o", tmp_path / "out"]
    code, _, err = _cli(capsys, command, deep, *extra)
    assert "nested deeper than" in _one_cli_error(code, err, deep)
    assert not (tmp_path / "out").exists()


def test_deep_nesting_in_a_mapping_file_is_one_line_from_reidentify(key_file, tmp_path, audit, capsys):
    mapping = tmp_path / "deid-map.json"
    mapping.write_text("[" * 200_000)
    code, _, err = _cli(capsys, "reidentify", mapping, "-i", key_file, "--purpose", "HRESCH", "-o", tmp_path / "m.json")
    assert "nested deeper than" in _one_cli_error(code, err, mapping)
    assert not (tmp_path / "m.json").exists()


@pytest.fixture
def jp_server_config(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEC_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    return {"ServerApp": {"jpserver_extensions": {"medsec_nb.server": True, "medsec_nb.saveguard": True}}}


async def test_deep_nesting_is_a_400_from_the_inspect_endpoint(jp_fetch, jp_root_dir, deep, caplog):
    (jp_root_dir / "deep.msec").write_bytes(deep.read_bytes())
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("medsec", "inspect", params={"path": "deep.msec"})
    assert info.value.code == 400
    message = json.loads(info.value.response.body)["message"]
    assert message.startswith("deep.msec: ") and "nested deeper than" in message and "\n" not in message
    assert str(jp_root_dir) not in info.value.response.body.decode()
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


@pytest.fixture
def ip():
    globalipapp.start_ipython()
    shell = globalipapp.get_ipython()
    shell.run_line_magic("load_ext", "medsec_nb.notebook.magics")
    shell.run_line_magic("config", "MedsecMagics.harden = False")
    yield shell
    shell.run_line_magic("unload_ext", "medsec_nb.notebook.magics")
    shell.config.pop("MedsecMagics", None)
    shell.user_ns.pop("ct", None)


def test_deep_nesting_is_one_line_from_the_magic(ip, deep, key_file, capsys):
    res = ip.run_cell(f"%load_secure_study {deep} --identity {key_file} --purpose HRESCH --as ct")
    err = res.error_in_exec
    assert isinstance(err, MagicError) and err.kind == "FormatError"
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"FormatError: {deep}: ") and "nested deeper than" in out[0]
    assert "ct" not in ip.user_ns


def test_deep_nesting_in_the_encrypted_index_is_a_format_error(
    tiny_container, identities, tmp_path, audit, key_file, capsys, assert_clean_error
):
    path = tmp_path / "deep_index.msec"
    path.write_bytes(
        _insider_index(tiny_container, identities.x25519, b'{"instances":' + b"[" * DEEP + b"]" * DEEP + b"}")
    )
    with pytest.raises(FormatError) as ei:
        open_study(path, identities.x25519)
    assert_clean_error(ei.value, path)
    assert "index" in str(ei.value) and "nested deeper than" in str(ei.value)
    code, _, err = _cli(capsys, "decrypt", path, "-i", key_file, "-o", tmp_path / "out", "--purpose", "HRESCH", "-q")
    assert "index" in _one_cli_error(code, err, path)


def test_brackets_inside_strings_do_not_count_as_nesting(tiny_container, identities, tmp_path):
    path = tmp_path / "brackets.msec"
    path.write_bytes(_renamed(tiny_container, identities.x25519, ["[" * 100 + '\\"{' * 50 + ".dcm", "b.dcm"]))
    with open_study(path, identities.x25519) as study:
        assert sum(len(s) for s in study.series) == 2


# --------------------------------------------------------------------------- export names


def _exported(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


def _export_records(log: Path) -> list[dict]:
    return [r for r in AuditLog(log).records() if r.get("action") in ("export-open", "export")]


@pytest.mark.parametrize(
    "names",
    [
        ["instance_00001.dcm", ".."],
        ["a.dcm", "a.dcm"],
        ["CT.dcm", "ct.dcm"],  # one file on a case-insensitive file system
        ["a", "a/b.dcm"],  # a file where the other needs a folder
        ["a/b.dcm", "a"],
        ["instance_00001.dcm", "."],
        ["x\x00y.dcm", "instance_00000.dcm"],  # NUL: open() raised ValueError
        ["\ud800.dcm", "ok\x1b[2J.dcm"],  # a lone surrogate (not encodable), an escape sequence
        ["n" * 300 + ".dcm", "/etc/passwd"],  # a name too long for the file system, an absolute path
    ],
    ids=[
        "dotdot-collides",
        "duplicate",
        "case",
        "file-then-folder",
        "folder-then-file",
        "dot-collides",
        "nul",
        "unencodable-and-control",
        "too-long-and-absolute",
    ],
)
def test_every_instance_is_exported_to_its_own_file(
    names, tiny_container, identities, tmp_path, audit, key_file, capsys
):
    path = tmp_path / "names.msec"
    path.write_bytes(_renamed(tiny_container, identities.x25519, names))
    out = tmp_path / "out"
    code, stdout, err = _cli(capsys, "decrypt", path, "-i", key_file, "-o", out, "--purpose", "HRESCH", "-q")
    assert code == 0, err
    assert f"exported {len(names)} plaintext DICOM files" in stdout
    files = _exported(out)
    assert len(files) == len(names)
    assert len({str(f.relative_to(out)).casefold() for f in files}) == len(names)
    with open_container(tiny_container, identity=identities.x25519) as box:
        originals = {box.file_bytes(i) for i in range(len(box.entries))}
    assert {f.read_bytes() for f in files} == originals
    for f in files:
        rel = str(f.relative_to(out))
        assert rel.isprintable() and all(len(part.encode()) <= 255 for part in Path(rel).parts)
    assert [r["outcome"] for r in _export_records(audit)] == ["success", "success"]  # export-open, export


def test_export_relpaths_are_unique_whatever_the_names():
    """First come, first served: a later instance whose name is taken gets its own neutral name."""
    entries = [
        {"path": n}
        for n in [
            "instance_00002.dcm",
            "..",
            "instance_00001.dcm",
            "",
            "INSTANCE_00001.DCM",
            "instance_00001_1.dcm",
            None,
            7,
        ]
    ]
    assert [str(r) for r in export_relpaths(entries)] == [
        "instance_00002.dcm",
        "instance_00001.dcm",
        "instance_00002_1.dcm",
        "instance_00003.dcm",
        "instance_00004.dcm",
        "instance_00001_1.dcm",
        "instance_00006.dcm",
        "instance_00007.dcm",
    ]


# --------------------------------------------------------------------------- header text


def test_header_text_is_shown_on_one_line(tiny_container, identities, tmp_path, audit, key_file, capsys):
    """Key ids and types come from the file: escapes and newlines must not reach a terminal or split
    an error line, and thousands of stanzas must not make a megabyte error."""
    evil = "x25519:ab\n\x1b[2Jmedsec: error: forged line"
    path = tmp_path / "text.msec"
    path.write_bytes(
        _with_header(
            tiny_container,
            stanzas_raw=canonical_json(
                [{"type": evil, "kid": evil}] + [{"type": "x25519", "kid": f"x25519:{i:032x}"} for i in range(5000)]
            ),
        )
    )
    code, out, err = _cli(capsys, "inspect", path)
    assert "\x1b" not in out and "forged line" not in out.replace("\\n", " ").split("\n")[-1]
    assert not any(line.startswith("medsec: error") for line in out.splitlines())
    code, _, err = _cli(capsys, "verify", path, "-i", key_file, "--purpose", "HRESCH", "-q")
    line = _one_cli_error(code, err, path)
    assert "\x1b" not in line and len(line) < 1000 and "more" in line


@pytest.mark.parametrize("command", [["audit", "verify"], ["audit", "show"], ["audit", "checkpoint"]])
def test_deep_nesting_in_an_audit_log_line_is_one_line(command, tmp_path, capsys):
    """A log line of nested brackets (someone edited the log) is named as a bad line, not a crash."""
    log = tmp_path / "audit.jsonl"
    log.write_text("[" * 200_000 + "\n")
    code, out, err = _cli(capsys, *command, "--log", log)
    lines = [ln for ln in (out + err).splitlines() if ln.strip()]
    assert code != 0 and "internal error" not in err and "Traceback" not in err, err
    assert any(str(log) in ln for ln in lines) and len(err.splitlines()) == 1, err


def test_deep_nesting_in_the_last_audit_line_stops_an_append(tiny_container, identities, tmp_path):
    log = tmp_path / "audit.jsonl"
    log.write_text("[" * 200_000 + "\n")
    with pytest.raises(medsec_nb.AuditUnavailableError, match="last record is unreadable"):
        open_study(tiny_container, identities.x25519, purpose="HRESCH", audit_log=log)


@pytest.mark.parametrize(
    "text, deep",
    [
        (b"[]", False),
        (b"[" * 16 + b"]" * 16, False),
        (b"[" * 17 + b"]" * 17, True),
        (b"[{" * 8 + b"}]" * 8, False),
        (b"[{" * 8 + b"[]" + b"}]" * 8, True),  # one level per pass, even when [ and { alternate
        (b'{"x":' * 17 + b"1" + b"}" * 17, True),
        (b'{"a":"' + b"[" * 40 + b'"}', False),  # brackets in a string
        (b'["\\"' + b"[" * 40 + b'"]', False),  # ... after an escaped quote
        (b"[" * 200_000, True),  # unclosed opens count
        (b"]" * 50 + b"[" * 10, False),
    ],
)
def test_nesting_is_counted_outside_strings(text, deep):
    from medsec_nb.container.format import _too_deep

    assert _too_deep(text) is deep
