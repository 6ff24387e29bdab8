"""The key service as a JupyterHub-managed service (docs/KEYSERVICE.md, "Over HTTP in JupyterHub"):
``POST <prefix>v1/<op>``, the caller's Hub token in ``Authorization``, the user resolved by the Hub
(:meth:`HubAuth.user_for_token`), never from the body; then the same :data:`~.server.OPS`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback

from ..access.service import MAX_LINE, decode_message, encode_message, error_reply
from ..core.errors import MedsecError
from .peer import Peer
from .server import OPS, KeyServiceConfig, _checkpoint, answer

if TYPE_CHECKING:
    from jupyterhub.services.auth import HubAuth

NO_TOKEN = "no valid JupyterHub token: send Authorization: token $JUPYTERHUB_API_TOKEN"


def hub_peer(name: str) -> Peer:
    """The caller as the Hub named them: no pid (None), uid or gid (-1)."""
    return Peer(None, -1, -1, name, hub=True)


class _OpHandler(web.RequestHandler):
    def initialize(self, config: KeyServiceConfig, auth: HubAuth) -> None:
        self.config, self.auth = config, auth

    def check_xsrf_cookie(self) -> None:  # token in a header, no cookies
        return None

    def _reply(self, status: int, reply: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(encode_message(reply))

    async def post(self, name: str) -> None:
        token = self.auth.get_token(self, in_cookie=False)
        try:
            model = await self.auth.user_for_token(token, use_cache=False, sync=False) if token else None
        except web.HTTPError:
            self._reply(502, error_reply(MedsecError("the key service could not ask the Hub who is calling")))
            return
        if not isinstance(model, dict) or model.get("kind", "user") != "user" or not model.get("name"):
            self._reply(403, error_reply(MedsecError(NO_TOKEN)))
            return
        user = str(model["name"])
        if name not in OPS:
            self._reply(404, answer(name, hub_peer(user), self.config, {}))
            return
        try:
            request = decode_message(self.request.body, f"key service request from {user}")
        except MedsecError as exc:
            self._reply(400, error_reply(exc))
            return
        reply = await IOLoop.current().run_in_executor(None, answer, name, hub_peer(user), self.config, request)
        self._reply(200, reply)


def make_app(config: KeyServiceConfig, auth: HubAuth, prefix: str = "/") -> web.Application:
    """The routes: ``<prefix>v1/<op>`` (through the Hub's proxy) and ``/v1/<op>`` (direct)."""
    prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    routes = {prefix, "/"}
    args = {"config": config, "auth": auth}
    return web.Application([(rf"{p}v1/([a-z_]+)", _OpHandler, args) for p in sorted(routes)])


def hub_auth() -> HubAuth:
    """The service's own HubAuth, from what the Hub gives a managed service
    (``$JUPYTERHUB_API_TOKEN``, ``$JUPYTERHUB_API_URL``)."""
    try:
        from jupyterhub.services.auth import HubAuth
    except ImportError:
        raise MedsecError("--hub needs the jupyterhub package (pip install jupyterhub)") from None
    token, url = os.environ.get("JUPYTERHUB_API_TOKEN", ""), os.environ.get("JUPYTERHUB_API_URL", "")
    if not token or not url:
        raise MedsecError("--hub needs $JUPYTERHUB_API_TOKEN and $JUPYTERHUB_API_URL (run it as a Hub-managed service)")
    return HubAuth(api_token=token, api_url=url)


def listen_address(listen: str | None) -> tuple[str, int]:
    """``HOST:PORT`` from ``listen``, else from ``$JUPYTERHUB_SERVICE_URL``."""
    text = listen or os.environ.get("JUPYTERHUB_SERVICE_URL", "")
    if not text:
        raise MedsecError("--hub needs --listen HOST:PORT or $JUPYTERHUB_SERVICE_URL")
    parts = urlsplit(text if "//" in text else f"//{text}")
    if not parts.port:
        raise MedsecError(f"listen address {text!r}: give HOST:PORT")
    return parts.hostname or "127.0.0.1", parts.port


def serve_hub(config: KeyServiceConfig, listen: str | None = None) -> None:
    """Serve the operations over HTTP to Hub users until SIGTERM or SIGINT; sign a checkpoint
    every ``checkpoint_seconds`` and at shutdown."""
    auth = hub_auth()
    host, port = listen_address(listen)
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")

    async def main() -> None:
        server = HTTPServer(make_app(config, auth, prefix), max_body_size=MAX_LINE)
        server.listen(port, host)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        timer = PeriodicCallback(lambda: _checkpoint(config, "timer"), config.checkpoint_seconds * 1000)
        timer.start()
        print(
            f"medsec keyservice: listening on http://{host}:{port}{prefix} for JupyterHub users "
            f"(hub API {auth.api_url}); keys: {', '.join(i.key_id for i in config.identities)}; log: {config.log.path}",
            file=sys.stderr,
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            timer.stop()
            server.stop()
            _checkpoint(config, "shutdown")
            print("medsec keyservice: stopped", file=sys.stderr, flush=True)

    asyncio.run(main())
