"""The key service on one host (issue 15): a real service process running as its own OS user,
real OS users (made here with useradd) asking through its Unix socket, identity from the
kernel (SO_PEERCRED).

The interpreter lives under /root (mode 0700), which other users cannot enter, so each user's
process is this test process forked and then switched to that user (setgid/setuid) after every
module it needs is imported: what the kernel reports for the socket is that user's uid.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import medsec_nb
from medsec_nb.access.policy import Policy
from medsec_nb.access.service import KeyService
from medsec_nb.audit import AuditLog, verify_log
from medsec_nb.audit import checkpoint as ckpt
from medsec_nb.cli.main import main as cli_main
from medsec_nb.container.writer import encrypt_datasets
from medsec_nb.keys import load_recipient
from medsec_nb.keyservice import KeyServiceConfig, serve
from medsec_nb.notebook.magics import open_interactive
from medsec_nb.testdata import synthesize_datasets, synthesize_series

SVC, ALICE, BOB, STEWARD = "mksvc", "mkalice", "mkbob", "mksteward"
FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def users() -> dict[str, pwd.struct_passwd]:
    assert os.geteuid() == 0, "these tests make OS users and switch to them: run them as root (CI does)"
    made = []
    for name in (SVC, ALICE, BOB, STEWARD):
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
            made.append(name)
    yield {name: pwd.getpwnam(name) for name in (SVC, ALICE, BOB, STEWARD)}
    for name in made:
        subprocess.run(["userdel", name], check=False)


def _become(user: pwd.struct_passwd, env: dict[str, str] | None = None) -> None:
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ["HOME"] = "/nonexistent"
    os.environ.update(env or {})


def as_user(user: pwd.struct_passwd, fn: Callable[[], Any], env: dict[str, str] | None = None) -> Any:
    """Run ``fn`` in a forked process as ``user``; its result, or ("error", class name, message)."""
    queue = FORK.Queue()

    def child() -> None:
        try:
            _become(user, env)
            queue.put(("ok", fn()))
        except BaseException as exc:  # the parent asserts on it
            queue.put(("error", type(exc).__name__, str(exc)))

    proc = FORK.Process(target=child)
    proc.start()
    result = queue.get(timeout=120)
    proc.join(30)
    return result[1] if result[0] == "ok" else result


@pytest.fixture(scope="module")
def site(users):
    """The site: a key only the service user can read, a policy, a study encrypted to the key, a
    running service; yields its paths and the expected volume."""
    base = Path(tempfile.mkdtemp(prefix="medsec-ks-", dir="/tmp"))
    os.chmod(base, 0o755)
    svc = users[SVC]
    private = base / "svc"
    (private / "data").mkdir(parents=True)
    ident = medsec_nb.generate_identity("x25519")
    medsec_nb.save_identity(ident, private / "site")
    (private / "site.csv").write_text(
        f"p, {ALICE}, *, decrypt, HRESCH, *, allow\np, {ALICE}, *, export, HRESCH, *, allow\n"
    )
    for p in [private, *private.rglob("*")]:
        os.chown(p, svc.pw_uid, svc.pw_gid)
        os.chmod(p, 0o700 if p.is_dir() else 0o600)
    run = base / "run"
    run.mkdir()
    os.chown(run, svc.pw_uid, svc.pw_gid)
    study = base / "study.msec"
    site_key = load_recipient(private / "site.pub")
    encrypt_datasets(synthesize_datasets(4, rows=32, columns=32), study, [site_key], progress=False)
    os.chmod(study, 0o644)
    out = base / "out"
    out.mkdir(mode=0o777)
    os.chmod(out, 0o777)
    with medsec_nb.open_study(study, identity=ident, purpose="HRESCH", audit_log=base / "root.jsonl") as st:
        expected = st.series[0].volume()
    # warm every import the switched processes will need (they cannot read /root afterwards)
    Policy.load(private / "site.csv")
    log = AuditLog(base / "warm.jsonl", checkpoints=base / "warm.checkpoints")
    log.append(action="open", outcome="success", purpose="HRESCH")
    log.checkpoint(medsec_nb.generate_identity("ed25519"))
    verify_log(base / "warm.jsonl")
    paths = {
        "base": base,
        "private": private,
        "socket": run / "keyservice.sock",
        "study": study,
        "out": out,
        "log": private / "audit.jsonl",
        "checkpoints": private / "audit.checkpoints",
    }
    state = {**paths, "expected": expected, "proc": start_service(users, paths)}
    yield state
    stop_service(state["proc"])  # the one running now (a test restarts it)
    shutil.rmtree(base, ignore_errors=True)


def start_service(users: dict[str, pwd.struct_passwd], paths: dict[str, Path], log: Path | None = None) -> Any:
    ready = FORK.Event()

    def run() -> None:
        _become(users[SVC], {"MEDSEC_DATA_DIR": str(paths["private"] / "data")})
        config = KeyServiceConfig(
            socket=paths["socket"],
            identities=[medsec_nb.load_identity(paths["private"] / "site.key")],
            log=AuditLog(log or paths["log"], checkpoints=paths["checkpoints"]),
            policy=Policy.load(paths["private"] / "site.csv"),
            stewards=frozenset({STEWARD}),
        )
        serve(config, ready=ready.set)

    proc = FORK.Process(target=run)
    proc.start()
    assert ready.wait(30), "the key service did not start"
    return proc


def stop_service(proc: Any) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(30)
    assert proc.exitcode == 0


def _records(site) -> list[dict]:
    return list(AuditLog(site["log"]).records())


def _open_volume(site) -> Callable[[], Any]:
    def go() -> Any:
        with medsec_nb.open_study(site["study"], keyservice=site["socket"], purpose="HRESCH") as st:
            vol = st.series[0].volume()
            return {"volume": vol, "key_id": st.key_id, "pid": os.getpid()}

    return go


def test_alice_opens_through_the_service_and_the_record_names_her(site, users):
    before = len(_records(site))
    got = as_user(users[ALICE], _open_volume(site), env={"MEDSEC_DATA_DIR": str(site["out"])})
    assert isinstance(got, dict), got
    assert np.array_equal(got["volume"], site["expected"])
    new = _records(site)[before:]
    assert [(r["action"], r["outcome"], r["who"]["os_user"]) for r in new] == [
        ("open", "success", ALICE),
        ("decrypt-series", "success", ALICE),
    ]
    assert all(r["where"]["pid"] == got["pid"] for r in new)  # from the kernel, not from the client
    assert new[0]["who"]["key_id"] == got["key_id"] and new[0]["study"]["container_sha256"]


@pytest.mark.parametrize(
    "claims", [{}, {"JUPYTERHUB_USER": ALICE, "LOGNAME": ALICE, "USER": ALICE}], ids=["plain", "claiming-alice"]
)
def test_bob_is_denied_recorded_and_gets_no_key(site, users, claims):
    before = len(_records(site))

    def try_everything() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, path in (
            ("key", site["private"] / "site.key"),
            ("log", site["log"]),
            ("policy", site["private"] / "site.csv"),
        ):
            try:
                Path(path).read_bytes()
                out[name] = "read"
            except PermissionError:
                out[name] = "denied"
        try:
            medsec_nb.open_study(site["study"], keyservice=site["socket"], purpose="HRESCH")
            out["open"] = "opened"
        except medsec_nb.MedsecError as exc:
            out["open"] = f"{type(exc).__name__}: {exc}"
        return out

    got = as_user(users[BOB], try_everything, env=claims)
    assert got["key"] == got["log"] == got["policy"] == "denied", got
    assert got["open"].startswith("PolicyDeniedError: denied:") and f"{BOB} to decrypt" in got["open"], got
    assert "\n" not in got["open"]
    new = _records(site)[before:]
    assert [(r["action"], r["outcome"], r["who"]["os_user"]) for r in new] == [("open", "denied", BOB)]


def test_cli_decrypt_through_the_service(site, users):
    out = site["out"] / "plain"

    def run() -> int:
        return cli_main(
            [
                "decrypt",
                str(site["study"]),
                "-o",
                str(out),
                "--keyservice",
                str(site["socket"]),
                "--purpose",
                "HRESCH",
                "-q",
            ]
        )

    assert as_user(users[ALICE], run) == 0
    assert len(list(out.rglob("*.dcm"))) == 4
    rec = [r for r in _records(site) if r["action"] == "export-open"][-1]
    assert rec["who"]["os_user"] == ALICE and rec["outcome"] == "success"
    shutil.rmtree(out)


def test_records_are_the_callers_own_and_all_for_a_steward(site, users):
    as_user(users[ALICE], _open_volume(site))

    def mine() -> set[str]:
        return {r["who"]["os_user"] for r in KeyService(site["socket"]).call("records")["records"]}

    assert as_user(users[ALICE], mine) == {ALICE}
    assert {ALICE, BOB} <= as_user(users[STEWARD], mine)

    def checkpoint() -> str:
        try:
            return str(KeyService(site["socket"]).call("checkpoint")["size"])
        except medsec_nb.MedsecError as exc:
            return f"{type(exc).__name__}: {exc}"

    assert "is not a steward" in as_user(users[ALICE], checkpoint)
    assert as_user(users[STEWARD], checkpoint).isdigit()


def test_unwritable_log_releases_nothing(site, users):
    os.chmod(site["log"], 0o400)  # the service user can no longer append
    try:
        got = as_user(users[ALICE], _open_volume(site))
    finally:
        os.chmod(site["log"], 0o600)
    assert got[0] == "error" and got[1] == "AuditUnavailableError", got


def test_service_down_is_one_clear_line(site, users, tmp_path):
    missing = site["base"] / "run" / "nothing.sock"

    def go() -> Any:
        return medsec_nb.open_study(site["study"], keyservice=missing, purpose="HRESCH")

    got = as_user(users[ALICE], go)
    assert got[:2] == ("error", "MedsecError") and "cannot connect" in got[2] and str(missing) in got[2], got


def test_concurrent_clients_every_release_has_one_record_and_the_chain_verifies(site, users):
    """8 processes x 50 opens through one service: 400 releases, 400 open records (one per
    release, each with its process's pid), nothing lost; after shutdown the chain and the
    service's checkpoints verify against its pinned public key."""
    before = len(_records(site))

    def many() -> list[int]:
        pids = []
        for _ in range(50):
            with medsec_nb.open_study(site["study"], keyservice=site["socket"], purpose="HRESCH") as st:
                assert st.series[0][0].Rows == 32
            pids.append(os.getpid())
        return pids

    pool = [FORK.Process(target=lambda: (_become(users[ALICE]), many())) for _ in range(8)]
    for p in pool:
        p.start()
    for p in pool:
        p.join(300)
    assert [p.exitcode for p in pool] == [0] * 8
    opens = [r for r in _records(site)[before:] if r["action"] == "open"]
    assert len(opens) == 400 and Counter(r["where"]["pid"] for r in opens) == {p.pid: 50 for p in pool}
    pinned = as_user(users[ALICE], lambda: KeyService(site["socket"]).call("checkpoint_key")["pem"])
    stop_service(site["proc"])  # signs a checkpoint at shutdown
    site["proc"] = start_service(users, site)
    (site["base"] / "pinned.pub").write_text(pinned)
    report = verify_log(site["log"], site["checkpoints"], public_key=site["base"] / "pinned.pub")
    assert report.ok and report.uncovered == 0, report.message
    assert ckpt.stored(site["checkpoints"])


def test_the_magic_opens_through_the_service_without_a_key_file(site, users):
    """``%load_secure_study``'s function with ``$MEDSEC_KEYSERVICE`` set: nothing is asked, no
    identity file is looked for."""

    def go() -> Any:
        def ask(prompt: str) -> str:
            raise AssertionError(f"asked for a secret: {prompt}")

        with open_interactive(site["study"], purpose="HRESCH", ask=ask) as st:
            return st.series[0].volume()

    got = as_user(users[ALICE], go, env={"MEDSEC_KEYSERVICE": str(site["socket"])})
    assert isinstance(got, np.ndarray) and np.array_equal(got, site["expected"]), got


@pytest.mark.parametrize(
    "index, uid",
    [
        (b'{"instances":[{"path":"a","study":"1.2.3"},{"study":"9.9"}]}', "1.2.3"),  # canonical: first entry only
        (b'{ "instances": [ {"study": "1.2.4"} ] }', "1.2.4"),  # any other shape: parsed whole
        (b'{"instances":[]}', None),
        (b'{"instances":[{"study":7}]}', None),
    ],
)
def test_the_service_reads_the_first_entry_s_study_uid(index, uid):
    from medsec_nb.container._reader import _first_study_uid

    assert _first_study_uid(index, "x.msec") == uid


def test_a_deeply_nested_first_entry_is_a_format_error():
    from medsec_nb.container._reader import _first_study_uid

    with pytest.raises(medsec_nb.FormatError, match="nested deeper than"):
        _first_study_uid(b'{"instances":[{"x":' + b"[" * 200_000, "x.msec")


def _cli(argv: list[str]) -> Callable[[], tuple[int, str, str]]:
    def go() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(argv)
        return code, out.getvalue(), err.getvalue()

    return go


def test_a_producer_encrypts_to_the_site_without_its_private_key(site, users, tmp_path_factory):
    src = site["base"] / "src2"
    synthesize_series(src, n_slices=3, rows=16, columns=16)
    for p in [src, *src.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    made = site["out"] / "to-site.msec"
    code, out, err = as_user(
        users[BOB], _cli(["encrypt", str(src), "-o", str(made), "--to-keyservice", str(site["socket"]), "-q"])
    )
    assert code == 0 and "1 recipient(s)" in out, (out, err)

    def open_it() -> Any:
        with medsec_nb.open_study(made, keyservice=site["socket"], purpose="HRESCH") as st:
            return st.series[0].volume().shape

    assert as_user(users[ALICE], open_it) == (3, 16, 16)
    made.unlink()


def test_audit_commands_ask_the_service(site, users):
    as_user(users[ALICE], _open_volume(site))
    show = ["audit", "show", "--keyservice", str(site["socket"]), "--json"]
    code, out, _ = as_user(users[ALICE], _cli(show))
    users_seen = {json.loads(line)["who"]["os_user"] for line in out.splitlines()}
    assert code == 0 and users_seen == {ALICE}
    code, out, _ = as_user(users[STEWARD], _cli(show))
    assert code == 0 and {ALICE, BOB} <= {json.loads(line)["who"]["os_user"] for line in out.splitlines()}
    code, out, _ = as_user(users[BOB], _cli(["audit", "verify", "--keyservice", str(site["socket"])]))
    assert code == 0 and out.startswith("OK ") and "records, chain intact" in out, out
    code, _, err = as_user(users[ALICE], _cli(["audit", "checkpoint", "--keyservice", str(site["socket"])]))
    assert code == 1 and "is not a steward" in err
    code, out, _ = as_user(users[STEWARD], _cli(["audit", "checkpoint", "--keyservice", str(site["socket"])]))
    assert code == 0 and "signed by the key service" in out
