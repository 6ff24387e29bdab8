"""The lab panel's audit endpoints show the key service's log when the server's user opens
studies through it (``$MEDSEC_KEYSERVICE``), through a real Jupyter server and a real service."""

from __future__ import annotations

import json
import multiprocessing
import os
import pwd
import signal

import pytest

import medsec_nb
from medsec_nb.access.policy import Policy
from medsec_nb.audit import AuditLog
from medsec_nb.container.writer import encrypt_datasets
from medsec_nb.keyservice import KeyServiceConfig, serve
from medsec_nb.testdata import synthesize_datasets

pytest_plugins = ["pytest_jupyter.jupyter_server"]
FORK = multiprocessing.get_context("fork")
ME = pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    work = tmp_path_factory.mktemp("ks-panel")
    ident = medsec_nb.generate_identity("x25519")
    encrypt_datasets(synthesize_datasets(2, rows=16, columns=16), work / "s.msec", [ident.public], progress=False)
    sock, ready = work / "ks.sock", FORK.Event()

    def run() -> None:
        os.environ["MEDSEC_DATA_DIR"] = str(work / "svc-data")
        serve(
            KeyServiceConfig(
                socket=sock,
                identities=[ident],
                log=AuditLog(work / "service.jsonl"),
                policy=Policy.load(),
                stewards=frozenset({ME}),
            ),
            ready=ready.set,
        )

    proc = FORK.Process(target=run)
    proc.start()
    assert ready.wait(30)
    with medsec_nb.open_study(work / "s.msec", keyservice=sock, purpose="EDU") as st:
        st.series[0].volume()
    yield {"socket": sock, "log": work / "service.jsonl"}
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(30)


@pytest.fixture
def jp_server_config(tmp_path, monkeypatch, service):
    monkeypatch.setenv("MEDSEC_AUDIT_LOG", str(tmp_path / "local.jsonl"))
    monkeypatch.setenv("MEDSEC_KEYSERVICE", str(service["socket"]))
    return {"ServerApp": {"jpserver_extensions": {"medsec_nb.server": True}}}


async def _json(jp_fetch, *path: str, method: str = "GET", body: str | None = None, **params) -> dict:
    r = await jp_fetch(*path, method=method, body=body, params=params)
    assert r.code == 200
    return json.loads(r.body)


async def test_the_panel_shows_and_verifies_the_service_s_log(jp_fetch, service, tmp_path):
    page = await _json(jp_fetch, "medsec", "audit", limit="1")
    assert [(r["action"], r["user"]) for r in page["records"]] == [("decrypt-series", ME)]
    older = await _json(jp_fetch, "medsec", "audit", limit="10", before=str(page["next"]))
    assert [r["action"] for r in older["records"]] == ["open"]
    assert not (tmp_path / "local.jsonl").exists()  # nothing was read from or written to a local log
    status = await _json(jp_fetch, "medsec", "audit", "verify")
    assert status["ok"] and status["message"].startswith("key service: ") and status["records"] >= 2, status
    cp = await _json(jp_fetch, "medsec", "audit", "checkpoint", method="POST", body="{}")
    assert cp["size"] == len(list(AuditLog(service["log"]).records()))
    r = await jp_fetch("medsec", "audit", "export", params={"format": "fhir"})
    assert [e["resource"]["subtype"][-1]["code"] for e in json.loads(r.body)["entry"]] == ["open", "decrypt-series"]
