"""What runs on a Dask worker for one study: open it with the re-wrapped key, call ``fn``."""

from __future__ import annotations

from typing import Any, Callable

from ..access import open_audited
from ..study import Study
from .forward import ForwardingLog, new_attempt
from .keys import WorkerKeyMissingError, source_for, worker_identity


def run_study(url: str, stanzas: dict[str, dict[str, Any]], sink: tuple[str, str], fn: Callable[[Study], Any], *,
              purpose: str, purpose_text: str | None, key_id: str | None,
              storage_options: dict[str, Any] | None) -> Any:
    """Open ``url`` in this worker's memory (byte-range reads, audited through ``sink``, the
    audit sink's address and token) and return ``fn(study)``; the study is closed afterwards."""
    ident = worker_identity()
    stanza = stanzas.get(ident.key_id)
    if stanza is None:
        raise WorkerKeyMissingError(f"{url}: study key not wrapped to this worker ({ident.key_id})")
    log = ForwardingLog(sink[0], sink[1], key_id, new_attempt())
    box, access = open_audited(url, op="cohort-open", purpose=purpose, purpose_text=purpose_text, identity=ident,
                               stanzas=[stanza], audit_log=log, source=source_for(url, storage_options))
    with Study(box, access) as study:
        return fn(study)
