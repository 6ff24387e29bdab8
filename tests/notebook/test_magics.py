"""The IPython magics, in process (IPython's own test shell), and the plain functions under them.

Passphrases are typed through a patched ``getpass.getpass`` (what a terminal or Jupyter's
password field would return) and must never reach ``In``/``_ih``, the history database,
outputs or errors.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from IPython.core.error import StdinNotImplementedError
from IPython.testing import globalipapp

import medsec_nb
from conftest import PASSPHRASE
from medsec_nb.notebook import magics
from medsec_nb.notebook.magics import MagicError, MedsecMagics, open_interactive, study_name

KEY_PASSPHRASE = "key passphrase that must stay secret 9#Lw"


@pytest.fixture(scope="module")
def keys(tmp_path_factory, identities) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    plain, _ = medsec_nb.save_identity(identities.x25519, folder / "analyst")
    protected, _ = medsec_nb.save_identity(identities.p256, folder / "protected", passphrase=KEY_PASSPHRASE)
    _, signer_pub = medsec_nb.save_identity(identities.signer, folder / "producer")
    _, other_pub = medsec_nb.save_identity(identities.other_signer, folder / "other")
    return {"plain": plain, "protected": protected, "signer": signer_pub, "other_signer": other_pub}


@pytest.fixture
def ip():
    globalipapp.start_ipython()
    shell = globalipapp.get_ipython()
    shell.run_line_magic("load_ext", "medsec_nb.notebook.magics")
    shell.run_line_magic("config", "MedsecMagics.harden = False")  # hardening is tested in a subprocess
    yield shell
    shell.run_line_magic("unload_ext", "medsec_nb.notebook.magics")
    shell.config.pop("MedsecMagics", None)  # %config persists in the shell's config
    for name in ("ct", "st", "a", "b", "ct_chest_2", "v"):
        shell.user_ns.pop(name, None)


@pytest.fixture
def typed(monkeypatch):
    """``typed(answer)``: getpass returns ``answer``; the prompts asked are collected in the list returned."""

    def install(answer: str | None) -> list[str]:
        prompts: list[str] = []

        def fake(prompt: str = "Password: ") -> str:
            prompts.append(prompt)
            if answer is None:
                raise AssertionError("no passphrase should have been asked")
            return answer

        monkeypatch.setattr(getpass, "getpass", fake)
        return prompts

    return install


def _magics(shell) -> MedsecMagics:
    return shell.magics_manager.registry["MedsecMagics"]


def test_load_binds_returns_and_passes_the_purpose(ip, typed, signed_container, keys, identities):
    typed(None)  # an unencrypted key file: nothing is asked
    res = ip.run_cell(
        f"%load_secure_study {signed_container} --identity {keys['plain']} "
        f"--purpose HRESCH --as ct --require-signer {keys['signer']}"
    )
    assert res.success
    ct = ip.user_ns["ct"]
    assert res.result is ct and isinstance(ct, medsec_nb.Study) and not ct.closed
    assert (ct.purpose, ct.key_id, ct.signer) == ("HRESCH", identities.x25519.key_id, identities.signer.key_id)
    assert _magics(ip).loaded == {"ct": ct}


def test_protected_key_passphrase_is_asked_and_kept_out_of_history(ip, typed, signed_container, keys, capsys):
    prompts = typed(KEY_PASSPHRASE)
    res = ip.run_cell(f"%load_secure_study {signed_container} -i {keys['protected']} --as ct", store_history=True)
    assert res.success and prompts == [f"Passphrase for key {keys['protected']}: "]
    ip.run_cell("ct", store_history=True)
    ip.history_manager.writeout_cache()
    rows = ip.history_manager.db.execute("SELECT source, source_raw FROM history").fetchall()
    out = capsys.readouterr()
    for blob in (repr(ip.user_ns["_ih"]), repr(ip.user_ns["In"]), repr(rows), out.out, out.err):
        assert KEY_PASSPHRASE not in blob
    assert any("%load_secure_study" in raw for _, raw in rows)  # the line itself is in history


def test_wrong_passphrase_is_one_line_without_context(ip, typed, signed_container, keys, capsys):
    typed("not the passphrase")
    res = ip.run_cell(f"%load_secure_study {signed_container} -i {keys['protected']} --as ct")
    err = res.error_in_exec
    assert isinstance(err, MagicError) and isinstance(err, medsec_nb.MedsecError)
    assert err.kind == "WrongPassphraseError" and err.__context__ is None and err.__cause__ is None
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        f"WrongPassphraseError: {keys['protected']}: incorrect key passphrase (or the key file is corrupted)"
    ]
    assert "ct" not in ip.user_ns


def _tampered(path: Path, tmp_path: Path) -> Path:
    """A copy with one bit of the encrypted index (the last segment) flipped: fails at open."""
    bad = tmp_path / "tampered.msec"
    data = bytearray(path.read_bytes())
    data[-40] ^= 1
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize(
    "case, kind",
    [
        ("missing", "MedsecError"),
        ("tampered", "AuthenticationError"),
        ("signer", "SignatureError"),
        ("public key", "KeyFileError"),
        ("not a recipient", "NoMatchingRecipientError"),
    ],
)
def test_failures_are_one_readable_line(ip, typed, signed_container, keys, tmp_path, capsys, identities, case, kind):
    typed(None)
    path, key, extra = signed_container, keys["plain"], ""
    if case == "missing":
        path = tmp_path / "nowhere.msec"
    elif case == "tampered":
        path = _tampered(signed_container, tmp_path)
    elif case == "signer":
        extra = f"--require-signer {keys['other_signer']}"
    elif case == "public key":
        key = keys["signer"]
    else:
        key, _ = medsec_nb.save_identity(identities.other_x25519, tmp_path / "stranger")
    res = ip.run_cell(f"%load_secure_study {path} --identity {key} {extra} --as ct")
    assert isinstance(res.error_in_exec, MagicError) and res.error_in_exec.kind == kind
    out = capsys.readouterr().out.strip().splitlines()
    named = key if case == "public key" else path  # the error names the file at fault
    assert len(out) == 1 and out[0].startswith(f"{kind}: {named}: ")


def test_study_passphrase_is_asked_with_the_prompt_flag_or_without_identity(ip, typed, passphrase_container):
    prompts = typed(PASSPHRASE)
    assert ip.run_cell(f"%load_secure_study {passphrase_container} --passphrase-prompt --as a").success
    assert ip.run_cell(f"%load_secure_study {passphrase_container} --as b").success
    assert prompts == ["Passphrase for study study.msec: "] * 2
    assert ip.user_ns["a"].key_id == ip.user_ns["b"].key_id == "passphrase"


@pytest.mark.parametrize("line", ["--identity K --passphrase-prompt", "--as 1x", "--as class", ""])
def test_usage_errors(ip, typed, signed_container, capsys, line):
    typed(None)
    path = "" if not line else signed_container
    res = ip.run_cell(f"%load_secure_study {path} {line}")
    assert not res.success and type(res.error_in_exec).__name__ == "UsageError"
    assert capsys.readouterr().err.startswith("UsageError: ")


def test_help_is_the_argument_parser(ip):
    doc = ip.find_line_magic("load_secure_study").__doc__
    for opt in (
        "%load_secure_study [--identity KEY] [--passphrase-prompt]",
        "--purpose P",
        "--as NAME",
        "--require-signer PUB",
        "password field",
    ):
        assert opt in doc
    assert "NAME" in ip.find_line_magic("unload_secure_study").__doc__
    assert "--purpose" in ip.find_cell_magic("secure_session").__doc__


def test_config_defaults(ip, typed, signed_container, keys, capsys):
    typed(None)
    ip.run_line_magic("config", f"MedsecMagics.default_identity = {str(keys['plain'])!r}")
    ip.run_line_magic("config", "MedsecMagics.default_purpose = 'EDU'")
    assert ip.run_cell(f"%load_secure_study {signed_container} --as ct").success
    assert ip.user_ns["ct"].purpose == "EDU"
    assert ip.run_cell(f"%load_secure_study {signed_container} --as st --purpose TREAT").success
    assert ip.user_ns["st"].purpose == "TREAT"
    ip.run_line_magic("config", "MedsecMagics.redaction_profile = 'none'")
    assert _magics(ip).redaction_profile == "basic"
    ip.run_line_magic("config", "MedsecMagics")
    listing = capsys.readouterr().out
    for trait in ("default_identity", "default_purpose", "redaction_profile", "audit_log", "harden"):
        assert f"MedsecMagics.{trait}" in listing


def test_audit_log_location_is_configurable_and_purpose_is_required(
    ip, typed, signed_container, keys, tmp_path, monkeypatch, capsys
):
    typed(None)
    log = tmp_path / "audit.jsonl"
    ip.run_line_magic("config", f"MedsecMagics.audit_log = {str(log)!r}")
    assert ip.run_cell(f"%load_secure_study {signed_container} -i {keys['plain']} -p TREAT --as ct").success
    assert '"action":"open"' in log.read_text() and '"purpose":"TREAT"' in log.read_text()
    monkeypatch.delenv("MEDSEC_PURPOSE", raising=False)
    capsys.readouterr()
    assert not ip.run_cell(f"%load_secure_study {signed_container} -i {keys['plain']} --as st").success
    [line] = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("MedsecError: a purpose of use is required")


def test_secure_session_sets_defaults_for_its_block_only(ip, typed, signed_container, keys, capsys):
    typed(None)
    cell = (
        f"%%secure_session --purpose TREAT --identity {keys['plain']}\n%load_secure_study {signed_container} --as ct\n"
    )
    assert ip.run_cell(cell).success
    assert ip.user_ns["ct"].purpose == "TREAT" and _magics(ip)._session == {}
    failing = "%%secure_session --purpose TREAT\nraise ValueError('inside')\n"
    res = ip.run_cell(failing)
    assert not res.success and isinstance(res.error_in_exec, MagicError)
    assert (
        capsys.readouterr().out.strip().splitlines()[-1] == "secure_session: the block stopped at the error shown above"
    )
    assert _magics(ip)._session == {}


def test_unload_closes_viewers_studies_and_names(ip, typed, signed_container, keys):
    typed(None)
    ip.run_cell(f"%load_secure_study {signed_container} -i {keys['plain']} --as a")
    ip.run_cell(f"%load_secure_study {signed_container} -i {keys['plain']} --as b")
    a, b = ip.user_ns["a"], ip.user_ns["b"]
    ip.run_cell("v = a.series[0].view()")
    viewer = ip.user_ns["v"]
    assert ip.run_cell("%unload_secure_study a").success
    assert a.closed and viewer.closed and "a" not in ip.user_ns and not b.closed
    assert not ip.run_cell("%unload_secure_study nothing_here").success
    assert ip.run_cell("%unload_secure_study").success  # every remaining one
    assert b.closed and "b" not in ip.user_ns and _magics(ip).loaded == {}


def test_loading_again_under_a_name_closes_the_previous_study(ip, typed, signed_container, keys):
    typed(None)
    ip.run_cell(f"%load_secure_study {signed_container} -i {keys['plain']} --as ct")
    first = ip.user_ns["ct"]
    ip.run_cell(f"%load_secure_study {signed_container} -i {keys['plain']} --as ct")
    assert first.closed and not ip.user_ns["ct"].closed


def test_default_name_comes_from_the_file(ip, typed, signed_container, keys, tmp_path):
    typed(None)
    copy = tmp_path / "ct-chest 2.msec"
    shutil.copyfile(signed_container, copy)
    assert ip.run_cell(f"%load_secure_study '{copy}' -i \"{keys['plain']}\"").success  # quotes are dropped
    assert isinstance(ip.user_ns["ct_chest_2"], medsec_nb.Study)
    assert [study_name(p) for p in ("data/ct.v2.msec", "1.msec", "class.msec", ".msec")] == [
        "ct",
        "_1",
        "class_",
        "study",
    ]


def test_unload_ext_closes_what_the_magics_opened(typed, signed_container, keys):
    globalipapp.start_ipython()
    shell = globalipapp.get_ipython()
    shell.run_line_magic("load_ext", "medsec_nb.notebook.magics")
    shell.run_line_magic("config", "MedsecMagics.harden = False")
    typed(None)
    shell.run_cell(f"%load_secure_study {signed_container} -i {keys['plain']} --as ct")
    ct = shell.user_ns["ct"]
    shell.run_line_magic("unload_ext", "medsec_nb.notebook.magics")
    shell.config.pop("MedsecMagics", None)
    assert ct.closed and "ct" not in shell.user_ns
    assert shell.find_line_magic("load_secure_study") is None and shell.find_cell_magic("secure_session") is None
    assert not any(isinstance(c, MedsecMagics) for c in shell.configurables)


def test_the_magic_hardens_the_process_unless_configured_not_to(ip, typed, signed_container, keys, monkeypatch):
    calls = []
    monkeypatch.setattr(magics, "harden_process", lambda: calls.append(1))
    typed(None)
    ip.run_cell(f"%load_secure_study {signed_container} -i {keys['plain']} --as ct")
    assert calls == []  # the fixture turned it off
    ip.run_line_magic("config", "MedsecMagics.harden = True")
    ip.run_cell(f"%load_secure_study {signed_container} -i {keys['plain']} --as ct")
    assert calls == [1]


def test_harden_process_disables_core_dumps_and_ptrace():
    code = (
        "import ctypes, resource, sys; from medsec_nb.notebook.hardening import harden_process; h = harden_process(); "
        "assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0) and h.core_dumps_disabled; "
        "assert not sys.platform.startswith('linux') or "
        "(h.undumpable and ctypes.CDLL(None).prctl(3, 0, 0, 0, 0) == 0); print(h.swap)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


def test_open_interactive_works_without_ipython(signed_container, keys, passphrase_container):
    asked: list[str] = []
    with open_interactive(
        signed_container, identity=keys["protected"], ask=lambda p: asked.append(p) or KEY_PASSPHRASE
    ) as st:
        assert len(st.series[0]) == 6
    with open_interactive(passphrase_container, ask=lambda p: PASSPHRASE, purpose="EDU") as st:
        assert st.purpose == "EDU" and st.key_id == "passphrase"
    assert len(asked) == 1


def test_no_stdin_is_a_clear_error(monkeypatch, passphrase_container):
    def no_stdin(prompt=""):
        raise StdinNotImplementedError("getpass was called, but this frontend does not support input requests.")

    monkeypatch.setattr(getpass, "getpass", no_stdin)
    with pytest.raises(medsec_nb.MedsecError, match="cannot ask for a passphrase"):
        open_interactive(passphrase_container)


def test_redaction_profile_and_options_drive_every_display(ip, typed, signed_container, keys, series_source, capsys):
    from medsec_nb.deid.redaction import current_profile

    typed(None)
    source = pydicom.dcmread(series_source.files[0])
    assert ip.run_cell(f"%load_secure_study {signed_container} -i {keys['plain']} -p HRESCH --as ct").success
    header = ip.user_ns["ct"].series[0].header(0)
    assert source.StudyDate not in repr(header) and source.StudyInstanceUID not in repr(header)
    ip.run_line_magic("config", "MedsecMagics.redaction_options = ['retain-long-full-dates', 'retain-uids']")
    assert current_profile().options == {"retain-long-full-dates", "retain-uids"}
    ip.display_formatter.formatters["text/html"].enabled = True  # as in a kernel
    shown = repr(header) + ip.display_formatter.formatters["text/html"](ip.user_ns["ct"].series[0])
    assert source.StudyDate in shown and source.StudyInstanceUID in shown
    assert str(source.PatientName) not in shown and source.PatientID not in shown  # names and IDs stay hidden
    ip.run_line_magic("config", "MedsecMagics.redaction_options = ['retain-everything']")  # refused
    assert _magics(ip).redaction_options == ["retain-long-full-dates", "retain-uids"]
    ip.run_line_magic(
        "config", "MedsecMagics.redaction_options = ['retain-long-full-dates', 'retain-long-modified-dates']"
    )
    assert current_profile().options == {"retain-long-full-dates", "retain-uids"}
    ip.run_line_magic("config", "MedsecMagics.redaction_profile = 'conservative'")  # the former name of basic
    ip.run_line_magic("config", "MedsecMagics.redaction_options = []")
    assert current_profile().options == frozenset() and source.StudyDate not in repr(header)
    ip.run_line_magic("config", "MedsecMagics.redaction_options = ['retain-uids']")
    ip.run_line_magic("unload_ext", "medsec_nb.notebook.magics")  # unloading restores the default profile
    assert current_profile().options == frozenset()
    ip.run_line_magic("load_ext", "medsec_nb.notebook.magics")
