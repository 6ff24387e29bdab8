"""The save guard: keyed fingerprints of open studies' identifying values, which kernels publish
(:mod:`.fingerprints`), and the Jupyter server's pre-save hook that keeps those values out of
saved notebooks (:mod:`.hook`).

Importing this package subscribes the publisher to the study layer's open and close events (it
publishes only in kernels, or with ``MEDSEC_SAVE_GUARD_PUBLISH=1``); as a Jupyter server
extension (enabled by the package's ``jupyter_server_config.d/medsec_nb.json``) it registers the
pre-save hook.
"""

from __future__ import annotations

from typing import Any

from ..study import events
from . import fingerprints

events.subscribe(opened=fingerprints.publish, closed=fingerprints.withdraw)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "medsec_nb.saveguard"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .hook import register

    guard = register(serverapp)
    serverapp.log.info("medsec-nb: save guard in %s mode for notebooks saved through this server", guard.mode)
