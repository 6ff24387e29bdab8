"""The lab panel's endpoints on a real Jupyter server, with a real kernel opening a real study."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys

import pytest
from tornado.httpclient import HTTPClientError

from medsec_nb import save_identity
from medsec_nb.audit import AuditLog
from medsec_nb.audit.page import Filters, read_page
from medsec_nb.core import runtime

pytest_plugins = ["pytest_jupyter.jupyter_server"]

ENDPOINTS = [
    ("GET", "medsec/studies"),
    ("GET", "medsec/audit"),
    ("GET", "medsec/audit/verify"),
    ("GET", "medsec/audit/export?format=fhir"),
    ("POST", "medsec/audit/checkpoint"),
    ("POST", "medsec/studies/close"),
    ("GET", "medsec/inspect?path=x.msec"),
]


@pytest.fixture
def jp_server_config(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEC_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    return {"ServerApp": {"jpserver_extensions": {"medsec_nb.server": True, "medsec_nb.saveguard": True}}}


def _append(n: int, **kw) -> None:
    log = AuditLog(checkpoint_every=0)
    for i in range(n):
        log.append(
            action=kw.get("action", "open"),
            outcome=kw.get("outcome", "success"),
            purpose=kw.get("purpose", "EDU"),
            detail={"i": i},
        )


async def _json(jp_fetch, endpoint: str, **params) -> dict:
    r = await jp_fetch(*endpoint.split("/"), params=params)
    assert r.code == 200
    return json.loads(r.body)


async def _error(jp_fetch, endpoint: str, method: str = "GET", body: str | None = None, **params) -> HTTPClientError:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*endpoint.split("/"), method=method, body=body, params=params)
    return info.value


@pytest.mark.parametrize("method,path", ENDPOINTS)
async def test_unauthenticated_requests_are_refused(jp_fetch, method, path):
    """No token, no cookie: 403 from every endpoint (and nothing about the log in the body)."""
    _append(1)
    path, _, query = path.partition("?")
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(
            *path.split("/"),
            method=method,
            body="{}" if method == "POST" else None,
            headers={"Authorization": ""},
            params=dict([query.split("=")]) if query else None,
        )
    assert info.value.code == 403
    assert b"open" not in (info.value.response.body or b"")


async def test_audit_page_newest_first_with_cursor_and_filters(jp_fetch):
    _append(5)
    _append(3, action="verify", outcome="failure", purpose="HRESCH")
    page = await _json(jp_fetch, "medsec/audit", limit="4")
    assert [r["seq"] for r in page["records"]] == [8, 7, 6, 5]
    assert set(page["records"][0]) == {
        "seq",
        "time",
        "user",
        "action",
        "outcome",
        "purpose",
        "study",
        "instances",
        "kernel_id",
    }
    older = await _json(jp_fetch, "medsec/audit", limit="4", before=str(page["next"]))
    assert [r["seq"] for r in older["records"]] == [4, 3, 2, 1] and older["next"] is None
    failed = await _json(jp_fetch, "medsec/audit", outcome="failure")
    assert [r["seq"] for r in failed["records"]] == [8, 7, 6]
    assert (await _json(jp_fetch, "medsec/audit", action="open", purpose="EDU", limit="2"))["records"][0]["seq"] == 5
    assert (await _json(jp_fetch, "medsec/audit", since="1h"))["records"][-1]["seq"] == 1
    assert (await _json(jp_fetch, "medsec/audit", since="2999-01-01"))["records"] == []
    assert (await _json(jp_fetch, "medsec/audit", user="nobody-here"))["records"] == []


@pytest.mark.parametrize(
    "params,words",
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "100000"}, "limit"),
        ({"before": "-3"}, "before"),
        ({"before": "5"}, "not at the start of a record"),
        ({"before": "99999999"}, "outside the log"),
        ({"since": "yesterday-ish"}, "since"),
        ({"colour": "red"}, "unknown parameter"),
    ],
)
async def test_audit_page_bad_parameters_get_400_with_a_message(jp_fetch, params, words):
    _append(2)
    err = await _error(jp_fetch, "medsec/audit", **params)
    assert err.code == 400
    assert words in json.loads(err.response.body)["message"]


async def test_verify_checkpoint_and_export(jp_fetch):
    _append(3)
    status = await _json(jp_fetch, "medsec/audit/verify")
    assert status["ok"] and status["records"] == 3 and status["last_checkpoint"] is None
    r = await jp_fetch("medsec", "audit", "checkpoint", method="POST", body="")
    cp = json.loads(r.body)
    assert cp["size"] == 3 and len(cp["hash"]) == 64
    status = await _json(jp_fetch, "medsec/audit/verify")
    assert status["ok"] and status["checkpoints"] == 1 and status["last_checkpoint"]["size"] == 3
    fhir = await jp_fetch("medsec", "audit", "export", params={"format": "fhir"})
    bundle = json.loads(fhir.body)
    assert bundle["resourceType"] == "Bundle" and len(bundle["entry"]) == 3
    assert "attachment" in fhir.headers["Content-Disposition"]
    dicom = await jp_fetch("medsec", "audit", "export", params={"format": "dicom", "action": "open"})
    assert dicom.body.count(b"<AuditMessage>") == 3
    for params in ({}, {"format": "csv"}, {"format": "fhir", "since": "soon"}):
        err = await _error(jp_fetch, "medsec/audit/export", **params)
        assert err.code == 400 and "message" in json.loads(err.response.body)


async def test_verify_of_a_log_not_yet_written(jp_fetch):
    status = await _json(jp_fetch, "medsec/audit/verify")
    assert status["ok"] and status["records"] == 0 and "no audit records yet" in status["message"]


async def test_verify_reports_a_tampered_log(jp_fetch, tmp_path):
    _append(3)
    log = tmp_path / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + lines[1].replace(b'"EDU"', b'"ABC"') + lines[2])
    status = await _json(jp_fetch, "medsec/audit/verify")
    assert not status["ok"] and status["first_bad_line"] == 2


async def test_checkpoint_of_an_empty_log_is_a_400(jp_fetch):
    err = await _error(jp_fetch, "medsec/audit/checkpoint", method="POST", body="")
    assert err.code == 400 and "empty" in json.loads(err.response.body)["message"]


async def test_inspect_shows_the_public_header_only(jp_fetch, jp_root_dir, signed_container):
    shutil.copyfile(signed_container, jp_root_dir / "study.msec")
    info = await _json(jp_fetch, "medsec/inspect", path="study.msec")
    assert info["instances"] == 6 and info["signature_valid"] and info["name"] == "study.msec"
    assert str(jp_root_dir) not in json.dumps(info)
    (jp_root_dir / "junk.msec").write_bytes(b"not a container at all" * 10)
    for path, code in (
        ("../etc/passwd.msec", 400),
        ("study.txt", 400),
        ("", 400),
        ("absent.msec", 404),
        ("junk.msec", 400),
    ):
        err = await _error(jp_fetch, "medsec/inspect", path=path)
        assert err.code == code, path
        assert str(jp_root_dir) not in err.response.body.decode()


async def _kernel_exec(jp_serverapp, kid: str, code: str) -> dict:
    client = jp_serverapp.kernel_manager.get_kernel(kid).client()
    client.start_channels()
    try:
        reply = await client.execute(code, reply=True, timeout=60, user_expressions={"out": "_out"})
    finally:
        client.stop_channels()
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply["content"]["user_expressions"]["out"]["data"]["text/plain"]


async def test_studies_listed_per_kernel_and_closed_from_the_server(
    jp_fetch, jp_serverapp, tmp_path, signed_container, identities
):
    save_identity(identities.x25519, tmp_path / "me")
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kid = json.loads(r.body)["id"]
    try:
        assert (await _json(jp_fetch, "medsec/studies"))["kernels"] == [
            {"kernel_id": kid, "name": "python3", "notebook": None, "studies": []}
        ]
        code = (
            "import medsec_nb, medsec_nb.notebook.magics\n"
            "ip = get_ipython(); ip.extension_manager.load_extension('medsec_nb')\n"
            f"ip.run_line_magic('load_secure_study', {str(signed_container)!r} + ' -i {tmp_path / 'me.key'} "
            "-p HRESCH --as ct')\n"
            f"other = medsec_nb.open_study({str(signed_container)!r}, identity={str(tmp_path / 'me.key')!r})\n"
            "_out = (ct.closed, other.closed)"
        )
        assert await _kernel_exec(jp_serverapp, kid, code) == "(False, False)"
        kernels = (await _json(jp_fetch, "medsec/studies"))["kernels"]
        studies = kernels[0]["studies"]
        assert [(s["name"], s["instances"], s["purpose"]) for s in studies] == [("study.msec", 6, "HRESCH")] * 2
        assert set(studies[0]) == {"id", "name", "instances", "purpose", "user", "opened"}
        # the audit rows of the kernel's opens carry its id
        rows = (await _json(jp_fetch, "medsec/audit", action="open"))["records"]
        assert rows and all(row["kernel_id"] == kid for row in rows)

        bad = await _error(
            jp_fetch,
            "medsec/studies/close",
            method="POST",
            body=json.dumps({"kernel_id": kid, "study_id": "'); import os; ('"}),
        )
        assert bad.code == 400
        bad = await _error(
            jp_fetch,
            "medsec/studies/close",
            method="POST",
            body=json.dumps({"kernel_id": "nope", "study_id": studies[0]["id"]}),
        )
        assert bad.code == 400
        for body in ("not json", "[1]"):
            assert (await _error(jp_fetch, "medsec/studies/close", method="POST", body=body)).code == 400
        missing = await _error(
            jp_fetch, "medsec/studies/close", method="POST", body=json.dumps({"kernel_id": kid, "study_id": "0" * 16})
        )
        assert missing.code == 404

        r = await jp_fetch(
            "medsec",
            "studies",
            "close",
            method="POST",
            body=json.dumps({"kernel_id": kid, "study_id": studies[0]["id"]}),
        )
        assert json.loads(r.body) == {"closed": True}
        left = (await _json(jp_fetch, "medsec/studies"))["kernels"][0]["studies"]
        assert [s["id"] for s in left] == [studies[1]["id"]]
        # the magic-bound study went the %unload_secure_study way: variable gone, magics state clean
        state = await _kernel_exec(
            jp_serverapp,
            kid,
            "_out = ('ct' in globals(), other.closed, list(ip.magics_manager.registry['MedsecMagics'].loaded))",
        )
        assert state == "(False, False, [])"
        await jp_fetch(
            "medsec",
            "studies",
            "close",
            method="POST",
            body=json.dumps({"kernel_id": kid, "study_id": studies[1]["id"]}),
        )
        assert await _kernel_exec(jp_serverapp, kid, "_out = other.closed") == "True"
        assert (await _json(jp_fetch, "medsec/studies"))["kernels"][0]["studies"] == []
    finally:
        await jp_fetch("api", "kernels", kid, method="DELETE")
    for _ in range(50):
        if not (await _json(jp_fetch, "medsec/studies"))["kernels"]:
            break
        await asyncio.sleep(0.1)
    assert (await _json(jp_fetch, "medsec/studies"))["kernels"] == []


def test_read_page_reads_only_the_end_of_a_large_log(tmp_path):
    """Pages come from the end of the file: a torn last line is skipped, cursors chain to the start."""
    log = tmp_path / "big.jsonl"
    lines = [
        json.dumps(
            {
                "seq": i,
                "time": f"2025-01-01T00:00:{i % 60:02d}.000000Z",
                "action": "open",
                "outcome": "success" if i % 3 else "denied",
                "why": {"purpose": "EDU"},
                "who": {"os_user": "u"},
                "pad": "x" * 300,
            }
        )
        for i in range(1, 1001)
    ]
    log.write_text("\n".join(lines) + "\n" + '{"seq": 1001, "tor')
    page = read_page(log, limit=100)
    assert [r["seq"] for r in page.records] == list(range(1000, 900, -1))
    seen, cursor = [], None
    while True:
        p = read_page(log, limit=333, before=cursor, filters=Filters(outcome="denied"))
        seen += [r["seq"] for r in p.records]
        if p.next is None:
            break
        cursor = p.next
    assert seen == list(range(999, 0, -3))


def test_registry_writes_nothing_outside_a_kernel(signed_container, identities):
    from medsec_nb import open_study
    from medsec_nb.notebook import registry

    with open_study(signed_container, identity=identities.x25519) as study:
        assert not study.closed
        assert not list(runtime.runtime_dir(registry.KIND).glob("*.json"))
    assert runtime.published_studies() == []


def test_published_studies_drop_dead_processes_and_junk(tmp_path):
    from medsec_nb.notebook import registry

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    folder = runtime.runtime_dir(registry.KIND)
    files = [folder / f"{dead}.json", folder / "junk.json", folder / f"{os.getppid()}.json", folder / "1.json"]
    try:
        files[0].write_text(json.dumps({"kernel_id": "k", "studies": []}))
        files[1].write_text("{not json")
        files[2].write_text("{not json either")  # a live process's unreadable file: skipped, kept
        files[3].write_text(json.dumps({"pid": 99, "kernel_id": "k1", "studies": [{"id": "a"}]}))
        assert [(e["kernel_id"], e["pid"]) for e in runtime.published_studies()] == [("k1", 1)]  # pid: the file's name
        assert not files[0].exists() and files[2].exists()
    finally:
        for f in files:
            f.unlink(missing_ok=True)
