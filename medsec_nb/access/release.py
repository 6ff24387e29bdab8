"""Release of a study key by the holder of the site keys (the key service, docs/KEYSERVICE.md):
decide with a verified subject, record, and only then release.

The subject comes from the caller (the service reads it from the kernel's peer credentials);
the client's account of where it runs is kept as a claim, ``where.client``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..audit import AuditLog, context
from ..audit.record import is_uid
from ..container._reader import header_from_bytes, unlock_parts
from ..core.errors import MedsecError, PolicyDeniedError
from ..keys.transit import SiteKey
from .gate import EVENT_ACCESS, EVENT_EXPORT, EVENT_SECURITY, Access, _error, header_id, resolve_purpose
from .policy import Policy

#: The record (``op``) and event of each action a key can be released for.
ACTIONS = {
    "decrypt": ("open", EVENT_ACCESS),
    "export": ("export-open", EVENT_EXPORT),
    "add-recipient": ("add-recipient-open", EVENT_SECURITY),
}
_CLAIMS = ("notebook", "kernel_id", "cell")


class AttributedLog(AuditLog):
    """A log whose records name ``who`` and ``where`` as given (the verified caller), not the
    writing process."""

    def __init__(self, log: AuditLog, who: Mapping[str, Any], where: Mapping[str, Any]):  # no super().__init__
        self.log, self.who, self.where = log, dict(who), dict(where)
        self.path, self.checkpoints_path = log.path, log.checkpoints_path

    def append(self, **fields: Any) -> dict[str, Any]:
        return self.log.append(**fields, who=self.who, where=self.where)


def claims(where: Any) -> dict[str, Any]:
    """What a client says about where it runs (notebook, kernel, cell), kept short and typed."""
    if not isinstance(where, dict):
        return {}
    out: dict[str, Any] = {}
    for key in _CLAIMS:
        value = where.get(key)
        if isinstance(value, str):
            out[key] = value[:256]
        elif isinstance(value, int) and not isinstance(value, bool):
            out[key] = value
    return out


def caller_log(
    log: AuditLog, subject: str, pid: int | None, client_where: Any, *, hub_user: str | None = None
) -> AttributedLog:
    """``log`` writing as ``subject`` (verified) from process ``pid`` (None when the service cannot
    know it), with the client's claims; ``hub_user``: the Hub's name for a caller it vouched for."""
    where = {
        **context.where(),
        "pid": pid,
        "notebook": None,
        "kernel_id": None,
        "cell": None,
        "client": claims(client_where),
    }
    return AttributedLog(log, {"os_user": subject, "hub_user": hub_user}, where)


@dataclass(frozen=True)
class Release:
    study_key: bytes
    key_id: str
    record: dict[str, Any]

    def reply(self) -> dict[str, Any]:
        return {
            "study_key": base64.b64encode(self.study_key).decode("ascii"),
            "key_id": self.key_id,
            "record": {"seq": self.record["seq"], "hash": self.record["hash"]},
        }


def release_study_key(
    raw_header: bytes,
    index_ct: bytes,
    *,
    name: str,
    identities: Sequence[SiteKey],
    log: AttributedLog,
    policy: Policy,
    subject: str,
    purpose: str | None,
    purpose_text: str | None = None,
    action: str = "decrypt",
) -> Release:
    """The study key of the container whose header and encrypted index are given, for
    ``subject`` doing ``action`` for ``purpose``: the policy is asked before any key is
    unwrapped and again with the Study Instance UID, the record is written, and only then is
    the key returned. Denials and failures are recorded too. ``name``: the container's name in
    messages."""
    if action not in ACTIONS:
        raise MedsecError(f"{name}: action {action!r} is not one a key is released for ({', '.join(ACTIONS)})")
    if not purpose:  # the caller's, never this process's $MEDSEC_PURPOSE
        raise MedsecError(f"{name}: a purpose of use is required")
    op, event = ACTIONS[action]
    access = Access(log, resolve_purpose(purpose), purpose_text, None, {}, policy, subject)
    try:
        header = header_from_bytes(raw_header, name)
        access.study["container_sha256"] = header_id(header)
        access.authorize(action, op)
        study_key, key_id, uid, count = unlock_parts(header, index_ct, identities, name)
        access.key_id = key_id
        if uid is not None and is_uid(uid):
            access.study["study_uid"] = uid
        access.study["instances"] = count
        access.authorize(action, op)
    except PolicyDeniedError:
        raise  # recorded by authorize()
    except Exception as exc:
        access.record(op, "failure", event=event, detail=_error(exc))
        raise
    record = access.record(op, event=event)  # no record, no key: AuditUnavailableError leaves here
    return Release(study_key, key_id, record)
