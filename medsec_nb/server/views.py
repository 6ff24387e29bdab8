"""What the lab panel is shown, as plain functions: audit rows, chain status, studies per kernel.

Nothing returned carries key material or patient identifiers: audit rows name a study by the
first 16 hex digits of its container's SHA-256 (never its UIDs or a patient pseudonym), and
the studies list holds what the registry publishes (file name, counts, purpose, user, time).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..audit import checkpoint as ckpt
from ..audit.page import Page
from ..audit.paths import checkpoints_path, log_path
from ..audit.verify import verify_log
from ..container.header import inspect_study
from ..core.errors import MedsecError


def audit_row(rec: dict[str, Any]) -> dict[str, Any]:
    """The columns of the panel's audit table for one record."""
    who, study, why = rec.get("who") or {}, rec.get("study") or {}, rec.get("why") or {}
    sha = study.get("container_sha256")
    return {
        "seq": rec.get("seq"),
        "time": rec.get("time"),
        "user": who.get("os_user"),
        "action": rec.get("action"),
        "outcome": rec.get("outcome"),
        "purpose": why.get("purpose"),
        "study": sha[:16] if isinstance(sha, str) else None,
        "instances": study.get("instances"),
        "kernel_id": (rec.get("where") or {}).get("kernel_id"),
    }


def page_json(page: Page) -> dict[str, Any]:
    return {"records": [audit_row(r) for r in page.records], "next": page.next, "size": page.size}


def last_checkpoint(log: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """Size, time and signer of the newest stored checkpoint (not verified here), or None."""
    path = checkpoints_path(log_path(log))
    notes = list(ckpt.stored(path))
    if not notes:
        return None
    head, _, signatures = ckpt.parse(notes[-1][1])
    return {"size": head.size, "time": head.time, "signer": signatures[0][0] if signatures else None}


def chain_status(log: str | os.PathLike | None = None) -> dict[str, Any]:
    """The verification of the whole log and its checkpoints, with the last checkpoint. A log not
    yet written (no file or empty, no checkpoint) is reported as intact with 0 records."""
    path = log_path(log)
    if (not path.exists() or path.stat().st_size == 0) and not checkpoints_path(path).exists():
        return {
            "ok": True,
            "records": 0,
            "checkpoints": 0,
            "first_bad_line": None,
            "message": f"{path}: no audit records yet",
            "last_checkpoint": None,
        }
    report = verify_log(log)
    try:
        last = last_checkpoint(log)
    except MedsecError:
        last = None
    return {
        "ok": report.ok,
        "records": report.records,
        "checkpoints": report.checkpoints,
        "first_bad_line": report.first_bad_line,
        "message": report.message,
        "last_checkpoint": last,
    }


def kernel_studies(entries: Iterable[dict[str, Any]], kernels: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Join registry entries with the running kernels (``{kernel id: {"name", "notebook"}}``):
    one item per running kernel, its studies listed; entries of other kernels are dropped."""
    by_kernel: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        kid = entry.get("kernel_id")
        if kid in kernels:
            by_kernel.setdefault(kid, []).extend(
                {k: s.get(k) for k in ("id", "name", "instances", "purpose", "user", "opened")}
                for s in entry["studies"]
                if isinstance(s, dict)
            )
    return [
        {"kernel_id": kid, **info, "studies": sorted(by_kernel.get(kid, []), key=lambda s: str(s["opened"]))}
        for kid, info in kernels.items()
    ]


def public_header(path: Path) -> dict[str, Any]:
    """The public header of a container (what ``medsec inspect`` prints): no key, no PHI."""
    info = inspect_study(path)
    return {
        "name": path.name,
        "version": info.version,
        "instances": info.instance_count,
        "bytes": info.file_size,
        "chunk_size": info.chunk_size,
        "recipients": info.recipients,
        "passphrase": info.passphrase,
        "signer": info.signer,
        "signature_valid": info.signature_valid,
        "complete": info.complete,
    }


# ---------------------------------------------------------------- the key service's log


def service_page(records: list[dict[str, Any]], filters: Any, limit: int, before: int | None) -> dict[str, Any]:
    """A page of the key service's records (the caller's own, all for a steward), newest first;
    the cursor is a record's ``seq`` (not a byte offset, as for a local log)."""
    chosen = [r for r in reversed(records) if filters.match(r) and (before is None or r.get("seq", 0) < before)]
    page = chosen[:limit]
    more = len(chosen) > limit
    return {
        "records": [audit_row(r) for r in page],
        "next": page[-1]["seq"] if more and page else None,
        "size": len(records),
    }


def service_status(result: dict[str, Any]) -> dict[str, Any]:
    """The key service's ``verify`` reply as the panel's chain status."""
    return {
        "ok": bool(result.get("valid")),
        "records": result.get("records"),
        "checkpoints": result.get("checkpoints"),
        "first_bad_line": result.get("first_bad_line"),
        "message": f"key service: {result.get('message')}",
        "last_checkpoint": None,
    }
