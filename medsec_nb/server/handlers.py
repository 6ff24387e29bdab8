"""REST endpoints of the lab panel, under ``<base_url>/medsec/``; every verb is authenticated.

GET  studies                 studies open in each running kernel (from the registry)
GET  audit                   a page of audit rows, newest first (limit, before, filters)
GET  audit/verify            the chain's verification and the last checkpoint
GET  audit/export            FHIR R4 bundle (format=fhir) or DICOM audit messages (format=dicom)
POST audit/checkpoint        sign the chain head with the installation's checkpoint key
POST studies/close           close a study in its kernel ({"kernel_id", "study_id"})
GET  inspect                 the public header of a ``.msec`` file under the server root (path=)

Bad parameters get 400 with a message; nothing returned holds key material or PHI.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from ..access.hub_service import connect
from ..access.service import KeyService, resolve_keyservice
from ..audit import AuditLog, export
from ..audit.page import MAX_LIMIT, make_filters, read_page
from ..audit.record import utc_now
from ..core import runtime
from ..core.errors import AuditRecordError, MedsecError
from . import views

CLOSE_TIMEOUT = 20.0
FILTERS = ("study", "user", "action", "outcome", "purpose", "since")


def _bad(message: str) -> tornado.web.HTTPError:
    return tornado.web.HTTPError(400, message)


class _Base(APIHandler):
    def _int(self, name: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        if not raw.isdigit() or int(raw) < lo or (hi is not None and int(raw) > hi):
            bounds = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise _bad(f"{name}={raw!r}: expected an integer {bounds}")
        return int(raw)

    def _filters(self):
        unknown = set(self.request.query_arguments) - set(FILTERS) - {"limit", "before", "format"}
        if unknown:
            raise _bad(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        try:
            return make_filters(**{k: self.get_query_argument(k, None) for k in FILTERS})
        except AuditRecordError as exc:
            raise _bad(f"since: {exc}") from None

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run blocking file work off the event loop; caller mistakes become 400, an unreadable
        log 500 with its message."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))
        except AuditRecordError as exc:
            raise _bad(str(exc)) from None
        except MedsecError as exc:
            raise tornado.web.HTTPError(500, str(exc)) from None

    def _json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise _bad("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise _bad("the request body must be a JSON object")
        return body


class StudiesHandler(_Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        self.finish(json.dumps({"kernels": await running_studies(self)}))


async def running_studies(handler: APIHandler) -> list[dict[str, Any]]:
    """The studies list of every running kernel, with its notebook path when a session has one."""
    notebooks = {}
    for s in await handler.session_manager.list_sessions():
        kernel = s.get("kernel") or {}
        notebooks[kernel.get("id")] = s.get("path")
    km = handler.kernel_manager
    kernels = {
        kid: {"name": km.get_kernel(kid).kernel_name, "notebook": notebooks.get(kid)} for kid in km.list_kernel_ids()
    }
    entries = await asyncio.get_running_loop().run_in_executor(None, runtime.published_studies)
    return views.kernel_studies(entries, kernels)


def _service() -> KeyService | None:
    """The key service this server's user opens studies through (``$MEDSEC_KEYSERVICE``): its
    log, not a local one, is then the one the panel shows."""
    path = resolve_keyservice(None)
    return connect(path) if path else None


def _service_records(service: KeyService) -> list[dict[str, Any]]:
    try:
        return list(service.call("records")["records"])
    finally:
        service.close()


class AuditPageHandler(_Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        filters = self._filters()
        limit = self._int("limit", 100, 1, MAX_LIMIT)
        before = self._int("before", None, 0)
        service = _service()
        if service is not None:
            records = await self._run(_service_records, service)
            self.finish(json.dumps(views.service_page(records, filters, limit, before)))
            return
        page = await self._run(read_page, limit=limit, before=before, filters=filters)
        self.finish(json.dumps(views.page_json(page)))


class AuditVerifyHandler(_Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        service = _service()
        if service is not None:
            result = await self._run(lambda: service.call("verify"))
            service.close()
            self.finish(json.dumps(views.service_status(result)))
            return
        self.finish(json.dumps(await self._run(views.chain_status)))


class AuditExportHandler(_Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        fmt = self.get_query_argument("format", None)
        if fmt not in ("fhir", "dicom"):
            raise _bad(f"format={fmt!r}: expected fhir or dicom")
        filters = self._filters()

        service = _service()

        def build() -> bytes:
            source = _service_records(service) if service is not None else AuditLog().records()
            records = [r for r in source if filters.match(r)]
            if fmt == "fhir":
                return (json.dumps(export.fhir_bundle(records, utc_now()), indent=2) + "\n").encode("utf-8")
            return export.dicom_xml(records)

        data = await self._run(build)
        ctype, name = (
            ("application/fhir+json", "audit-fhir.json") if fmt == "fhir" else ("application/xml", "audit-dicom.xml")
        )
        self.set_header("Content-Type", ctype)
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(data)


class AuditCheckpointHandler(_Base):
    @tornado.web.authenticated
    async def post(self) -> None:
        service = _service()
        if service is not None:  # a steward's action at the service
            cp = await self._run(lambda: service.call("checkpoint"))
            service.close()
        else:
            cp = await self._run(AuditLog().checkpoint)
        self.finish(json.dumps({k: cp[k] for k in ("size", "time", "key_id", "hash")}))


class CloseHandler(_Base):
    @tornado.web.authenticated
    async def post(self) -> None:
        body = self._json_body()
        kid, sid = body.get("kernel_id"), body.get("study_id")
        if not isinstance(sid, str) or not runtime.ENTRY_ID.fullmatch(sid):
            raise _bad("study_id: expected the 16 hex digit id from /medsec/studies")
        if not isinstance(kid, str) or kid not in self.kernel_manager:
            raise _bad(f"kernel_id {kid!r}: no such running kernel")
        if not any(s["id"] == sid for k in await running_studies(self) if k["kernel_id"] == kid for s in k["studies"]):
            raise tornado.web.HTTPError(404, f"study {sid} is not open in kernel {kid}")
        closed = await close_in_kernel(self.kernel_manager.get_kernel(kid), sid)
        self.finish(json.dumps({"closed": closed}))


async def close_in_kernel(kernel_manager: Any, study_id: str, timeout: float = CLOSE_TIMEOUT) -> bool:
    """Ask the kernel to close the study through the notebook layer's public
    :func:`medsec_nb.notebook.close_study` (a user expression of an execute request with the
    checked 16-hex-digit id), silently: nothing is stored in its history or shown in the
    notebook. True once the kernel reports it closed."""
    if not runtime.ENTRY_ID.fullmatch(study_id):
        raise ValueError("not a study id")
    expr = f"__import__('medsec_nb.notebook').notebook.close_study('{study_id}')"
    client = kernel_manager.client()
    client.start_channels()
    try:
        reply = await client.execute(
            "", silent=True, store_history=False, user_expressions={"closed": expr}, reply=True, timeout=timeout
        )
    except TimeoutError:
        raise tornado.web.HTTPError(504, "the kernel did not answer in time (busy?); try again") from None
    finally:
        client.stop_channels()
    result = reply["content"].get("user_expressions", {}).get("closed", {})
    if result.get("status") != "ok":
        raise tornado.web.HTTPError(500, f"closing failed in the kernel ({result.get('ename', 'error')})")
    return result.get("data", {}).get("text/plain") == "True"


class InspectHandler(_Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        rel = self.get_query_argument("path", "")
        root = Path(self.contents_manager.root_dir).resolve()
        target = (root / rel.lstrip("/")).resolve()
        if not rel or not target.is_relative_to(root) or target.suffix != ".msec":
            raise _bad(f"path={rel!r}: expected a .msec file under the server's root folder")
        if not target.is_file():
            raise tornado.web.HTTPError(404, f"{rel}: no such file")
        try:
            info = await asyncio.get_running_loop().run_in_executor(None, views.public_header, target)
        except MedsecError as exc:
            raise _bad(str(exc).replace(str(root) + "/", "")) from None
        self.finish(json.dumps(info))


def setup_handlers(web_app: Any) -> None:
    """Register the endpoints under ``<base_url>/medsec/``."""
    base = url_path_join(web_app.settings["base_url"], "medsec")
    routes = [
        ("studies", StudiesHandler),
        ("studies/close", CloseHandler),
        ("audit", AuditPageHandler),
        ("audit/verify", AuditVerifyHandler),
        ("audit/export", AuditExportHandler),
        ("audit/checkpoint", AuditCheckpointHandler),
        ("inspect", InspectHandler),
    ]
    web_app.add_handlers(".*$", [(url_path_join(base, path), handler) for path, handler in routes])
