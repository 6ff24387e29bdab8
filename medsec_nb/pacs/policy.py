"""Who may pull, push and receive: the access policy's decisions for the PACS commands (docs/PACS.md).

The subject is the verified OS user (or, through the key service, the user the kernel names to it).
``pull`` is asked about the study found, before any instance is fetched; ``pull-by-patient`` before a
patient-level query reaches the PACS, with the object ``*`` (the query may reach any study the PACS
holds); ``receive`` once when a receiver starts, also on ``*`` (the sender chooses the studies). ``push``
is asked by ``study.export.send_deidentified``. A denial is recorded (110113, ``denied``) and raised as
:class:`PolicyDeniedError`; when a key service is configured it decides and its log records.
"""

from __future__ import annotations

import os
from typing import Any

from ..access.gate import Access, new_access, resolve_purpose
from ..access.hub_service import connect
from ..access.policy import Policy, local_user
from ..access.service import ServiceLog, ServicePolicy, resolve_keyservice
from ..audit import AuditLog
from .peer import Found, Peer, StudyQuery

#: The object of a request that is not about one known study.
ANY_STUDY = "*"

PolicyArg = Policy | str | os.PathLike[str] | None


def pacs_access(
    purpose: str | None,
    *,
    audit_log: AuditLog | str | os.PathLike[str] | None = None,
    policy: PolicyArg = None,
    keyservice: str | os.PathLike[str] | None = None,
) -> Access:
    """What decides and records for the local user: the key service (``keyservice``, else
    ``$MEDSEC_KEYSERVICE``) when one is configured, else ``policy`` and ``audit_log`` (their defaults)."""
    service = resolve_keyservice(keyservice)
    if service is None:
        return new_access(purpose=purpose, audit_log=audit_log, policy=policy)
    ks = connect(service)
    return Access(ServiceLog(ks), resolve_purpose(purpose), None, None, {}, ServicePolicy(ks), local_user())


def find_allowed(access: Access, peer: Peer, query: StudyQuery, detail: dict[str, Any]) -> Found:
    """The study ``query`` finds on ``peer``, once the policy allows pulling it: a patient-level query
    needs ``pull-by-patient`` before it is sent, and every pull needs ``pull`` on the study found."""
    if query.patient_id is not None:
        access.authorize("pull-by-patient", "pull-by-patient", {**detail, "query": "patient-id"}, obj=ANY_STUDY)
    found = peer.find(query)
    access.study["study_uid"] = found.study_uid
    access.authorize("pull", "pull", detail, obj=found.study_uid)
    return found


def allow_receive(access: Access, ae_title: str) -> AuditLog:
    """Decide once, before listening, whether the local user may run a receiver; the log it records in."""
    access.authorize("receive", "receive", {"ae_title": ae_title}, obj=ANY_STUDY)
    return access.log
