"""The key service over HTTP inside JupyterHub (docs/KEYSERVICE.md, "Over HTTP in JupyterHub"):
``POST <url>/v1/<op>`` with the caller's ``$JUPYTERHUB_API_TOKEN``; the service asks the Hub whose
token it is. :func:`connect` picks the transport from the address."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Any

from ..core.errors import FormatError, MedsecError
from .service import MAX_LINE, KeyService, _raise, decode_message, encode_message

TIMEOUT = 60.0


def connect(address: str | os.PathLike[str]) -> KeyService:
    """A :class:`HubKeyService` for an ``http://`` or ``https://`` address, else a socket
    :class:`KeyService`."""
    text = str(address)
    if text.startswith(("http://", "https://")):
        return HubKeyService(text)
    return KeyService(text)


class HubKeyService(KeyService):
    """The key service as a JupyterHub service at ``url``: each request is one HTTP POST carrying
    the caller's ``$JUPYTERHUB_API_TOKEN`` (never shown in a message)."""

    def __init__(self, url: str, token: str | None = None):
        super().__init__(url.rstrip("/"))
        self._token = token

    def __repr__(self) -> str:
        return f"HubKeyService({self.path!r})"

    def _connect(self) -> Any:  # no connection to hold: one request per call
        return None

    def close(self) -> None:
        return None

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """POST one request; the reply's fields, or the MedsecError the service named."""
        token = self._token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise MedsecError(f"key service {self.path}: no $JUPYTERHUB_API_TOKEN to authenticate with")
        body = encode_message(fields)
        request = urllib.request.Request(
            f"{self.path}/v1/{op}",
            data=body,
            method="POST",
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                data = response.read(MAX_LINE + 1)
        except urllib.error.HTTPError as exc:
            data = exc.read(MAX_LINE + 1)
            exc.close()
            status = exc.code
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise MedsecError(
                f"key service {self.path}: cannot connect ({reason}); is the Hub service running?"
            ) from None
        else:
            status = 200
        try:
            reply = decode_message(data, f"key service {self.path}")
        except FormatError:
            raise MedsecError(f"key service {self.path}: HTTP {status} without a key service reply") from None
        if reply.get("ok") is not True:
            _raise(reply)
        return reply
