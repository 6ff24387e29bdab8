"""The key service inside a real JupyterHub (issue 15, item 2): a Hub on 127.0.0.1 with the dummy
authenticator, configurable-http-proxy and the LocalProcessSpawner; the key service as a
Hub-managed service (`medsec keyservice --hub`) running as its own OS user; OS users made here with
useradd, whose single-user servers the Hub spawns as those users. Their kernels open studies with
``%load_secure_study`` through the service, driven as JupyterLab drives them: the server's REST API
and the kernel's websocket. The service asks the Hub whose token a request carries, never the body.

Users' servers, their kernels and the service run from the environment ``./dev.sh test`` builds
(``setup_user_env``: Debian's python3 in /opt/medsec-user-env with a copy of medsec_nb), since the
test's own interpreter lives under /root, where other users cannot enter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import filecmp
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

import medsec_nb
from medsec_nb.access.hub_service import HubKeyService, connect
from medsec_nb.access.service import KeyService
from medsec_nb.audit import AuditLog, verify_log
from medsec_nb.cli.main import main as cli_main
from medsec_nb.container._reader import read_unlock_parts
from medsec_nb.container.writer import encrypt_datasets
from medsec_nb.core.errors import MedsecError, PolicyDeniedError
from medsec_nb.keys import load_recipient
from medsec_nb.keys.transit import TransitKey
from medsec_nb.testdata import synthesize_datasets

pytestmark = pytest.mark.slow
SERVICE = "medsec-keys"
ADMIN_TOKEN = "medsec-test-admin-" + os.urandom(16).hex()
SVC, ALICE, BOB, STEWARD = "mkhsvc", "mkhalice", "mkhbob", "mkhsteward"  # STEWARD: a Hub user only
USER_ENV = Path("/opt/medsec-user-env")
PACKAGE = Path(medsec_nb.__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proxy() -> str:
    found = shutil.which("configurable-http-proxy")
    local = Path(__file__).resolve().parents[2] / ".venv/chp/node_modules/.bin/configurable-http-proxy"
    if found is None and local.exists():
        found = str(local)
    assert found, "configurable-http-proxy is missing: ./dev.sh test installs it (npm, into .venv/chp)"
    return found


def _user_env() -> Path:
    """The users' environment, checked present and holding this checkout's medsec_nb."""
    singleuser = USER_ENV / "bin" / "jupyterhub-singleuser"
    assert singleuser.exists(), f"{singleuser} is missing: ./dev.sh test builds the users' environment (setup_user_env)"
    probe = subprocess.run(
        [USER_ENV / "bin/python", "-c", "import medsec_nb; print(medsec_nb.__file__)"],
        cwd="/",
        capture_output=True,
        text=True,
    )
    why = (probe.stderr.strip().splitlines() or [""])[-1]
    assert probe.returncode == 0, f"{USER_ENV}: no medsec_nb ({why}): ./dev.sh test builds it (setup_user_env)"
    copy = Path(probe.stdout.strip()).parent
    stale = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if not (copy / p.relative_to(PACKAGE)).exists() or not filecmp.cmp(p, copy / p.relative_to(PACKAGE), False)
    ]
    assert not stale, f"{copy} differs from the checkout ({stale[:3]}...): ./dev.sh test recopies it (setup_user_env)"
    return USER_ENV


def _stop(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _api(url: str, token: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:  # the Hub's HTML page until the service's route exists
        return status, None


def _wait(what: str, ready: Any, proc: subprocess.Popen[bytes], log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"JupyterHub exited: {log.read_text()[-3000:]}"
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{what} did not come up: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def os_users() -> dict[str, pwd.struct_passwd]:
    """The service's OS user and two analysts (with homes: their servers run there)."""
    assert os.geteuid() == 0, "these tests make OS users and spawn servers as them: run them as root (CI does)"
    made = []
    for name in (SVC, ALICE, BOB):
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/usr/sbin/nologin", name], check=True)
            made.append(name)
    yield {name: pwd.getpwnam(name) for name in (SVC, ALICE, BOB)}
    for name in made:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


@pytest.fixture(scope="module")
def hub(os_users, bao):
    """A running Hub with the key service (as its own OS user, holding a key file and a Transit key
    in a real OpenBao) and alice's and bob's servers (as theirs); the study is encrypted to the
    Transit key. Yields URLs, users' tokens, paths, the expected volume."""
    env_dir = _user_env()
    svc = os_users[SVC]
    base = Path(tempfile.mkdtemp(prefix="medsec-hub-", dir="/tmp"))
    os.chmod(base, 0o755)
    private = base / "svc"
    (private / "data").mkdir(parents=True)
    medsec_nb.save_identity(medsec_nb.generate_identity("x25519"), private / "site")
    (private / "bao.token").write_text(bao["token"] + "\n")
    (private / "site.csv").write_text(
        f"p, {ALICE}, *, decrypt, HRESCH, *, allow\np, {ALICE}, *, add-recipient, HRESCH, *, allow\n"
    )
    log, checkpoints = private / "audit.jsonl", private / "audit.checkpoints"
    log.touch()
    for p in [private, *private.rglob("*")]:
        os.chown(p, svc.pw_uid, svc.pw_gid)
        os.chmod(p, 0o700 if p.is_dir() else 0o600)
    study = base / "study.msec"
    datasets = synthesize_datasets(4, rows=32, columns=32)
    transit = TransitKey(bao["addr"], "site", bao["token"]).public
    local = medsec_nb.generate_identity("x25519")  # in memory only: the expected volume
    encrypt_datasets(datasets, study, recipients=[transit, local.public], progress=False)
    os.chmod(study, 0o644)
    with medsec_nb.open_study(study, identity=local, purpose="HRESCH", audit_log=base / "local.jsonl") as st:
        expected = st.series[0].volume()
    proxy_port, proxy_api_port, hub_port, svc_port = (_free_port() for _ in range(4))
    url = f"http://127.0.0.1:{proxy_port}/services/{SERVICE}"
    command = [str(env_dir / "bin/python"), "-m", "medsec_nb.cli", "keyservice", "--hub"]
    command += ["-i", str(private / "site.key"), "--transit-addr", bao["addr"], "--transit-key", "site"]
    command += ["--transit-token-file", str(private / "bao.token")]
    command += ["--policy", str(private / "site.csv"), "--log", str(log), "--checkpoints", str(checkpoints)]
    command += ["--steward", STEWARD]
    config = {
        "ip": "127.0.0.1",
        "port": proxy_port,
        "hub_ip": "127.0.0.1",
        "hub_port": hub_port,
        "db_url": f"sqlite:///{base}/hub.sqlite",
        "cookie_secret_file": str(base / "cookie_secret"),
        "pid_file": str(base / "hub.pid"),
        "services": [
            {
                "name": SERVICE,
                "url": f"http://127.0.0.1:{svc_port}",
                "command": command,
                "user": SVC,  # the only OS user that can read the site key and the log
                "cwd": str(private),
                "environment": {"MEDSEC_DATA_DIR": str(private / "data")},
            },
            {"name": "test-admin", "api_token": ADMIN_TOKEN},
        ],
        "load_roles": [
            {"name": "admin", "services": ["test-admin"]},
            {"name": "medsec-keys", "scopes": ["read:users:name"], "services": [SERVICE]},
        ],
    }
    (base / "jupyterhub_config.py").write_text(
        "import json\n"
        f"cfg = json.loads({json.dumps(json.dumps(config))})\n"
        "for k, v in cfg.items():\n    setattr(c.JupyterHub, k, v)\n"
        "c.JupyterHub.authenticator_class = 'dummy'\n"
        "c.JupyterHub.spawner_class = 'localprocess'\n"
        f"c.Spawner.cmd = [{str(env_dir / 'bin/jupyterhub-singleuser')!r}]\n"
        f"c.Spawner.environment = {{'MEDSEC_KEYSERVICE': {url!r}}}\n"  # as a site would set it
        "c.Spawner.start_timeout = 120\nc.Spawner.http_timeout = 120\n"
        f"c.ConfigurableHTTPProxy.command = [{_proxy()!r}]\n"
        f"c.ConfigurableHTTPProxy.pid_file = {str(base / 'proxy.pid')!r}\n"
        f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{proxy_api_port}'\n"
    )
    hub_log = base / "hub.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "MEDSEC_"))}
    with open(hub_log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(base / "jupyterhub_config.py")],
            cwd=base,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = f"http://127.0.0.1:{hub_port}/hub/api"
    try:
        _wait("the Hub", lambda: _api(f"{api}/users", ADMIN_TOKEN)[0] == 200, proc, hub_log)
        _wait("the key service", lambda: _api(f"{url}/v1/verify", "x", "POST", {"v": 1})[0] == 403, proc, hub_log)
        tokens = {}
        for name in (ALICE, BOB, STEWARD):
            status, _ = _api(f"{api}/users/{name}", ADMIN_TOKEN, "POST", {})
            assert status == 201, status
            status, reply = _api(f"{api}/users/{name}/tokens", ADMIN_TOKEN, "POST", {"note": "medsec test"})
            assert status == 201, status
            tokens[name] = reply["token"]
        for name in (ALICE, BOB):  # both spawn at once
            assert _api(f"{api}/users/{name}/server", ADMIN_TOKEN, "POST", {})[0] in (201, 202)
        for name in (ALICE, BOB):
            _wait(
                f"{name}'s server",
                lambda name=name: _api(f"{api}/users/{name}", ADMIN_TOKEN)[1]["servers"].get("", {}).get("ready"),
                proc,
                hub_log,
                150,
            )
        servers = {name: f"http://127.0.0.1:{proxy_port}/user/{name}" for name in (ALICE, BOB)}
        yield {
            "url": url,
            "api": api,
            "tokens": tokens,
            "servers": servers,
            "study": study,
            "log": log,
            "checkpoints": checkpoints,
            "private": private,
            "base": base,
            "expected": expected,
            "transit_kid": transit.key_id,
            "site_kid": load_recipient(private / "site.pub").key_id,
        }
    finally:
        _stop(proc.pid, signal.SIGTERM)  # the Hub stops users' servers, its proxy and its managed services
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            _stop(proc.pid, signal.SIGKILL)
            proc.wait(10)
        with contextlib.suppress(OSError, ValueError):  # a proxy the Hub left behind (a Hub that failed)
            os.kill(int((base / "proxy.pid").read_text()), signal.SIGTERM)
        shutil.rmtree(base, ignore_errors=True)


def _records(hub) -> list[dict[str, Any]]:
    return list(AuditLog(hub["log"]).records())


# -- kernels in users' servers, driven as JupyterLab drives them ------------------------------------


def start_kernel(hub, user: str, notebook: str | None = None) -> str:
    """A kernel in ``user``'s server (a session for ``notebook`` when given); its id."""
    server, token = hub["servers"][user], hub["tokens"][user]
    if notebook is None:
        status, reply = _api(f"{server}/api/kernels", token, "POST", {"name": "python3"})
        assert status == 201, (status, reply)
        return str(reply["id"])
    body = {"path": notebook, "type": "notebook", "name": notebook, "kernel": {"name": "python3"}}
    status, reply = _api(f"{server}/api/sessions", token, "POST", body)
    assert status == 201, (status, reply)
    return str(reply["kernel"]["id"])


async def execute(hub, user: str, kernel_id: str, code: str, timeout: float = 300) -> dict[str, Any]:
    """Run ``code`` in the kernel over its websocket: its stdout and its error (``Name: value``)."""
    url = hub["servers"][user].replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
    request = HTTPRequest(url, headers={"Authorization": f"token {hub['tokens'][user]}"}, request_timeout=timeout)
    ws = await websocket_connect(request)
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex, "username": user}
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False}
    message = {"header": {**header, "version": "5.3"}, "parent_header": {}, "metadata": {}, "content": content}
    await ws.write_message(json.dumps({**message, "channel": "shell", "buffers": []}))
    stdout: list[str] = []
    error = None
    replied = idle = False
    try:
        while not (replied and idle):
            raw = await asyncio.wait_for(ws.read_message(), timeout)
            assert raw is not None, f"{user}'s kernel {kernel_id}: the websocket closed"
            msg = json.loads(raw) if isinstance(raw, str) else {}
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream" and msg["content"]["name"] == "stdout":
                stdout.append(msg["content"]["text"])
            elif kind == "error":
                error = f"{msg['content']['ename']}: {msg['content']['evalue']}"
            replied |= kind == "execute_reply"
            idle |= kind == "status" and msg["content"]["execution_state"] == "idle"
    finally:
        ws.close()
    return {"stdout": "".join(stdout), "error": error}


def run_cells(hub, user: str, kernel_id: str, cells: list[str]) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        return [await execute(hub, user, kernel_id, cell) for cell in cells]

    return asyncio.run(go())


def analysis_notebook(study: Path) -> dict[str, Any]:
    """The analyst's notebook: load the extension, open the study, hash its volume."""
    cells = [
        "%load_ext medsec_nb",
        f"%load_secure_study {study} --purpose HRESCH --as ct",
        "import hashlib, json\nvolume = ct.series[0].volume()\n"
        "print(json.dumps({'sha256': hashlib.sha256(volume.tobytes()).hexdigest(), 'shape': volume.shape}))",
    ]
    code = [{"cell_type": "code", "source": c, "metadata": {}, "outputs": [], "execution_count": None} for c in cells]
    return {"cells": code, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_the_users_servers_run_as_their_os_users(hub, os_users):
    for name in (ALICE, BOB):
        kernel = start_kernel(hub, name)
        got = run_cells(hub, name, kernel, ["import os, sys; print(os.getuid(), os.environ['JUPYTERHUB_USER'])"])
        assert got[0] == {"stdout": f"{os_users[name].pw_uid} {name}\n", "error": None}, got


def test_alices_notebook_opens_the_study_in_her_server_and_the_record_names_her(hub, os_users):
    server, token = hub["servers"][ALICE], hub["tokens"][ALICE]
    notebook = analysis_notebook(hub["study"])
    status, _ = _api(f"{server}/api/contents/analysis.ipynb", token, "PUT", {"type": "notebook", "content": notebook})
    assert status in (200, 201)
    status, saved = _api(f"{server}/api/contents/analysis.ipynb", token)
    assert status == 200 and [c["source"] for c in saved["content"]["cells"]] == [
        c["source"] for c in notebook["cells"]
    ]
    kernel = start_kernel(hub, ALICE, "analysis.ipynb")
    before = len(_records(hub))
    got = run_cells(hub, ALICE, kernel, [c["source"] for c in saved["content"]["cells"]])
    assert [g["error"] for g in got] == [None, None, None], got
    expected = hub["expected"]
    assert json.loads(got[2]["stdout"]) == {
        "sha256": hashlib.sha256(expected.tobytes()).hexdigest(),
        "shape": list(expected.shape),
    }
    new = _records(hub)[before:]
    assert [(r["action"], r["outcome"], r["who"]["os_user"], r["who"]["hub_user"]) for r in new] == [
        ("open", "success", ALICE, ALICE),
        ("decrypt-series", "success", ALICE, ALICE),
    ]
    assert {r["where"]["client"]["kernel_id"] for r in new} == {kernel}  # claims, kept apart
    assert new[0]["who"]["key_id"] == hub["transit_kid"]  # OpenBao unwrapped it
    home = Path(os_users[ALICE].pw_dir)
    assert new[0]["where"]["client"]["notebook"] == str(home / "analysis.ipynb") and new[0]["where"]["pid"] is None
    assert not [p for p in home.rglob("*") if p.suffix in (".jsonl", ".key")]  # no local log, no key file


def test_bob_in_his_kernel_is_denied_recorded_gets_no_key_and_reads_no_secret(hub):
    """bob claims to be alice in his kernel's environment; the Hub says whose token it is."""
    kernel = start_kernel(hub, BOB)
    private = hub["private"]
    secrets = {"key": private / "site.key", "token": private / "bao.token", "log": hub["log"]}
    probe = (
        "import json, os\n"
        f"os.environ.update(JUPYTERHUB_USER={ALICE!r}, LOGNAME={ALICE!r}, USER={ALICE!r})\n"
        "out = {}\n"
        f"for name, path in {json.dumps({k: str(v) for k, v in secrets.items()})}.items():\n"
        "    try:\n        open(path, 'rb').read(); out[name] = 'read'\n"
        "    except PermissionError:\n        out[name] = 'denied'\n"
        "print(json.dumps(out))"
    )
    before = len(_records(hub))
    got = run_cells(
        hub,
        BOB,
        kernel,
        [probe, "%load_ext medsec_nb", f"%load_secure_study {hub['study']} --purpose HRESCH --as ct", "print(ct)"],
    )
    assert json.loads(got[0]["stdout"]) == {"key": "denied", "token": "denied", "log": "denied"}, got
    assert got[1]["error"] is None
    denial = got[2]["error"]
    assert denial and "\n" not in denial and f"{BOB} to decrypt" in denial and ALICE not in denial, denial
    assert got[3]["error"] == "NameError: name 'ct' is not defined"  # no study, no key
    new = _records(hub)[before:]
    assert [(r["action"], r["outcome"], r["who"]["os_user"], r["who"]["hub_user"]) for r in new] == [
        ("open", "denied", BOB, BOB)
    ]


def test_eight_kernels_fifty_opens_each_one_record_per_release_and_the_chain_verifies(hub):
    """8 real kernels in alice's server (the Hub transport end to end: kernel, proxy, service, the
    Hub's token lookup, OpenBao) x 50 opens, all at once: 400 releases, 400 open records, 50 per
    kernel (its id is a claim; the Hub transport has no pid), nothing lost; a steward's checkpoint
    then covers the log, which verifies against the service's pinned key. Real kernels are
    affordable here: the 400 opens take about 10 s on 2 shared cores."""
    kernels = [start_kernel(hub, ALICE) for _ in range(8)]
    opens = (
        "import medsec_nb\nn = 0\nfor _ in range(50):\n"
        f"    with medsec_nb.open_study({str(hub['study'])!r}, purpose='HRESCH') as st:\n"
        "        n += st.series[0][0].Rows == 32\nprint(n)"
    )
    before = len(_records(hub))

    async def all_at_once() -> list[dict[str, Any]]:
        await asyncio.gather(*(execute(hub, ALICE, k, "import medsec_nb") for k in kernels))
        return list(await asyncio.gather(*(execute(hub, ALICE, k, opens) for k in kernels)))

    got = asyncio.run(all_at_once())
    assert [(g["stdout"], g["error"]) for g in got] == [("50\n", None)] * 8, got
    new = [r for r in _records(hub)[before:] if r["action"] == "open"]
    assert len(new) == 400 and {(r["outcome"], r["who"]["hub_user"]) for r in new} == {("success", ALICE)}
    assert Counter(r["where"]["client"]["kernel_id"] for r in new) == {k: 50 for k in kernels}
    steward = HubKeyService(hub["url"], token=hub["tokens"][STEWARD])
    pinned = hub["base"] / "pinned.pub"
    pinned.write_text(steward.call("checkpoint_key")["pem"])
    assert steward.call("checkpoint")["size"] == len(_records(hub))  # records covered
    report = verify_log(hub["log"], hub["checkpoints"], public_key=pinned)
    assert report.ok and report.uncovered == 0, report.message


# -- calls from this process holding a user's token (as a kernel would) -----------------------------


@pytest.fixture
def as_hub_user(hub, monkeypatch, tmp_path):
    """Run as a kernel of ``name`` would: its Hub token in $JUPYTERHUB_API_TOKEN, plus any claims."""

    def become(token: str, **claims: str) -> None:
        monkeypatch.setenv("MEDSEC_DATA_DIR", str(tmp_path))  # any local record would land here
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token)
        for key, value in claims.items():
            monkeypatch.setenv(key, value)

    return become


def test_connect_picks_the_transport():
    assert type(connect("http://127.0.0.1:1/services/x")) is HubKeyService
    assert type(connect("/run/medsec/keyservice.sock")) is KeyService


def test_alice_opens_through_the_hub_service_and_the_record_names_her(hub, as_hub_user, tmp_path):
    as_hub_user(hub["tokens"][ALICE])
    before = len(_records(hub))
    with medsec_nb.open_study(hub["study"], keyservice=hub["url"], purpose="HRESCH") as st:
        volume = st.series[0].volume()
    assert np.array_equal(volume, hub["expected"])
    new = _records(hub)[before:]
    assert [(r["action"], r["outcome"], r["who"]["os_user"], r["who"]["hub_user"]) for r in new] == [
        ("open", "success", ALICE, ALICE),
        ("decrypt-series", "success", ALICE, ALICE),
    ]
    assert all(r["where"]["pid"] is None for r in new)  # the service does not know the kernel's pid
    assert not list(tmp_path.iterdir())  # no local log, no identity looked for


@pytest.mark.parametrize("claims", [{}, {"JUPYTERHUB_USER": ALICE, "LOGNAME": ALICE, "USER": ALICE}])
def test_bob_is_denied_and_recorded_as_bob_whatever_he_claims(hub, as_hub_user, claims):
    as_hub_user(hub["tokens"][BOB], **claims)
    before = len(_records(hub))
    with pytest.raises(PolicyDeniedError) as err:
        medsec_nb.open_study(hub["study"], keyservice=hub["url"], purpose="HRESCH")
    assert "\n" not in str(err.value)
    # the body naming alice changes nothing: the Hub says whose token it is
    header, index = (base64.b64encode(part).decode() for part in read_unlock_parts(hub["study"]))
    body = {"v": 1, "user": ALICE, "who": {"os_user": ALICE}, "header": header, "index": index, "purpose": "HRESCH"}
    status, reply = _api(f"{hub['url']}/v1/unlock", hub["tokens"][BOB], "POST", body)
    assert status == 200 and reply["ok"] is False and reply["error"] == "PolicyDeniedError"
    assert "study_key" not in reply
    new = _records(hub)[before:]
    assert [(r["action"], r["outcome"], r["who"]["os_user"], r["who"]["hub_user"]) for r in new] == [
        ("open", "denied", BOB, BOB),
        ("open", "denied", BOB, BOB),
    ]


@pytest.mark.parametrize("token", ["not-a-token", ""], ids=["wrong", "none"])
def test_a_wrong_or_missing_token_is_a_one_line_403_and_releases_nothing(hub, as_hub_user, token):
    as_hub_user("wrong-" + os.urandom(8).hex() if token else "")
    if not token:
        os.environ.pop("JUPYTERHUB_API_TOKEN")
    before = len(_records(hub))
    with pytest.raises(MedsecError) as err:
        medsec_nb.open_study(hub["study"], keyservice=hub["url"], purpose="HRESCH")
    message = str(err.value)
    assert "\n" not in message and "JUPYTERHUB_API_TOKEN" in message
    assert "wrong-" not in message  # the token is never shown
    status, reply = _api(f"{hub['url']}/v1/recipients", token or "x", "POST", {"v": 1})
    assert status == 403 and reply == {"v": 1, "ok": False, "error": "MedsecError", "message": reply["message"]}
    assert _records(hub)[before:] == []


def test_records_over_http_are_the_callers_own(hub, as_hub_user):
    as_hub_user("")
    bob = HubKeyService(hub["url"], token=hub["tokens"][BOB])
    rec = bob.call("record", action="reveal-tag", outcome="success", purpose="HRESCH", user=ALICE)
    assert _records(hub)[-1]["seq"] == rec["seq"] and _records(hub)[-1]["who"]["hub_user"] == BOB
    mine = bob.call("records", user=ALICE)["records"]
    assert mine and {(r["who"]["os_user"], r["who"]["hub_user"]) for r in mine} == {(BOB, BOB)}


def test_rewrap_through_the_hub_service(hub, as_hub_user, tmp_path, capsys):
    """``medsec rewrap --keyservice URL``: the study key wrapped to the site keys the service gives
    (here its key file beside the Transit key it already had), the payload unchanged, recorded."""
    as_hub_user(hub["tokens"][ALICE])
    study = tmp_path / "rewrap.msec"
    shutil.copyfile(hub["study"], study)
    payload = study.read_bytes()[-4096:]
    before = len(_records(hub))
    assert cli_main(["rewrap", str(study), "--keyservice", hub["url"], "--purpose", "HRESCH"]) == 0
    assert capsys.readouterr().out == f"added {hub['site_kid']}\n" and study.read_bytes()[-4096:] == payload
    new = _records(hub)[before:]
    assert [(r["action"], r["outcome"], r["who"]["hub_user"]) for r in new] == [
        ("add-recipient-open", "success", ALICE),
        ("add-recipient", "success", ALICE),
    ]
    assert new[1]["detail"] == {"added": [hub["site_kid"]], "dropped": []}
