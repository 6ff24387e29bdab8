"""The key service inside a real JupyterHub (issue 15, item 2): a Hub on 127.0.0.1 with the dummy
authenticator and configurable-http-proxy, the key service as a Hub-managed service
(`medsec keyservice --hub`), users and their tokens made through the Hub's REST API. Callers send
their token; the service asks the Hub who they are, never the request body.

Single-user servers are not spawned here (that needs a Python environment other OS users can
run); the calls come from this test process holding each user's Hub token, as a kernel would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import medsec_nb
from medsec_nb.access.hub_service import HubKeyService, connect
from medsec_nb.access.service import KeyService
from medsec_nb.audit import AuditLog
from medsec_nb.container._reader import read_unlock_parts
from medsec_nb.core.errors import MedsecError, PolicyDeniedError
from medsec_nb.keys import load_recipient
from medsec_nb.testdata import synthesize_series

pytestmark = pytest.mark.slow
SERVICE = "medsec-keys"
ADMIN_TOKEN = "medsec-test-admin-" + os.urandom(16).hex()


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


def _stop(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _api(url: str, token: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:  # the Hub's HTML page until the service's route exists
        return status, None


def _wait(what: str, ready: Any, proc: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
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
def hub(tmp_path_factory):
    """A running Hub with the key service; yields URLs, users' tokens, paths, the expected volume."""
    base = Path(tempfile.mkdtemp(prefix="medsec-hub-", dir="/tmp"))
    private = base / "svc"
    (private / "data").mkdir(parents=True)
    ident = medsec_nb.generate_identity("x25519")
    medsec_nb.save_identity(ident, private / "site")
    (private / "site.csv").write_text("p, alice, *, decrypt, HRESCH, *, allow\n")
    src = tmp_path_factory.mktemp("hub-src")
    synthesize_series(src, n_slices=4, rows=32, columns=32)
    study = base / "study.msec"
    medsec_nb.encrypt_study(src, study, recipients=[load_recipient(private / "site.pub")], progress=False)
    with medsec_nb.open_study(study, identity=ident, purpose="HRESCH", audit_log=base / "local.jsonl") as st:
        expected = st.series[0].volume()
    proxy_port, proxy_api_port, hub_port, svc_port = (_free_port() for _ in range(4))
    log = private / "audit.jsonl"
    command = [sys.executable, "-m", "medsec_nb.cli", "keyservice", "--hub", "-i", str(private / "site.key")]
    command += ["--policy", str(private / "site.csv"), "--log", str(log)]
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
    url = f"http://127.0.0.1:{proxy_port}/services/{SERVICE}"
    try:
        _wait("the Hub", lambda: _api(f"{api}/users", ADMIN_TOKEN)[0] == 200, proc, hub_log)
        _wait("the key service", lambda: _api(f"{url}/v1/verify", "x", "POST", {"v": 1})[0] == 403, proc, hub_log)
        tokens = {}
        for name in ("alice", "bob"):
            status, _ = _api(f"{api}/users/{name}", ADMIN_TOKEN, "POST", {})
            assert status == 201, status
            status, reply = _api(f"{api}/users/{name}/tokens", ADMIN_TOKEN, "POST", {"note": "medsec test"})
            assert status == 201, status
            tokens[name] = reply["token"]
        yield {"url": url, "tokens": tokens, "study": study, "log": log, "expected": expected}
    finally:
        _stop(proc.pid, signal.SIGTERM)  # the Hub stops its proxy and its managed services
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            _stop(proc.pid, signal.SIGKILL)
            proc.wait(10)
        with contextlib.suppress(OSError, ValueError):  # a proxy the Hub left behind (a Hub that failed)
            os.kill(int((base / "proxy.pid").read_text()), signal.SIGTERM)
        shutil.rmtree(base, ignore_errors=True)


def _records(hub) -> list[dict[str, Any]]:
    return list(AuditLog(hub["log"]).records())


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
    as_hub_user(hub["tokens"]["alice"])
    before = len(_records(hub))
    with medsec_nb.open_study(hub["study"], keyservice=hub["url"], purpose="HRESCH") as st:
        volume = st.series[0].volume()
    assert np.array_equal(volume, hub["expected"])
    new = _records(hub)[before:]
    assert [(r["action"], r["outcome"], r["who"]["os_user"], r["who"]["hub_user"]) for r in new] == [
        ("open", "success", "alice", "alice"),
        ("decrypt-series", "success", "alice", "alice"),
    ]
    assert all(r["where"]["pid"] is None for r in new)  # the service does not know the kernel's pid
    assert not list(tmp_path.iterdir())  # no local log, no identity looked for


@pytest.mark.parametrize("claims", [{}, {"JUPYTERHUB_USER": "alice", "LOGNAME": "alice", "USER": "alice"}])
def test_bob_is_denied_and_recorded_as_bob_whatever_he_claims(hub, as_hub_user, claims):
    as_hub_user(hub["tokens"]["bob"], **claims)
    before = len(_records(hub))
    with pytest.raises(PolicyDeniedError) as err:
        medsec_nb.open_study(hub["study"], keyservice=hub["url"], purpose="HRESCH")
    assert "\n" not in str(err.value)
    # the body naming alice changes nothing: the Hub says whose token it is
    header, index = (base64.b64encode(part).decode() for part in read_unlock_parts(hub["study"]))
    body = {"v": 1, "user": "alice", "who": {"os_user": "alice"}, "header": header, "index": index, "purpose": "HRESCH"}
    status, reply = _api(f"{hub['url']}/v1/unlock", hub["tokens"]["bob"], "POST", body)
    assert status == 200 and reply["ok"] is False and reply["error"] == "PolicyDeniedError"
    assert "study_key" not in reply
    new = _records(hub)[before:]
    assert [(r["action"], r["outcome"], r["who"]["os_user"], r["who"]["hub_user"]) for r in new] == [
        ("open", "denied", "bob", "bob"),
        ("open", "denied", "bob", "bob"),
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
    bob = HubKeyService(hub["url"], token=hub["tokens"]["bob"])
    rec = bob.call("record", action="reveal-tag", outcome="success", purpose="HRESCH", user="alice")
    assert _records(hub)[-1]["seq"] == rec["seq"] and _records(hub)[-1]["who"]["hub_user"] == "bob"
    mine = bob.call("records", user="alice")["records"]
    assert mine and {(r["who"]["os_user"], r["who"]["hub_user"]) for r in mine} == {("bob", "bob")}
