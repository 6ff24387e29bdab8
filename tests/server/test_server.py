"""The Jupyter server extension forwards audit records as server events (a real server)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from medsec_nb.audit import AuditLog
from medsec_nb.audit.events import SCHEMA_ID

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def jp_server_config(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEC_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    return {"ServerApp": {"jpserver_extensions": {"medsec_nb.server": True, "medsec_nb.saveguard": True}}}


async def test_records_of_other_processes_and_of_the_server_become_events(jp_serverapp, tmp_path):
    got: list[dict] = []

    async def listener(logger, schema_id, data):
        got.append(data)

    jp_serverapp.event_logger.add_listener(schema_id=SCHEMA_ID, listener=listener)
    forwarder = jp_serverapp.web_app.settings["medsec_audit_forwarder"]
    assert forwarder.log.path == tmp_path / "audit.jsonl"

    # a kernel is another process: its record reaches the server through the log file
    code = "from medsec_nb.audit import AuditLog; AuditLog().append(action='open', outcome='success', purpose='EDU')"
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ), timeout=60)
    assert forwarder.poll() == 1
    # a record written in the server process is emitted once, when written, not again by the follower
    AuditLog().append(action="verify", outcome="failure", purpose="HRESCH")
    assert forwarder.poll() == 0
    for _ in range(50):
        if len(got) >= 2:
            break
        await asyncio.sleep(0.02)
    assert [(g["action"], g["outcome"], g["why"]["purpose"]) for g in got] == [
        ("open", "success", "EDU"),
        ("verify", "failure", "HRESCH"),
    ]
    assert got[0]["where"]["pid"] != os.getpid() and got[1]["where"]["pid"] == os.getpid()


def test_unloading_stops_emitting(jp_serverapp):
    from medsec_nb.audit import events
    from medsec_nb.server import _unload_jupyter_server_extension

    assert events._logger is jp_serverapp.event_logger
    _unload_jupyter_server_extension(jp_serverapp)
    assert events._logger is None
