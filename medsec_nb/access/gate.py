"""Authorised, audited access: every way to decrypt a container goes through here.

Order of an attempt: resolve the purpose of use, read the public header, ask the access
policy (before any key is unwrapped), unlock, ask the policy again with the Study Instance
UID, and write the audit record. A record that cannot be written stops the operation: the
caller gets AuditUnavailableError and no plaintext. Failures and denials are recorded too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from Crypto.Hash import SHA256

from ..audit import AuditLog
from ..audit.record import StudyFields, is_uid
from ..container._export import export_container
from ..container._reader import Container, open_container, read_unlock_parts
from ..container.format import BODY_LEN, PREFIX_LEN, Header
from ..container.header import read_header
from ..container.writer import Rewrapped, rewrap, write_container
from ..core.errors import MedsecError, PolicyDeniedError
from ..keys.identity import Identity, Passphrase, Recipient
from .hub_service import connect
from .policy import DEFAULT_POLICY, Decider, Policy, local_user
from .service import ServiceLog, ServicePolicy, resolve_keyservice

EVENT_ACCESS, EVENT_EXPORT, EVENT_SECURITY = "110103", "110106", "110113"
_PURPOSE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
T = TypeVar("T")


def resolve_purpose(purpose: str | None) -> str:
    """The purpose of use: the argument, else ``$MEDSEC_PURPOSE``; required."""
    purpose = purpose or os.environ.get("MEDSEC_PURPOSE")
    if not purpose:
        raise MedsecError(
            "a purpose of use is required: pass purpose='HRESCH' (research), 'TREAT', 'EDU', ... or set MEDSEC_PURPOSE"
        )
    if not _PURPOSE.match(purpose):
        raise MedsecError(f"purpose {purpose!r}: use a short code such as TREAT, HRESCH or EDU")
    return purpose.upper()


def header_id(header: Header) -> str:
    """SHA-256 of the container's magic, version and fixed header body: names the container,
    commits to its study key and (through the index hash) its content."""
    return SHA256.new(header.raw[: PREFIX_LEN + BODY_LEN]).hexdigest()


def container_id(path: str | os.PathLike[str]) -> str:
    """:func:`header_id` of the container at ``path`` (reads the public header only)."""
    return header_id(read_header(path)[0])


@dataclass
class Access:
    """One authorised opening: asks the policy about, and records, what is done with it."""

    log: AuditLog
    purpose: str
    purpose_text: str | None
    key_id: str | None
    study: StudyFields
    policy: Decider
    subject: str

    def authorize(
        self,
        action: str,
        op: str,
        detail: dict[str, Any] | None = None,
        *,
        obj: str | None = None,
        projects: Iterable[str] = (),
    ) -> None:
        """Ask the policy for ``action`` on ``obj`` (default: this container, else its Study
        Instance UID), also known by ``projects`` and the Study Instance UID; a denial is
        recorded (as ``op``) and raised."""
        uid = self.study.get("study_uid")
        target = obj or self.study.get("container_sha256") or uid or ""  # none: check() refuses the request
        decision = self.policy.check(
            self.subject, action, target, self.purpose, projects=[*projects, *([uid] if uid else [])]
        )
        if not decision.allowed:
            self.record(
                op,
                "denied",
                event=EVENT_SECURITY,
                detail={**(detail or {}), "reason": decision.reason, "rule": decision.rule},
            )
            raise PolicyDeniedError(decision)

    def record(
        self,
        action: str,
        outcome: str = "success",
        *,
        event: str = EVENT_ACCESS,
        detail: dict[str, Any] | None = None,
        instances: int | None = None,
    ) -> dict[str, Any]:
        study = self.study.copy()
        if instances is not None:
            study["instances"] = instances
        return self.log.append(
            action=action,
            outcome=outcome,
            event=event,
            purpose=self.purpose,
            purpose_text=self.purpose_text,
            key_id=self.key_id,
            study=study,
            detail=detail,
        )

    def audited(
        self,
        action: str,
        fn: Callable[[], T],
        *,
        event: str = EVENT_ACCESS,
        instances: int | None = None,
        detail: Callable[[T], dict[str, Any]] | None = None,
    ) -> T:
        """Run ``fn`` and record its outcome, whatever it raises; its result is returned only
        once recorded."""
        try:
            result = fn()
        except BaseException as exc:
            self.record(action, "failure", event=event, instances=instances, detail=_error(exc))
            raise
        self.record(action, event=event, instances=instances, detail=detail(result) if detail else None)
        return result


def _error(exc: BaseException) -> dict[str, Any]:
    """A failure's ``detail``: the exception type and, for medsec-nb's own errors (whose texts
    carry no attribute values), the message; another library's text may quote anything."""
    if isinstance(exc, MedsecError):
        return {"error": type(exc).__name__, "reason": str(exc)[:500]}
    return {"error": type(exc).__name__, "reason": "unexpected error (its text is not recorded)"}


def as_log(audit_log: AuditLog | str | os.PathLike[str] | None) -> AuditLog:
    return audit_log if isinstance(audit_log, AuditLog) else AuditLog(audit_log)


#: (resolved path, size, modification time, the .conf's modification time or None, local user)
_PolicyKey = tuple[str, int, int, int | None, str]
_POLICIES: dict[_PolicyKey, Policy] = {}


def as_policy(policy: Policy | str | os.PathLike[str] | None) -> Policy:
    """The policy object, loaded once per file version (path, size, modification times, user)."""
    if isinstance(policy, Policy):
        return policy
    path = Path(policy or os.environ.get("MEDSEC_POLICY") or DEFAULT_POLICY).expanduser()
    try:
        st, conf = path.stat(), path.with_suffix(".conf")
        key: _PolicyKey = (
            str(path.resolve()),
            st.st_size,
            st.st_mtime_ns,
            conf.stat().st_mtime_ns if conf.is_file() else None,
            local_user(),
        )
    except OSError:
        return Policy.load(path)  # raises the policy layer's clear error
    if key not in _POLICIES:
        _POLICIES[key] = Policy.load(path)
    return _POLICIES[key]


def new_access(
    *,
    purpose: str | None,
    purpose_text: str | None = None,
    key_id: str | None = None,
    study: StudyFields | None = None,
    audit_log: AuditLog | str | os.PathLike[str] | None = None,
    policy: Policy | str | os.PathLike[str] | None = None,
) -> Access:
    """An :class:`Access` for the local user: purpose resolved, audit log and policy loaded."""
    return Access(
        as_log(audit_log),
        resolve_purpose(purpose),
        purpose_text,
        key_id,
        study.copy() if study else {},
        as_policy(policy),
        local_user(),
    )


def _key_id_of(identity: object) -> str | None:
    return identity.key_id if isinstance(identity, Identity) else None


def open_audited(
    path: str | os.PathLike[str],
    *,
    op: str,
    action: str = "decrypt",
    event: str = EVENT_ACCESS,
    purpose: str | None = None,
    purpose_text: str | None = None,
    identity: Identity | str | os.PathLike[str] | None = None,
    passphrase: Passphrase = None,
    require_signer: Recipient | str | os.PathLike[str] | None = None,
    identity_passphrase: Passphrase = None,
    audit_log: AuditLog | str | os.PathLike[str] | None = None,
    policy: Policy | str | os.PathLike[str] | None = None,
    keep_study_key: bool = False,
    source: Any = None,
    study_key: bytes | None = None,
    keyservice: str | os.PathLike[str] | None = None,
) -> tuple[Container, Access]:
    """Unlock ``path`` for ``action`` (a policy action) on behalf of the local user.

    ``op`` names the operation in the audit log (open, verify, export, add-recipient).
    ``source`` and ``study_key`` are passed to :func:`open_container` (cohort workers).
    ``keyservice`` (else ``$MEDSEC_KEYSERVICE``), when no identity or passphrase is given: the
    key service decides, records and releases the study key (docs/KEYSERVICE.md), and every
    later record of this opening goes to its log.
    """
    if identity is None and passphrase is None and study_key is None:
        service = resolve_keyservice(keyservice)
        if service is not None:
            return _open_through_service(
                path,
                service,
                op=op,
                action=action,
                event=event,
                purpose=purpose,
                purpose_text=purpose_text,
                require_signer=require_signer,
                keep_study_key=keep_study_key,
            )
    access = new_access(
        purpose=purpose, purpose_text=purpose_text, key_id=_key_id_of(identity), audit_log=audit_log, policy=policy
    )

    def check_policy(header: Header) -> None:  # runs before any key is unwrapped
        access.study["container_sha256"] = header_id(header)
        access.authorize(action, op)

    try:
        box = open_container(
            path,
            identity,
            passphrase,
            require_signer,
            identity_passphrase=identity_passphrase,
            _keep_study_key=keep_study_key,
            before_unlock=check_policy,
            source=source,
            study_key=study_key,
        )
    except PolicyDeniedError:
        raise  # recorded as a denial by authorize()
    except BaseException as exc:
        access.record(op, "failure", event=event, detail=_error(exc))
        raise
    try:
        access.key_id = box.key_id
        if box.entries and is_uid(box.entries[0]["study"]):  # a malformed one is the source's: not recorded
            access.study["study_uid"] = box.entries[0]["study"]
        access.study["instances"] = len(box.entries)
        access.authorize(action, op)  # again, now that the Study Instance UID is known
        access.record(op, event=event, detail={"signer": box.signer} if box.signer else None)
    except BaseException:
        box.close()
        raise
    return box, access


# ---------------------------------------------------------------- audited whole-container operations


@dataclass(frozen=True)
class VerifyReport:
    path: str
    instance_count: int
    bytes_authenticated: int
    signer: str | None
    key_id: str


def verify_study(
    path: str | os.PathLike[str],
    identity: Identity | str | os.PathLike[str] | None = None,
    passphrase: Passphrase = None,
    *,
    purpose: str | None = None,
    purpose_text: str | None = None,
    require_signer: Recipient | str | os.PathLike[str] | None = None,
    identity_passphrase: Passphrase = None,
    progress: bool = False,
    audit_log: AuditLog | str | None = None,
    policy: Policy | str | None = None,
    keyservice: str | os.PathLike[str] | None = None,
) -> VerifyReport:
    """Authenticate every byte of a container (header, index, every chunk); write no plaintext."""
    box, access = open_audited(
        path,
        op="verify-open",
        purpose=purpose,
        purpose_text=purpose_text,
        identity=identity,
        passphrase=passphrase,
        require_signer=require_signer,
        identity_passphrase=identity_passphrase,
        audit_log=audit_log,
        policy=policy,
        keyservice=keyservice,
    )
    with box:
        n = access.audited("verify", lambda: box.verify(progress=progress), instances=len(box.entries))
        return VerifyReport(str(path), len(box.entries), n, box.signer, box.key_id)


def decrypt_study(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    identity: Identity | str | os.PathLike[str] | None = None,
    passphrase: Passphrase = None,
    *,
    purpose: str | None = None,
    purpose_text: str | None = None,
    require_signer: Recipient | str | os.PathLike[str] | None = None,
    identity_passphrase: Passphrase = None,
    progress: bool = True,
    audit_log: AuditLog | str | None = None,
    policy: Policy | str | None = None,
    keyservice: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Export the original DICOM files to ``out_dir`` (explicit plaintext export, policy action
    ``export``). Every byte is authenticated before the first file is written; ``out_dir``
    appears only when complete."""
    box, access = open_audited(
        path,
        op="export-open",
        action="export",
        event=EVENT_EXPORT,
        purpose=purpose,
        purpose_text=purpose_text,
        identity=identity,
        passphrase=passphrase,
        require_signer=require_signer,
        identity_passphrase=identity_passphrase,
        audit_log=audit_log,
        policy=policy,
        keyservice=keyservice,
    )
    with box:
        return access.audited(
            "export",
            lambda: export_container(box, Path(out_dir), progress),
            event=EVENT_EXPORT,
            instances=len(box.entries),
        )


def add_recipients(
    path: str | os.PathLike[str],
    recipients: Iterable[Recipient | Identity | str | os.PathLike[str]],
    identity: Identity | str | None = None,
    passphrase: Passphrase = None,
    *,
    purpose: str | None = None,
    purpose_text: str | None = None,
    identity_passphrase: Passphrase = None,
    audit_log: AuditLog | str | None = None,
    policy: Policy | str | None = None,
    keyservice: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Wrap the study key of ``path`` for more recipients (policy action ``add-recipient``);
    the payload bytes are copied unchanged. Returns the key ids added (:func:`rewrap_study`)."""
    return rewrap_study(
        path,
        recipients,
        identity,
        passphrase,
        purpose=purpose,
        purpose_text=purpose_text,
        identity_passphrase=identity_passphrase,
        audit_log=audit_log,
        policy=policy,
        keyservice=keyservice,
    ).added


def rewrap_study(
    path: str | os.PathLike[str],
    recipients: Iterable[Recipient | Identity | str | os.PathLike[str]],
    identity: Identity | str | None = None,
    passphrase: Passphrase = None,
    *,
    purpose: str | None = None,
    purpose_text: str | None = None,
    identity_passphrase: Passphrase = None,
    audit_log: AuditLog | str | None = None,
    policy: Policy | str | None = None,
    keyservice: str | os.PathLike[str] | None = None,
) -> Rewrapped:
    """Wrap the study key of ``path`` for more recipients and drop the stanzas a Transit recipient
    retires (versions OpenBao no longer decrypts); policy action ``add-recipient``, recorded with
    the key ids added and dropped. The payload bytes are copied unchanged."""
    box, access = open_audited(
        path,
        op="add-recipient-open",
        action="add-recipient",
        event=EVENT_SECURITY,
        purpose=purpose,
        purpose_text=purpose_text,
        identity=identity,
        passphrase=passphrase,
        identity_passphrase=identity_passphrase,
        audit_log=audit_log,
        policy=policy,
        keyservice=keyservice,
        keep_study_key=True,
    )
    with box:
        return access.audited(
            "add-recipient",
            lambda: rewrap(box, recipients),
            event=EVENT_SECURITY,
            detail=lambda done: {"added": done.added, "dropped": done.dropped},
        )


def rotate_study(
    path: str | os.PathLike[str],
    recipients: Iterable[Recipient | Identity | str | os.PathLike[str]],
    output: str | os.PathLike[str] | None = None,
    identity: Identity | str | None = None,
    passphrase: Passphrase = None,
    *,
    purpose: str | None = None,
    purpose_text: str | None = None,
    identity_passphrase: Passphrase = None,
    audit_log: AuditLog | str | None = None,
    policy: Policy | str | None = None,
    keyservice: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> Path:
    """Re-encrypt ``path`` under a fresh study key for exactly ``recipients`` (true revocation:
    a key released before no longer opens it), instance by instance in memory, to ``output``
    (default: ``path`` itself, replaced atomically). Policy action ``add-recipient``; the
    result is unsigned (the producer's signature covered the old header). Every instance's
    bytes are unchanged."""
    recips = list(recipients)
    if not recips:
        raise MedsecError(f"{path}: rotating needs at least one recipient for the new study key")
    box, access = open_audited(
        path,
        op="rotate-open",
        action="add-recipient",
        event=EVENT_SECURITY,
        purpose=purpose,
        purpose_text=purpose_text,
        identity=identity,
        passphrase=passphrase,
        identity_passphrase=identity_passphrase,
        audit_log=audit_log,
        policy=policy,
        keyservice=keyservice,
    )
    dest = Path(output if output is not None else path)

    with box:
        return access.audited(
            "rotate",
            lambda: write_container(
                dest,
                (box.source_instance(i) for i in range(len(box.entries))),
                len(box.entries),
                recips,
                chunk_size=box.header.body.chunk_size,
                progress=progress,
            ),
            event=EVENT_SECURITY,
            detail=lambda _: {"recipients": len(recips)},
        )


def _open_through_service(
    path: str | os.PathLike[str],
    service_path: str,
    *,
    op: str,
    action: str,
    event: str,
    purpose: str | None,
    purpose_text: str | None,
    require_signer: Recipient | str | os.PathLike[str] | None,
    keep_study_key: bool,
) -> tuple[Container, Access]:
    """:func:`open_audited` in key-service mode: no key file here, and no local record."""
    purpose = resolve_purpose(purpose)
    service = connect(service_path)
    try:
        raw_header, index_ct = read_unlock_parts(path)
        study_key, key_id = service.unlock(
            path, raw_header, index_ct, purpose=purpose, purpose_text=purpose_text, action=action
        )
    except BaseException:
        service.close()
        raise
    access = Access(ServiceLog(service), purpose, purpose_text, key_id, {}, ServicePolicy(service), local_user())
    try:
        box = open_container(
            path,
            require_signer=require_signer,
            _keep_study_key=keep_study_key,
            study_key=study_key,
            study_key_id=key_id,
        )
    except BaseException as exc:
        access.record(op, "failure", event=event, detail=_error(exc))
        service.close()
        raise
    access.study["container_sha256"] = header_id(box.header)
    if box.entries and is_uid(box.entries[0]["study"]):
        access.study["study_uid"] = box.entries[0]["study"]
    access.study["instances"] = len(box.entries)
    return box, access
