"""What runs on a Dask worker: a batch of studies, each opened with its study key (unsealed with
the worker's transport key) and passed to ``fn``. The next study is opened on a second thread
once the current study's first record after its open is written (normally the bulk read's:
the pixels are decrypted and ``fn`` goes on computing, mostly in numpy without the GIL).
Opening it earlier, beside the decryption, was slower: the open's Python work and the
decryption's many short GIL-free calls compete for the GIL. Nothing of an open reaches ``fn``
before its own record is written."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..access.gate import Access, open_audited
from ..container._reader import Container
from ..core.errors import MedsecError
from ..study import Study
from .forward import ForwardingLog, new_attempt
from .transport import source_for, transport_key, unseal, worker_identity

#: One study of a batch: (its index in the cohort, its URL, {worker key id: sealed study key}).
Item = tuple[int, str, dict[str, str]]


def message(exc: BaseException) -> str:
    """The one-line error reported for a study."""
    return str(exc) if isinstance(exc, MedsecError) else f"{type(exc).__name__}: {exc}"


def run_batch(
    items: list[Item],
    sink: tuple[str, str],
    fn: Callable[[Study], Any],
    *,
    transport: tuple[str, dict[str, dict[str, Any]]],
    purpose: str,
    purpose_text: str | None,
    key_id: str | None,
    storage_options: dict[str, Any] | None,
    threads: int = 1,
) -> list[tuple[int, bool, Any]]:
    """``fn(study)`` for each item, in order, each study opened in this worker's memory
    (byte-range reads, audited through ``sink``, the audit sink's address and token) and closed
    afterwards. ``transport``: the round's public transport (``Transport.public()``). Returns
    (index, True, value) or (index, False, error message) per study, so one bad study fails
    alone. ``threads``: decrypting threads per bulk read (Dask's convention of one core per
    worker thread: 1)."""
    ident = worker_identity()
    tkey = transport_key(transport, ident)  # WorkerKeyMissingError before any open: re-granted

    def open_one(item: Item) -> tuple[Container, Access]:
        _, url, sealed = item
        log = ForwardingLog(sink[0], sink[1], key_id, new_attempt())
        return open_audited(
            url,
            op="cohort-open",
            purpose=purpose,
            purpose_text=purpose_text,
            identity=ident,
            study_key=unseal(tkey, transport, url, sealed[ident.key_id]),
            audit_log=log,
            source=source_for(url, storage_options),
        )

    out: list[tuple[int, bool, Any]] = []
    with ThreadPoolExecutor(1, thread_name_prefix="medsec-cohort-open") as pool:
        ahead: Future | None = None  # the open of items[current + 1], once started
        current = -1
        lock = threading.Lock()

        def open_next(k: int) -> None:  # the worker context goes with it
            nonlocal ahead
            with lock:  # only the study after the one running now
                if ahead is None and k == current + 1 < len(items):
                    ahead = pool.submit(contextvars.copy_context().run, open_one, items[k])

        try:
            for n, item in enumerate(items):
                try:
                    with lock:
                        cur, ahead, current = ahead, None, n
                    box, access = cur.result() if cur is not None else open_one(item)
                    access.log.on_written = lambda k=n + 1: open_next(k)
                    with Study(box, access, threads=threads) as study:
                        out.append((item[0], True, fn(study)))
                except Exception as exc:
                    out.append((item[0], False, message(exc)))
        finally:
            with lock:
                current = len(items)  # nothing more is opened ahead
            if ahead is not None and not ahead.cancel() and ahead.exception() is None:
                ahead.result()[0].close()  # opened ahead, never used (fn raised BaseException)
    return out
