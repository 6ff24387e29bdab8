"""Audited de-identified export (``medsec deid``, ``Study.export_deidentified``) and mapping read-back.

Each export asks the access policy (action ``export``) for its purpose of use and is recorded in the
audit log (action ``deid-export``, DICOM event 110106 Export) with its profile, counts and outcome;
a burned-in override is recorded as its own ``burned-in-override`` record before anything is written.
Reading a mapping back is re-identification: policy action ``reveal-tag``, audit action ``reidentify``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from Crypto.Hash import SHA256
from Crypto.Random import get_random_bytes

from ..access.gate import EVENT_EXPORT, EVENT_SECURITY, Access, new_access
from ..access.policy import Policy
from ..audit import AuditLog
from ..audit.record import is_uid
from ..container.sources import list_source_files
from ..core.errors import MedsecError, OutputError, SourceError
from ..core.reading import reading
from ..deid import DeidKeys, Profile
from ..deid.export import ExportReport, ExportSettings, deidentify_to_memory, export_instances, parse_accept
from ..deid.mapping import RecordingKeys, open_mapping, read_sealed, write_mapping
from ..deid.pixels import MaskRule, burned_in_reason, load_mask_rules
from ..keys.identity import Identity, Passphrase, as_identity

#: DICOM audit event 110104 DICOM Instances Transferred (a push to another system).
EVENT_TRANSFERRED = "110104"

if TYPE_CHECKING:
    from .study import Study


def _read(path: Path) -> pydicom.Dataset:
    try:
        with reading(str(path)):
            return pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types on garbage input
        raise SourceError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None


def _file_items(files: list[Path]) -> Iterator[tuple[str, pydicom.Dataset]]:
    for path in files:
        yield str(path), _read(path)


def _study_items(study: Study) -> Iterator[tuple[str, pydicom.Dataset]]:
    n = 0
    for series in study.series:
        for ds in series:
            n += 1
            yield f"{study.path}: instance {n}", ds


def _rules(mask_rules: str | os.PathLike[str] | Iterable[MaskRule] | None) -> tuple[MaskRule, ...]:
    if mask_rules is None:
        return ()
    if isinstance(mask_rules, (str, os.PathLike)):
        return load_mask_rules(mask_rules)
    return tuple(mask_rules)


def _keys(secret: bytes | DeidKeys | None, dry_run: bool) -> RecordingKeys:
    if isinstance(secret, DeidKeys):
        secret = secret.secret
    if secret is None:
        if not dry_run:
            raise MedsecError(
                "a de-identification secret is required (>= 16 bytes; the same secret gives the "
                "same pseudonyms, UIDs and date shifts in every export)"
            )
        secret = get_random_bytes(32)  # a dry run writes nothing; any key shows the changes
    try:
        return RecordingKeys(secret)
    except ValueError as exc:
        raise MedsecError(str(exc)) from None


def _accepts(items: Iterable[str | int]) -> tuple[frozenset[int], frozenset[tuple[int, int]]]:
    """``accept_leaks_in``: elements (any hit) and (element, original attribute) pairs."""
    try:
        parsed = [i if isinstance(i, int) else parse_accept(i) for i in items]
    except ValueError as exc:
        raise MedsecError(f"accept_leaks_in: {exc}") from None
    return (frozenset(p for p in parsed if isinstance(p, int)), frozenset(p for p in parsed if isinstance(p, tuple)))


def _profile(profile: Profile | Iterable[str]) -> Profile:
    if isinstance(profile, Profile):
        return profile
    try:
        return Profile(frozenset(profile))
    except ValueError as exc:
        raise MedsecError(str(exc)) from None


def _summary(report: ExportReport) -> dict[str, Any]:
    return {
        "profile": ["basic", *report.profile],
        "encrypted": report.encrypted,
        "dry_run": report.dry_run,
        "actions": [f"{a}={n}" for a, n in sorted(report.actions.items())],
        "burned_in": len(report.burned_in),
        "accepted_leaks": sorted({a["element"].split(" ")[0] for a in report.accepted_leaks}),
    }


def _run(
    access: Access,
    items: Iterable[tuple[str, pydicom.Dataset]],
    total: int,
    output: str | os.PathLike[str] | None,
    settings: ExportSettings,
    *,
    recipients: list[Any],
    passphrase: Passphrase,
    dry_run: bool,
    progress: bool,
    mapping: str | os.PathLike[str] | None,
    mapping_recipients: list[Any] | None,
    mapping_passphrase: Passphrase,
) -> ExportReport:
    if not dry_run:
        if output is None:
            raise MedsecError("an output (-o folder, or a .msec container with recipients) is required")
        out = Path(output)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise OutputError(f"{out}: already exists (refusing to overwrite; choose a new output)")
        if mapping is not None and Path(mapping).exists():
            raise OutputError(f"{mapping}: already exists (refusing to overwrite the mapping file)")
        if mapping is not None and not (mapping_recipients or mapping_passphrase is not None):
            raise MedsecError("the mapping is written encrypted: give its recipients (public keys) or a passphrase")
    items = _override_audited(access, items, settings) if settings.allow_burned_in else items
    report = access.audited(
        "deid-export",
        lambda: export_instances(
            items,
            total,
            output,
            settings,
            recipients=recipients,
            passphrase=passphrase,
            dry_run=dry_run,
            progress=progress,
        ),
        event=EVENT_EXPORT,
        instances=total,
        detail=_summary,
    )
    if mapping is not None and not dry_run:
        keys = settings.keys
        assert isinstance(keys, RecordingKeys)
        note = {"studies": sorted({keys.uids[u] for u in _study_uids(access) if u in keys.uids})}
        access.audited(
            "deid-mapping",
            lambda: write_mapping(mapping, keys.mapping(), mapping_recipients or (), mapping_passphrase, note=note),
            event=EVENT_EXPORT,
            detail=lambda p: {"mapping": os.path.basename(p)},
        )
    return report


def _study_uids(access: Access) -> list[str]:
    uid = access.study.get("study_uid")
    return [uid] if uid else []


def _override_audited(
    access: Access, items: Iterable[tuple[str, pydicom.Dataset]], settings: ExportSettings
) -> Iterator[tuple[str, pydicom.Dataset]]:
    """Record each burned-in override (an instance flagged and not masked) before it is exported."""
    for name, ds in items:
        reason = burned_in_reason(ds)
        if reason is not None and not any(r.matches(ds) for r in settings.mask_rules):
            access.record(
                "burned-in-override",
                event=EVENT_SECURITY,
                detail={"instance": os.path.basename(name), "reason": reason},
            )
        yield name, ds


def _plain_access(
    study_uid: str,
    purpose: str | None,
    purpose_text: str | None,
    audit_log: AuditLog | str | os.PathLike[str] | None,
    policy: Policy | str | os.PathLike[str] | None,
    push: str | None = None,
) -> Access:
    """Access for a plain DICOM source: the policy object is its Study Instance UID. A malformed
    one (not a DICOM UID: it may hold any text) is not recorded; the policy object is then its SHA-256."""
    valid = is_uid(study_uid)
    access = new_access(
        purpose=purpose,
        purpose_text=purpose_text,
        study={"study_uid": study_uid} if valid else {},
        audit_log=audit_log,
        policy=policy,
    )
    obj = None if valid else SHA256.new(study_uid.encode("utf-8", "replace")).hexdigest()
    _allow(access, push, obj)
    return access


def _allow(access: Access, push: str | None, obj: str | None = None) -> None:
    """The export's decisions: ``export``, and for a push to ``push`` also ``push`` (before anything is made)."""
    access.authorize("export", "deid-export", obj=obj)
    if push is not None:
        access.authorize("push", "push", {"destination": push}, obj=obj)


def export_deidentified(
    source: str | os.PathLike[str] | Study,
    output: str | os.PathLike[str] | None = None,
    *,
    options: Iterable[str] | Profile = (),
    secret: bytes | DeidKeys | None = None,
    purpose: str | None = None,
    purpose_text: str | None = None,
    identity: Identity | str | os.PathLike[str] | None = None,
    passphrase: Passphrase = None,
    identity_passphrase: Passphrase = None,
    recipients: Iterable[Any] = (),
    output_passphrase: Passphrase = None,
    dry_run: bool = False,
    mask_rules: str | os.PathLike[str] | Iterable[MaskRule] | None = None,
    allow_burned_in: bool = False,
    accept_leaks_in: Iterable[str | int] = (),
    mapping: str | os.PathLike[str] | None = None,
    mapping_recipients: Iterable[Any] | None = None,
    mapping_passphrase: Passphrase = None,
    progress: bool = True,
    audit_log: AuditLog | str | os.PathLike[str] | None = None,
    policy: Policy | str | os.PathLike[str] | None = None,
) -> ExportReport:
    """De-identify a study (a DICOM file or folder, a ``.msec`` container, or an open Study) with the
    PS3.15 Basic Profile plus ``options``, and write it to ``output``: a new folder of DICOM files, or,
    with ``recipients`` (public keys) or ``output_passphrase``, a new encrypted container (no plaintext
    on disk). ``secret`` (>= 16 bytes) keys pseudonyms, UIDs and date shifts. ``dry_run`` writes nothing;
    its report holds the per-element diff. ``mapping`` writes the re-identification mapping encrypted to
    ``mapping_recipients`` (or ``mapping_passphrase``). A container source is unlocked with ``identity``
    or ``passphrase``. ``accept_leaks_in`` lets leak-scanner hits through: ``"Manufacturer:InstitutionName"``
    only the InstitutionName's value inside Manufacturer (as a refusal suggests), ``"Manufacturer"`` any
    value there (keywords or tags); they are listed in the report and the audit record. Returns the
    conformance report.
    """
    settings = ExportSettings(
        _profile(options), _keys(secret, dry_run), _rules(mask_rules), allow_burned_in, *_accepts(accept_leaks_in)
    )
    run = partial(
        _run,
        output=output,
        settings=settings,
        recipients=list(recipients),
        passphrase=output_passphrase,
        dry_run=dry_run,
        progress=progress,
        mapping=mapping,
        mapping_recipients=list(mapping_recipients or ()),
        mapping_passphrase=mapping_passphrase,
    )
    with _source(
        source,
        purpose=purpose,
        purpose_text=purpose_text,
        identity=identity,
        passphrase=passphrase,
        identity_passphrase=identity_passphrase,
        audit_log=audit_log,
        policy=policy,
    ) as (access, items, total):
        return run(access, items, total)


@contextmanager
def _source(
    source: str | os.PathLike[str] | Study,
    *,
    purpose: str | None,
    purpose_text: str | None,
    identity: Identity | str | os.PathLike[str] | None,
    passphrase: Passphrase,
    identity_passphrase: Passphrase,
    audit_log: AuditLog | str | os.PathLike[str] | None,
    policy: Policy | str | os.PathLike[str] | None,
    push: str | None = None,
) -> Iterator[tuple[Access, Iterator[tuple[str, pydicom.Dataset]], int]]:
    """The export's access (policy action ``export`` allowed, and ``push`` for a push to ``push``) and the
    source's (name, dataset) pairs and count: an open Study, a ``.msec`` container (opened and closed here) or
    a DICOM file or folder."""
    if not isinstance(source, (str, os.PathLike)):
        study = source
        study.require_open()
        _allow(study.access, push)
        yield study.access, _study_items(study), study.instance_count
        return
    src = Path(source)
    if src.is_file() and src.suffix.lower() == ".msec":
        from .study import open_study  # the study layer opens containers

        with open_study(
            src,
            identity,
            passphrase,
            purpose=purpose,
            purpose_text=purpose_text,
            identity_passphrase=identity_passphrase,
            audit_log=audit_log,
            policy=policy,
        ) as study:
            _allow(study.access, push)
            yield study.access, _study_items(study), study.instance_count
        return
    files = list_source_files(src)
    first = _read(files[0])
    with reading(str(files[0])):
        uid = str(first.get("StudyInstanceUID", "") or "").strip()
    if not uid:
        raise SourceError(f"{files[0]}: not a DICOM instance (no StudyInstanceUID)")
    access = _plain_access(uid, purpose, purpose_text, audit_log, policy, push)
    yield access, _file_items(files), len(files)


def send_deidentified(
    source: str | os.PathLike[str] | Study,
    send: Callable[[list[bytes]], dict[str, Any]],
    *,
    destination: str,
    options: Iterable[str] | Profile = (),
    secret: bytes | DeidKeys | None = None,
    purpose: str | None = None,
    purpose_text: str | None = None,
    identity: Identity | str | os.PathLike[str] | None = None,
    passphrase: Passphrase = None,
    identity_passphrase: Passphrase = None,
    mask_rules: str | os.PathLike[str] | Iterable[MaskRule] | None = None,
    allow_burned_in: bool = False,
    accept_leaks_in: Iterable[str | int] = (),
    progress: bool = True,
    audit_log: AuditLog | str | os.PathLike[str] | None = None,
    policy: Policy | str | os.PathLike[str] | None = None,
) -> ExportReport:
    """De-identify a study as :func:`export_deidentified` does, in memory (no file is written), then
    call ``send`` with every instance's DICOM file bytes (e.g. to a research PACS). The burned-in check
    and the leak scan cover every instance before ``send`` is called: any hit, and nothing is sent.
    Recorded as ``deid-export`` (output ``destination``) and then ``push`` (DICOM event 110104
    Instances Transferred) with the detail ``send`` returns (what was sent where: no UIDs). The policy
    must allow ``export`` and, before anything is de-identified, ``push`` of the source study."""
    settings = ExportSettings(
        _profile(options), _keys(secret, False), _rules(mask_rules), allow_burned_in, *_accepts(accept_leaks_in)
    )
    with _source(
        source,
        purpose=purpose,
        purpose_text=purpose_text,
        identity=identity,
        passphrase=passphrase,
        identity_passphrase=identity_passphrase,
        audit_log=audit_log,
        policy=policy,
        push=destination,
    ) as (access, items, total):
        checked = _override_audited(access, items, settings) if allow_burned_in else items
        report, encoded = access.audited(
            "deid-export",
            lambda: deidentify_to_memory(checked, total, settings, destination=destination, progress=progress),
            event=EVENT_EXPORT,
            instances=total,
            detail=lambda result: _summary(result[0]),
        )
        access.audited("push", lambda: send(encoded), event=EVENT_TRANSFERRED, instances=len(encoded), detail=dict)
    return report


def read_mapping(
    path: str | os.PathLike[str],
    identity: Identity | str | os.PathLike[str] | None = None,
    passphrase: Passphrase = None,
    *,
    identity_passphrase: Passphrase = None,
    purpose: str | None = None,
    purpose_text: str | None = None,
    audit_log: AuditLog | str | os.PathLike[str] | None = None,
    policy: Policy | str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Decrypt an export's mapping for authorised re-identification: the policy must allow
    ``reveal-tag`` for ``purpose`` on the mapping (by its file id or the de-identified study UIDs),
    and the read is recorded (action ``reidentify``) before the mapping is returned."""
    sealed = read_sealed(path)
    studies = [s for s in sealed.note.get("studies", []) if isinstance(s, str)]
    access = new_access(
        purpose=purpose,
        purpose_text=purpose_text,
        study={"study_uid": studies[0]} if studies else {},
        audit_log=audit_log,
        policy=policy,
    )
    access.authorize("reveal-tag", "reidentify", {"mapping": sealed.file_id}, obj=sealed.file_id, projects=studies)

    def reveal() -> dict[str, Any]:
        key = as_identity(identity, identity_passphrase) if identity is not None else None
        access.key_id = key.key_id if key is not None else None  # the record names the key that opened it
        return open_mapping(sealed, key, passphrase)

    return access.audited(
        "reidentify",
        reveal,
        event=EVENT_SECURITY,
        detail=lambda m: {
            "mapping": sealed.file_id,
            "patients": len(m.get("patients", {})),
            "uids": len(m.get("uids", {})),
        },
    )
